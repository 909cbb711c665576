"""
The store's prebuilt SQL equals what the ORM would do: same rows, same converted values.

:class:`SqlEqualsOrm` is a mixin: it runs here for the test settings' user
model, and for every shape of user model through
:class:`tests.usermodels.scenarios.Scenarios` (``tests/test_user_models.py``),
on SQLite or PostgreSQL as ``SESAME_TEST_DB`` says.

"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import (
    IntegrityError,
    connection,
    connections,
    router,
    transaction,
)
from django.test import TestCase, TransactionTestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sesame_db import sql, store
from sesame_db.exceptions import DatabaseUnavailable, InvalidToken, Reason
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token

from .mixins import installed_functions, reinstall_functions, without_functions

if TYPE_CHECKING:
    from django.test import TestCase as _TestCase
else:
    _TestCase = object

HOUR = datetime.timedelta(hours=1)

# Every variant of consume()'s statement: audit, password, email,
# asynchronous, guest, first.
ALL_VARIANTS = list(itertools.product([False, True], repeat=6))


def statement_of(query: str, db: str = "default") -> str:
    """Return the statement that ``query`` runs: itself, or the statement of the function it calls."""
    # A query as Django's cursor runs it, or as it logs it, with the values.
    match = re.match(
        r"SELECT (?:\* FROM )?(sesame_db_(?:use|fetch)_[0-9a-f]+)\(", query
    )
    if match is None:
        return query
    select = sql._select(db)
    if select.function is not None and select.function.name == match[1]:
        assert select.sql is not None
        return select.sql
    for variant in ALL_VARIANTS:
        prebuilt = sql._consume_statements(db, *variant)
        if prebuilt.function is not None and prebuilt.function.name == match[1]:
            return prebuilt.statements[0]
    raise AssertionError(f"No statement of sesame_db.sql runs in {query}")


class SqlEqualsOrm(_TestCase):
    """
    :func:`sesame_db.sql.fetch` and :func:`sesame_db.sql.consume` against the ORM.

    On PostgreSQL, the uses run in the functions that ``migrate`` installs,
    installed here for every variant that the tests run, unless
    ``functions`` is false: then they're dropped, and the statements run as
    they are.

    """

    functions = True

    def setUp(self) -> None:
        super().setUp()
        db = router.db_for_write(IssuedToken)
        if connections[db].vendor != "postgresql":
            return
        if self.functions:
            installed_functions(self, db, ALL_VARIANTS)
        else:
            without_functions(self, db)

    def create_user(self, name: str, **extra: Any) -> Any:
        raise NotImplementedError

    def assertSameValues(self, obj: Any, expected: Any) -> None:
        # Every column, as the ORM converts it: value and type.
        for field in type(expected)._meta.concrete_fields:
            with self.subTest(field=field.name):
                self.assertEqual(
                    getattr(obj, field.attname), getattr(expected, field.attname)
                )
                self.assertIs(
                    type(getattr(obj, field.attname)),
                    type(getattr(expected, field.attname)),
                )

    def sql_tokens(self, now: datetime.datetime) -> dict[str, IssuedToken]:
        """Tokens in every state of the status rule, and at its boundaries."""
        user = self.create_user("sql-alice")
        logged_in = self.create_user("sql-bob")
        logged_in.last_login = now - HOUR
        logged_in.save()
        cases: dict[str, tuple[Any, dict[str, Any]]] = {
            "active": (user, {}),
            "other user": (logged_in, {}),
            "limited": (user, {"max_uses": 2, "use_count": 1}),
            "used up": (user, {"max_uses": 2, "use_count": 2}),
            "revoked": (user, {"revoked_at": now - HOUR}),
            "expired": (user, {"expires_at": now - HOUR}),
            "expires now": (user, {"expires_at": now}),
            "expires later": (user, {"expires_at": now + HOUR}),
            "revoked and used up": (
                user,
                {"revoked_at": now, "max_uses": 1, "use_count": 1},
            ),
        }
        records = {}
        for name, (owner, values) in cases.items():
            _, record = store.issue(owner, "scope", label=name, max_age=HOUR * 2)
            IssuedToken._default_manager.filter(pk=record.pk).update(
                expires_at=values.pop("expires_at", record.expires_at), **values
            )
            records[name] = record
        return records

    def test_select_equals_orm(self) -> None:
        db = router.db_for_write(IssuedToken)
        records = self.sql_tokens(timezone.now())
        for name, record in records.items():
            with self.subTest(name):
                fetched = sql.fetch(db, record.pk)
                expected = (
                    IssuedToken._default_manager.using(db)
                    .select_related("user")
                    .get(pk=record.pk)
                )
                assert fetched is not None
                self.assertSameValues(fetched, expected)
                self.assertSameValues(fetched.user, expected.user)
                self.assertIs(type(fetched.user), get_user_model())
        unknown = max(record.pk for record in records.values()) + 1000
        self.assertFalse(
            IssuedToken._default_manager.using(db).filter(pk=unknown).exists()
        )
        self.assertIsNone(sql.fetch(db, unknown))

    def test_select_hides_users_like_the_default_manager(self) -> None:
        db = router.db_for_write(IssuedToken)
        record = self.sql_tokens(timezone.now())["active"]
        User = get_user_model()
        delete = getattr(self, "delete", None)
        if delete is not None:
            delete(record.user, timezone.now())
        assert record.user_id is not None
        visible = User._default_manager.filter(pk=record.user_id).exists()
        self.assertEqual(visible, delete is None)
        if visible:
            self.assertIsNotNone(sql.fetch(db, record.pk))
        else:
            with self.assertRaises(InvalidToken) as caught:
                sql.fetch(db, record.pk)
            self.assertEqual(caught.exception.reason, Reason.UNKNOWN_USER)

    def orm_would_update(
        self, record: IssuedToken, now: datetime.datetime, password: bool, email: bool
    ) -> bool:
        # The ORM's version of the UPDATE's conditions: the status rule at
        # now, and the user's row still as it was read (None matches NULL).
        guarded = sql._guarded_fields(get_user_model(), password, email)
        return bool(
            IssuedToken._default_manager.filter(pk=record.pk)
            .filter(IssuedToken.status_condition(IssuedToken.Status.ACTIVE, now))
            .filter(
                **{
                    f"user__{field.name}": getattr(record.user, field.attname)
                    for field in guarded
                }
            )
            .exists()
        )

    def check_update(
        self,
        record: IssuedToken,
        now: datetime.datetime,
        *,
        password: bool = True,
        email: bool = True,
        change: dict[str, Any] | None = None,
    ) -> bool:
        db = router.db_for_write(IssuedToken)
        read = sql.fetch(db, record.pk)
        assert read is not None
        if change:
            # The user's row changes between the SELECT and the UPDATE.
            assert record.user_id is not None
            get_user_model()._base_manager.filter(pk=record.user_id).update(**change)
        before = IssuedToken._default_manager.get(pk=record.pk)
        expected = self.orm_would_update(read, now, password, email)
        used = sql.consume(
            read, now, db, password=password, email=email, scope="scope", info=None
        )
        self.assertEqual(used, expected)
        after = IssuedToken._default_manager.get(pk=record.pk)
        self.assertEqual(after.use_count, before.use_count + used)
        if used:
            self.assertEqual((after.last_used_at, after.modified), (now, now))
        else:
            self.assertSameValues(after, before)
        return used

    def test_update_equals_orm(self) -> None:
        now = timezone.now()
        records = self.sql_tokens(now)
        used = {}
        for name, record in records.items():
            with self.subTest(name):
                used[name] = self.check_update(record, now)
        # The cases cover both outcomes of the status rule.
        self.assertEqual(
            {name for name, value in used.items() if value},
            {"active", "other user", "limited", "expires later"},
        )

    def test_update_equals_orm_when_the_user_changes(self) -> None:
        now = timezone.now()
        User = get_user_model()
        email = User.get_email_field_name()
        changes: list[tuple[str, dict[str, Any], bool, bool, bool]] = [
            # name, change, password, email, still used
            ("password", {"password": "changed"}, True, True, False),
            ("password, not guarded", {"password": "changed"}, False, False, True),
        ]
        if "is_active" in {field.name for field in User._meta.concrete_fields}:
            changes.append(("deactivation", {"is_active": False}, False, False, False))
        if email != User.USERNAME_FIELD:
            changes += [
                ("email", {email: "new@example.com"}, True, True, False),
                ("email, not guarded", {email: "new@example.com"}, True, False, True),
            ]
        if User._meta.get_field(email).null:
            changes.append(("email to NULL", {email: None}, True, True, False))
        for index, (name, change, password, guard_email, still_used) in enumerate(
            changes
        ):
            with self.subTest(name):
                _, record = store.issue(self.create_user(f"sql-change-{index}"))
                self.assertEqual(
                    self.check_update(
                        record,
                        now,
                        password=password,
                        email=guard_email,
                        change=change,
                    ),
                    still_used,
                )
        # A user whose email column holds NULL, unchanged: NULL matches NULL.
        if User._meta.get_field(email).null:
            user = self.create_user("sql-null")
            User._base_manager.filter(pk=user.pk).update(**{email: None})
            _, record = store.issue(user)
            self.assertTrue(self.check_update(record, now))

    def test_audit_insert_equals_orm(self) -> None:
        db = router.db_for_write(IssuedToken)
        now = timezone.now()
        record = self.sql_tokens(now)["active"]
        read = sql.fetch(db, record.pk)
        assert read is not None
        info = {
            "ip": "2001:db8::1",
            "user_agent": "Agent/1.0",
            "method": "POST",
            "path": "/login/",
        }
        self.assertTrue(
            sql.consume(
                read,
                now,
                db,
                password=True,
                email=True,
                scope="scope",
                info=info,
            )
        )
        inserted = TokenEvent._default_manager.using(db).latest("pk")
        expected = TokenEvent._default_manager.using(db).create(
            created_at=now,
            kind=TokenEvent.Kind.USED,
            token=record,
            user_id=record.user_id,
            scope="scope",
            **info,
        )
        expected = TokenEvent._default_manager.using(db).get(pk=expected.pk)
        inserted.pk = expected.pk
        self.assertSameValues(inserted, expected)
        self.assertEqual(IssuedToken._default_manager.get(pk=record.pk).use_count, 1)

    def guest_tokens(self, now: datetime.datetime) -> dict[str, IssuedToken]:
        """Guest links in the states of the status rule, and bound to a browser."""
        cases: dict[str, dict[str, Any]] = {
            "active": {},
            "limited": {"max_uses": 2, "use_count": 1},
            "used up": {"max_uses": 2, "use_count": 2},
            "revoked": {"revoked_at": now - HOUR},
            "expired": {"expires_at": now - HOUR},
            "bound, unused": {"bind_to_browser": True},
            "bound, used": {"bind_to_browser": True, "use_count": 1},
        }
        records = {}
        for name, values in cases.items():
            [(_, record)] = store.issue_guests(
                [f"{name}@example.com"], "scope", label=name, max_age=HOUR * 2
            )
            IssuedToken._default_manager.filter(pk=record.pk).update(
                expires_at=values.pop("expires_at", record.expires_at), **values
            )
            records[name] = record
        return records

    def test_guest_select_equals_orm(self) -> None:
        # The LEFT JOIN of a link without a user, even with a default
        # manager that hides users.
        db = router.db_for_write(IssuedToken)
        delete = getattr(self, "delete", None)
        if delete is not None:
            delete(self.create_user("sql-hidden"), timezone.now())
        for name, record in self.guest_tokens(timezone.now()).items():
            with self.subTest(name):
                fetched = sql.fetch(db, record.pk)
                expected = (
                    IssuedToken._default_manager.using(db)
                    .select_related("user")
                    .get(pk=record.pk)
                )
                assert fetched is not None
                self.assertSameValues(fetched, expected)
                self.assertIsNone(fetched.user)
                self.assertIsNone(expected.user)

    def test_guest_update_equals_orm(self) -> None:
        db = router.db_for_write(IssuedToken)
        now = timezone.now()
        used = {}
        for first in (False, True):
            for name, record in self.guest_tokens(now).items():
                with self.subTest(name, first=first):
                    read = sql.fetch(db, record.pk)
                    assert read is not None
                    expected = (
                        IssuedToken._default_manager.filter(
                            pk=record.pk, user__isnull=True
                        )
                        .filter(
                            IssuedToken.status_condition(IssuedToken.Status.ACTIVE, now)
                        )
                        .filter(**({"use_count": 0} if first else {}))
                        .exists()
                    )
                    used[name, first] = sql.consume(
                        read,
                        now,
                        db,
                        password=True,
                        email=True,
                        scope="scope",
                        info=None,
                        first=first,
                    )
                    self.assertEqual(used[name, first], expected)
        self.assertEqual(
            {key for key, value in used.items() if value},
            {
                ("active", False),
                ("limited", False),
                ("bound, unused", False),
                ("bound, used", False),
                # A first use only for links never used.
                ("active", True),
                ("bound, unused", True),
            },
        )

    def test_guest_audit_insert_equals_orm(self) -> None:
        db = router.db_for_write(IssuedToken)
        now = timezone.now()
        record = self.guest_tokens(now)["active"]
        read = sql.fetch(db, record.pk)
        assert read is not None
        info = {"ip": "192.0.2.1", "user_agent": "A", "method": "GET", "path": "/r/"}
        self.assertTrue(
            sql.consume(
                read, now, db, password=True, email=True, scope="scope", info=info
            )
        )
        inserted = TokenEvent._default_manager.using(db).latest("pk")
        expected = TokenEvent._default_manager.using(db).create(
            created_at=now,
            kind=TokenEvent.Kind.USED,
            token=record,
            user_id=None,
            scope="scope",
            recipient="active@example.com",
            **info,
        )
        expected = TokenEvent._default_manager.using(db).get(pk=expected.pk)
        inserted.pk = expected.pk
        self.assertSameValues(inserted, expected)


class DefaultUserModelTests(SqlEqualsOrm, TestCase):
    def create_user(self, name: str, **extra: Any) -> Any:
        return get_user_model().objects.create_user(
            name, f"{name}@example.com", "letmein", **extra
        )


@pytest.mark.postgresql
class DefaultUserModelWithoutFunctionsTests(DefaultUserModelTests):
    """The same, where the database has no function: the statements run as they are."""

    functions = False

    def test_the_statements_run_as_they_are(self) -> None:
        _, issued = store.issue(self.create_user("plain"))
        record = sql.fetch("default", issued.pk)
        assert record is not None
        with CaptureQueriesContext(connection) as queries:
            self.assertTrue(store._consume(record, timezone.now(), "", None, "default"))
        [query] = queries.captured_queries
        self.assertTrue(query["sql"].startswith("WITH used AS (UPDATE"), query["sql"])


class DefaultUserModelAutocommitTests(SqlEqualsOrm, TransactionTestCase):
    """The same, outside a transaction: on SQLite, consume() runs its own on the driver's connection."""

    def create_user(self, name: str, **extra: Any) -> Any:
        return get_user_model().objects.create_user(
            name, f"{name}@example.com", "letmein", **extra
        )


@pytest.mark.sqlite
class SqliteDriverTests(TransactionTestCase):
    """On SQLite, the prebuilt statements run on the driver's connection, in autocommit mode."""

    def setUp(self) -> None:
        self.user = get_user_model().objects.create_user(
            "john", "john@example.com", "letmein"
        )
        self.token, self.record = issue_token(self.user)

    @contextlib.contextmanager
    def traced(self) -> Iterator[list[str]]:
        """Collect the statements that SQLite runs, whichever way they come."""
        statements: list[str] = []
        connection.ensure_connection()
        driver = connection.connection
        assert driver is not None
        driver.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            driver.set_trace_callback(None)

    def keywords(self, statements: list[str]) -> list[str]:
        return [sql.split(None, 1)[0].upper() for sql in self.own(statements)]

    def own(self, statements: list[str]) -> list[str]:
        # Leave out what SQLite reports of triggers, and the SELECT QUOTE()
        # with which Django's debug cursor renders parameters in its log.
        return [
            sql for sql in statements if not sql.startswith(("--", "SELECT QUOTE("))
        ]

    def use_count(self) -> int:
        return IssuedToken.objects.get(pk=self.record.pk).use_count

    def test_statements_of_a_use(self) -> None:
        for audit, expected in [
            (True, ["SELECT", "BEGIN", "UPDATE", "INSERT", "COMMIT"]),
            (False, ["SELECT", "UPDATE"]),
        ]:
            with self.subTest(audit=audit), override_settings(SESAME_AUDIT=audit):
                with self.traced() as statements:
                    self.assertEqual(get_user(self.token), self.user)
                self.assertEqual(self.keywords(statements), expected)
                # Django's cursors get the same statements when they are
                # watched, as by assertNumQueries().
                with (
                    CaptureQueriesContext(connection) as queries,
                    self.traced() as watched,
                ):
                    self.assertEqual(get_user(self.token), self.user)
                self.assertEqual(self.keywords(watched), expected)
                self.assertEqual(
                    [query["sql"] for query in queries.captured_queries],
                    self.own(watched),
                )
        self.assertEqual(self.use_count(), 4)

    def test_rejected_use(self) -> None:
        IssuedToken.objects.filter(pk=self.record.pk).update(max_uses=1, use_count=1)
        with self.traced() as statements:
            self.assertIsNone(get_user(self.token))
        # The SELECT finds it used up: no transaction, and the rejection's
        # audit event.
        self.assertEqual(self.keywords(statements), ["SELECT", "INSERT"])
        self.assertFalse(connection.in_atomic_block)

    def test_failed_insert_rolls_the_use_back(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TRIGGER sesame_db_test_fail BEFORE INSERT ON sesame_db_tokenevent "
                "BEGIN SELECT RAISE(ABORT, 'audit failed'); END"
            )
        try:
            with self.traced() as statements, self.assertRaises(IntegrityError):
                get_user(self.token)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("DROP TRIGGER sesame_db_test_fail")
        # SQLite reports the INSERT again for the trigger's program.
        keywords = self.keywords(statements)
        self.assertEqual(keywords[:4], ["SELECT", "BEGIN", "UPDATE", "INSERT"])
        self.assertEqual(keywords[-1], "ROLLBACK")
        self.assertNotIn("COMMIT", keywords)
        driver = connection.connection
        assert driver is not None
        self.assertFalse(driver.in_transaction)
        self.assertEqual(self.use_count(), 0)
        # The connection is usable, in autocommit mode.
        self.assertTrue(connection.get_autocommit())
        self.assertEqual(get_user(self.token), self.user)
        self.assertEqual(self.use_count(), 1)

    def test_in_an_outer_transaction(self) -> None:
        # atomic() decides, as before: no BEGIN of its own, and a rollback of
        # the outer block takes the use back.
        with self.traced() as statements, transaction.atomic():
            self.assertEqual(get_user(self.token), self.user)
            transaction.set_rollback(True)
        self.assertEqual(
            self.keywords(statements),
            ["BEGIN", "SELECT", "UPDATE", "INSERT", "ROLLBACK"],
        )
        self.assertEqual(self.use_count(), 0)

    def test_transaction_mode(self) -> None:
        # The BEGIN of atomic(), as the database's OPTIONS set it.
        sql._consume_statements.cache_clear()
        self.addCleanup(sql._consume_statements.cache_clear)
        with (
            mock.patch.object(connection, "transaction_mode", "IMMEDIATE"),
            self.traced() as statements,
        ):
            self.assertEqual(get_user(self.token), self.user)
        self.assertEqual(statements[1], "BEGIN IMMEDIATE")


@pytest.mark.postgresql
class SynchronousCommitTests(TransactionTestCase):
    """SESAME_SYNCHRONOUS_COMMIT = False: the use's statement doesn't wait for its WAL flush."""

    SET = "set_config('synchronous_commit', 'off', true)"
    # In the functions of the use, installed for every setting here.
    functions = True

    def setUp(self) -> None:
        if self.functions:
            installed_functions(self, "default", ALL_VARIANTS)
        else:
            without_functions(self, "default")
        self.user = get_user_model().objects.create_user(
            "john", "john@example.com", "letmein"
        )
        self.token, self.record = issue_token(self.user)

    def use_statements(self) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(get_user(self.token), self.user)
        calls = [
            query["sql"]
            for query in queries.captured_queries
            if statement_of(query["sql"]) != query["sql"]
        ]
        # The functions of the SELECT and of the use.
        self.assertEqual(len(calls), 2 * int(self.functions))
        statements = [statement_of(query["sql"]) for query in queries.captured_queries]
        return [
            statement
            for statement in statements
            if "sesame_db_issuedtoken" in statement
            and not statement.startswith("SELECT")
        ]

    def test_default_is_durable(self) -> None:
        for audit in [True, False]:
            with self.subTest(audit=audit), override_settings(SESAME_AUDIT=audit):
                [statement] = self.use_statements()
                self.assertNotIn("synchronous_commit", statement)

    @override_settings(SESAME_SYNCHRONOUS_COMMIT=False)
    def test_off(self) -> None:
        for audit in [True, False]:
            with self.subTest(audit=audit), override_settings(SESAME_AUDIT=audit):
                [statement] = self.use_statements()
                self.assertIn(self.SET, statement)
        # Both uses were counted, and the audited one recorded.
        self.assertEqual(IssuedToken.objects.get(pk=self.record.pk).use_count, 2)
        self.assertEqual(
            TokenEvent.objects.filter(token=self.record, kind="used").count(), 1
        )

    @override_settings(SESAME_SYNCHRONOUS_COMMIT=False)
    def test_not_in_the_callers_transaction(self) -> None:
        # The durability of an outer transaction, such as ATOMIC_REQUESTS',
        # is the caller's.
        with transaction.atomic():
            [statement] = self.use_statements()
            self.assertNotIn("synchronous_commit", statement)

    @override_settings(SESAME_SYNCHRONOUS_COMMIT=False)
    def test_the_setting_applies_to_the_statements_transaction(self) -> None:
        # What the statement does to its transaction, seen from inside one:
        # consume() takes it for its own, as it is in autocommit mode.
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = on")
        for audit in [True, False]:
            with (
                self.subTest(audit=audit),
                override_settings(SESAME_AUDIT=audit),
                transaction.atomic(),
            ):
                record = sql.fetch("default", self.record.pk)
                assert record is not None
                # As consume() sees a connection in autocommit mode.
                with (
                    mock.patch.object(connections["default"], "in_atomic_block", False),
                    mock.patch.object(connections["default"], "autocommit", True),
                ):
                    self.assertTrue(
                        sql.consume(
                            record,
                            timezone.now(),
                            "default",
                            password=True,
                            email=False,
                            scope="",
                            info={} if audit else None,
                            synchronous_commit=False,
                        )
                    )
                with connection.cursor() as cursor:
                    cursor.execute("SHOW synchronous_commit")
                    self.assertEqual(cursor.fetchone(), ("off",))
            # Only for that transaction.
            with connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                self.assertEqual(cursor.fetchone(), ("on",))


class SynchronousCommitWithoutFunctionsTests(SynchronousCommitTests):
    """The same, where the database has no function: the statement runs as it is."""

    functions = False


@pytest.mark.postgresql
class PlanTests(TestCase):
    """What PostgreSQL plans for the statement of a use, which it does at every use with client-side binding."""

    def test_the_users_row_is_a_one_time_filter(self) -> None:
        # The compare-and-set on the user's row takes the user's key as a
        # parameter: an uncorrelated EXISTS, planned as a one-time filter
        # rather than a join of the two tables, which costs more to plan
        # (docs/performance.rst).
        user = get_user_model().objects.create_user("john", "john@example.com", "x")
        token, record = issue_token(user)
        plans: list[str] = []

        def explain(
            execute: Any, query: str, params: Any, many: bool, context: Any
        ) -> Any:
            # The statement that the function of the use runs: the same
            # plan, which the function keeps (docs/performance.rst).
            statement = statement_of(query)
            if statement.startswith("WITH used AS (UPDATE"):
                with connection.cursor() as cursor:
                    cursor.execute(f"EXPLAIN {statement}", params)
                    plans.append("\n".join(row[0] for row in cursor.fetchall()))
            return execute(query, params, many, context)

        with connection.execute_wrapper(explain):
            self.assertEqual(get_user(token), user)
        [plan] = plans
        self.assertIn("One-Time Filter", plan)
        self.assertNotIn("Join", plan)
        self.assertNotIn("Nested Loop", plan)
        self.assertNotIn("SubPlan", plan)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    def test_a_plan_without_the_values_finds_the_link_by_its_key(self) -> None:
        # A function's statement may run on a generic plan, made without the
        # values of its parameters: PL/pgSQL switches to one after five
        # uses if it costs no more. It must still find the link by its
        # primary key, not by its user's key, whose links may be many: the
        # plan that PostgreSQL chose here, before statistics, when the
        # statement compared the user's key with "=".
        user = get_user_model().objects.create_user("john", "john@example.com", "x")
        for _ in range(50):
            issue_token(user)
        for variant in ALL_VARIANTS:
            function = sql._consume_statements("default", *variant).function
            assert function is not None
            with self.subTest(variant=variant), connection.cursor() as cursor:
                cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor.execute(
                    f"PREPARE sesame_db_plan({', '.join(function.types)}) AS {function.body}"
                )
                nulls = ", ".join(f"NULL::{t}" for t in function.types)
                cursor.execute(f"EXPLAIN EXECUTE sesame_db_plan({nulls})")
                plan = "\n".join(row[0] for row in cursor.fetchall())
                cursor.execute("DEALLOCATE sesame_db_plan")
                self.assertIn("Index Scan using sesame_db_issuedtoken_pkey", plan)
                self.assertNotIn("sesame_db_issuedtoken_user_id", plan)


@pytest.mark.postgresql
class FunctionTests(TransactionTestCase):
    """On PostgreSQL, a use runs its statement in the function that ``migrate`` installed."""

    def setUp(self) -> None:
        self.user = get_user_model().objects.create_user(
            "john", "john@example.com", "letmein"
        )
        self.token, self.record = issue_token(self.user)

    def use(self, token: str | None = None) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(get_user(token or self.token), self.user)
        return [query["sql"] for query in queries.captured_queries]

    def function(self, **settings: Any) -> sql._Function:
        with override_settings(**settings):
            [variant, *_] = store.function_variants()
        function = sql._consume_statements("default", *variant).function
        assert function is not None
        return function

    def test_migrate_installs_the_functions_of_the_settings(self) -> None:
        # The test database was migrated with the test settings.
        installed = sql.list_functions("default")
        for variant in store.function_variants():
            with self.subTest(variant=variant):
                function = sql._consume_statements("default", *variant).function
                assert function is not None
                self.assertIn(function.name, installed)
        select = sql._select("default").function
        assert select is not None
        self.assertIn(select.name, installed)
        # One SELECT, and four statements of a use: with a user or for a
        # guest, and for a first use or not.
        self.assertEqual(len(installed), 5)
        self.assertEqual(len(sql.functions("default", store.function_variants())), 5)
        # Without synchronous_commit, a use may run asynchronously: four more.
        with override_settings(SESAME_SYNCHRONOUS_COMMIT=False):
            self.assertEqual(len(store.function_variants()), 8)
        self.assertEqual(len(store.function_variants()), 4)

    def test_a_use_calls_the_function(self) -> None:
        fetch, call = self.use()
        select = sql._select("default").function
        assert select is not None
        self.assertTrue(fetch.startswith(f"SELECT * FROM {select.name}("), fetch)
        self.assertTrue(call.startswith(f"SELECT {self.function().name}("), call)
        record = IssuedToken.objects.get(pk=self.record.pk)
        self.assertEqual(record.use_count, 1)
        event = TokenEvent.objects.get(token=self.record, kind=TokenEvent.Kind.USED)
        self.assertEqual(event.user_id, self.user.pk)

    def test_its_name_follows_its_definition(self) -> None:
        # Other settings, another statement: another function, which this
        # database doesn't have yet. The statement runs as it is.
        other = self.function(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
        self.assertNotEqual(other.name, self.function().name)
        self.assertNotIn(other.name, sql.list_functions("default"))
        with override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True):
            token, _ = issue_token(self.user)
            [_, statement] = self.use(token)
            self.assertTrue(statement.startswith("WITH used AS (UPDATE"), statement)
            # migrate installs it.
            self.addCleanup(reinstall_functions)
            call_command("migrate", "sesame_db", verbosity=0)
            self.assertIn(other.name, sql.list_functions("default"))
            token, _ = issue_token(self.user)
            [_, call] = self.use(token)
            self.assertTrue(call.startswith(f"SELECT {other.name}("), call)
        self.assertEqual(IssuedToken.objects.filter(use_count=1).count(), 2)

    def test_the_first_use_of_a_process_reads_the_functions(self) -> None:
        sql._installed.pop("default")
        # The list, the function of the SELECT, the function of the use.
        with self.assertNumQueries(3):
            self.assertEqual(get_user(self.token), self.user)
        token, _ = issue_token(self.user)
        with self.assertNumQueries(2):
            self.assertEqual(get_user(token), self.user)

    def test_a_function_dropped_since_it_was_read(self) -> None:
        name = self.function().name
        self.addCleanup(reinstall_functions)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION {name}")
        self.assertIn(name, sql._installed["default"])
        # Out of a transaction: the statement runs as it is, once.
        with self.assertLogs("sesame_db", "WARNING") as logs:
            self.assertEqual(get_user(self.token), self.user)
        self.assertIn(
            f"The function {name} of sesame_db is missing in database 'default': "
            "run migrate to install it. Its statement runs without it.",
            logs.output[0],
        )
        self.assertEqual(IssuedToken.objects.get(pk=self.record.pk).use_count, 1)
        self.assertEqual(
            TokenEvent.objects.filter(token=self.record, kind="used").count(), 1
        )
        # The next use reads the list again, and doesn't look for it.
        token, record = issue_token(self.user)
        # The list, the function of the SELECT, the statement of the use.
        with self.assertNumQueries(3):
            self.assertEqual(get_user(token), self.user)
        self.assertNotIn(name, sql._installed["default"])
        # In a transaction, which the error aborted: the database changed
        # under the process, which answers 503, and reads the list again.
        sql._installed["default"] = frozenset([name])
        token, record = issue_token(self.user)
        with self.assertRaises(DatabaseUnavailable) as caught, transaction.atomic():
            get_user(token)
        self.assertIn(
            f"the function {name} of sesame_db is missing", str(caught.exception)
        )
        self.assertNotIn("default", sql._installed)
        self.assertEqual(IssuedToken.objects.get(pk=record.pk).use_count, 0)
        self.assertEqual(get_user(token), self.user)

    def test_the_smallest_keys(self) -> None:
        # The arguments' casts are in parentheses: -2147483648::integer is
        # -(2147483648::integer), out of range.
        user = get_user_model().objects.create_user(
            "min", "min@example.com", "x", id=-(2**31)
        )
        token, record = issue_token(user)
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(get_user(token), user)
        self.assertTrue(
            queries.captured_queries[-1]["sql"].startswith(
                f"SELECT {self.function().name}(("
            )
        )
        self.assertEqual(IssuedToken.objects.get(pk=record.pk).use_count, 1)

    def test_installing_again_creates_nothing(self) -> None:
        # A function's name is a digest of its definition: one that exists
        # is the same, and isn't replaced.
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(
                sql.install_functions("default", store.function_variants()), []
            )
        self.assertFalse([q for q in queries.captured_queries if "CREATE" in q["sql"]])

    def test_migrating_back_drops_them(self) -> None:
        self.addCleanup(call_command, "migrate", "sesame_db", verbosity=0)
        call_command("migrate", "sesame_db", "0004", verbosity=0)
        self.assertEqual(sql.list_functions("default"), frozenset())
        # And they aren't installed again while the migration is unapplied.
        store.create_functions(using="default")
        self.assertEqual(sql.list_functions("default"), frozenset())
        call_command("migrate", "sesame_db", verbosity=0)
        installed = sql.list_functions("default")
        self.assertIn(self.function().name, installed)
        self.assertEqual(len(installed), 5)

    def test_a_function_that_fails_its_check_isnt_installed(self) -> None:
        # Called with NULL values when it's installed, a function that
        # fails isn't: its statement will run as it is.
        self.addCleanup(reinstall_functions)
        sql.drop_functions("default")
        function = sql._function(
            "fetch",
            "SELECT t.no_such_column::integer FROM sesame_db_issuedtoken t WHERE t.id = %s",
            ("bigint",),
            ("integer",),
        )
        assert function is not None
        good = sql.functions("default", store.function_variants())
        with (
            mock.patch.object(sql, "functions", return_value=[function, *good]),
            self.assertLogs("sesame_db", "WARNING") as logs,
        ):
            created = sql.install_functions("default", store.function_variants())
        self.assertEqual(created, [f.name for f in good])
        self.assertIn(f"Cannot install the function {function.name}", logs.output[0])
        self.assertIn("no_such_column", logs.output[0])
        installed = sql.list_functions("default")
        self.assertNotIn(function.name, installed)
        self.assertTrue({f.name for f in good} <= installed)

"""
The store's prebuilt SQL equals what the ORM would do: same rows, same converted values.

:class:`SqlEqualsOrm` is a mixin: it runs here for the test settings' user
model, and for every shape of user model through
:class:`tests.usermodels.scenarios.Scenarios` (``tests/test_user_models.py``),
on SQLite or PostgreSQL as ``SESAME_TEST_DB`` says.

"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import router
from django.test import TestCase
from django.utils import timezone

from sesame_db import sql, store
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.models import IssuedToken, TokenEvent

if TYPE_CHECKING:
    from django.test import TestCase as _TestCase
else:
    _TestCase = object

HOUR = datetime.timedelta(hours=1)


class SqlEqualsOrm(_TestCase):
    """:func:`sesame_db.sql.fetch` and :func:`sesame_db.sql.consume` against the ORM."""

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


class DefaultUserModelTests(SqlEqualsOrm, TestCase):
    def create_user(self, name: str, **extra: Any) -> Any:
        return get_user_model().objects.create_user(
            name, f"{name}@example.com", "letmein", **extra
        )

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, connections

if TYPE_CHECKING:
    from django.test import SimpleTestCase as _TestCase
else:
    _TestCase = object


class CreateUserMixin(_TestCase):
    """Create ``self.user``, an active user of the current user model, with a password and an email."""

    username = "john"

    def setUp(self):
        super().setUp()
        self.user = self.create_user()

    def create_user(self, username=None, **kwargs):
        User = get_user_model()
        kwargs.setdefault("email", "john@example.com")
        kwargs.setdefault("password", "letmein")
        if User._meta.pk.get_internal_type() == "CharField":
            kwargs.setdefault("id", f"user-{username or self.username}")
        return User.objects.create_user(username or self.username, **kwargs)


class CaptureLogMixin(_TestCase):
    """Capture the ``sesame_db`` logger; ``assertLogsContain`` checks one message."""

    @contextlib.contextmanager
    def captureLogs(self, level="DEBUG"):
        with self.assertLogs("sesame_db", level) as logs:
            yield logs
        self.logs = logs

    def assertLogsContain(self, message):
        output = "\n".join(self.logs.output)
        self.assertIn(message, output)


@contextlib.contextmanager
def capture_login_failed():
    """Collect the credentials that ``user_login_failed`` receivers get, one dict per signal."""
    from django.contrib.auth.signals import user_login_failed

    captured: list[dict[str, object]] = []

    def receiver(sender, credentials, **kwargs):
        captured.append(credentials)

    user_login_failed.connect(receiver, weak=False)
    try:
        yield captured
    finally:
        user_login_failed.disconnect(receiver)


def tamper(token):
    """Change a character in the signature of ``token``; it stays well-formed."""
    # The middle of a v2 token is in the signature: every bit of that
    # character is data, unlike the last one, which may hold padding bits.
    i = len(token) // 2
    return token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1 :]


class AsyncNumQueriesMixin:
    """Provide ``assertNumQueriesAsync``, the twin of ``assertNumQueries`` for ``async def`` tests."""

    @contextlib.asynccontextmanager
    async def assertNumQueriesAsync(self, num, using="default"):
        from asgiref.sync import sync_to_async
        from django.db import connections
        from django.test.utils import CaptureQueriesContext

        # An async test runs in an event loop thread, but the ORM runs its
        # queries in the test's thread, through sync_to_async(): count them
        # on that thread's connection, where assertNumQueries() cannot reach.
        def enter():
            context = CaptureQueriesContext(connections[using])
            context.__enter__()
            return context

        def leave():
            context.__exit__(None, None, None)
            return [query["sql"] for query in context.captured_queries]

        context = await sync_to_async(enter)()
        try:
            yield context
        finally:
            queries = await sync_to_async(leave)()
        if len(queries) != num:
            captured = "\n".join(queries)
            raise AssertionError(
                f"{len(queries)} queries executed, {num} expected\n"
                f"Captured queries were:\n{captured}"
            )


def isolate_from_django_sesame(test_case):
    """
    Disconnect django-sesame's ``setting_changed`` receiver until ``test_case`` ends.

    Once a test module imports ``sesame`` (the interoperability tests do), its
    receiver reloads django-sesame's settings on every ``SESAME_*`` change and
    raises on values that it rejects, such as a non-unique
    ``SESAME_PRIMARY_KEY_FIELD``: ``override_settings()`` then fails in tests
    that check how sesame_db handles those values. Call this in ``setUp()``.

    """
    import sys

    from django.core.signals import setting_changed

    sesame_settings = sys.modules.get("sesame.settings")
    if sesame_settings is not None and setting_changed.disconnect(
        sesame_settings.reload
    ):
        test_case.addCleanup(setting_changed.connect, sesame_settings.reload)


class IsolateDjangoSesameMixin:
    """Call :func:`isolate_from_django_sesame` in ``setUp()``; put it before the test case class."""

    def setUp(self):
        super().setUp()  # type: ignore[misc]
        isolate_from_django_sesame(self)


def last_login_updates(queries):
    """Return the UPDATE queries on the last login date among ``queries``."""
    return [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith('UPDATE "auth_user"')
        and "last_login" in query["sql"]
    ]


def is_function_call(sql):
    """Tell whether ``sql`` calls the PostgreSQL function that counts a use (see sesame_db.sql)."""
    return sql.lstrip().startswith("SELECT sesame_db_use_")


def statement(sql):
    """Return the first keyword of ``sql``: SELECT, UPDATE, INSERT, WITH..."""
    return sql.lstrip().split(None, 1)[0].upper()


class FailingDatabaseMixin(CreateUserMixin):
    """
    Make statements fail with ``self.error`` while ``failing()`` is active.

    ``failing(predicate)`` fails the statements for which ``predicate(sql)``
    is true; by default, every statement.

    """

    def setUp(self):
        super().setUp()
        # A new error per test: raising one object again and again would
        # lengthen its traceback.
        self.error = OperationalError("server closed the connection unexpectedly")

    def _wrapper(self, predicate, error, failed):
        def wrapper(execute, sql, params, many, context):
            if predicate(sql):
                failed.append(sql)
                raise error or self.error
            return execute(sql, params, many, context)

        return wrapper

    @contextlib.contextmanager
    def failing(self, predicate=lambda sql: True, error=None):
        failed: list[str] = []
        with connection.execute_wrapper(self._wrapper(predicate, error, failed)):
            yield failed
        self.assertTrue(failed, "no statement failed: the test tests nothing")

    @contextlib.asynccontextmanager
    async def afailing(self, predicate=lambda sql: True, error=None):
        # The ORM runs in the test's thread, through sync_to_async(), with
        # that thread's connection: install the wrapper there.
        failed: list[str] = []
        wrapper = self._wrapper(predicate, error, failed)
        wrappers = await sync_to_async(lambda: connection.execute_wrappers)()
        wrappers.append(wrapper)
        try:
            yield failed
        finally:
            wrappers.remove(wrapper)
        self.assertTrue(failed, "no statement failed: the test tests nothing")

    def use(self, record):
        """Return the uses counted for ``record`` and its kinds of events, besides "issued"."""
        from sesame_db.models import TokenEvent

        record.refresh_from_db()
        kinds = list(
            TokenEvent.objects.filter(token=record)
            .exclude(kind="issued")
            .order_by("pk")
            .values_list("kind", flat=True)
        )
        return record.use_count, kinds

    @staticmethod
    def is_use(sql):
        # The conditional UPDATE of the use count; on PostgreSQL, the CTE
        # that also inserts the "used" event, or the function that runs it.
        return is_function_call(sql) or (
            statement(sql) in ("UPDATE", "WITH") and "sesame_db_issuedtoken" in sql
        )

    @staticmethod
    def is_used_event(sql):
        # The INSERT of the "used" event; on PostgreSQL, the statement of
        # the use, or the function that runs it.
        return is_function_call(sql) or (
            "INSERT INTO" in sql and "sesame_db_tokenevent" in sql
        )


# The PostgreSQL functions of a use (sesame_db.sql).


def installed_functions(test, db, variants):
    """
    Install the PostgreSQL functions of ``variants`` on ``db`` for ``test``, and check that every one is.

    Its cleanup drops those it created and restores what the process knew
    of the database's functions: a TestCase's transaction would roll them
    back, but not a TransactionTestCase's.

    """
    from sesame_db import sql

    before = sql.list_functions(db)
    sql.install_functions(db, variants)
    wanted = {function.name for function in sql.functions(db, variants)}
    missing = wanted - sql.list_functions(db)
    assert not missing, f"not installed: {missing}"

    def drop():
        with connections[db].cursor() as cursor:
            for name in sql.list_functions(db) - before:
                cursor.execute(f"DROP FUNCTION {name}")
        sql._installed[db] = before

    test.addCleanup(drop)


def without_functions(test, db):
    """Drop the PostgreSQL functions of ``db`` for ``test``; its cleanup installs those of the test settings again."""
    from sesame_db import sql, store

    before = sql.list_functions(db)
    sql.drop_functions(db)

    def install():
        store.create_functions(using=db, verbosity=0)
        assert sql.list_functions(db) >= before
        sql._installed[db] = before

    test.addCleanup(install)


def reinstall_functions(db="default"):
    """Leave ``db`` with the functions of the test settings only, as migrate made them."""
    from sesame_db import sql, store

    sql.drop_functions(db)
    store.create_functions(using=db, verbosity=0)

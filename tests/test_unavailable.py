"""
A database that fails while a token is checked: 503, nothing counted, nothing lost.

These tests make the database connection raise the errors that a driver
raises when a connection drops or a statement times out, at a chosen
statement. tests/test_faults.py causes the same failures for real on
PostgreSQL: a killed connection, a statement timeout, a server restart.

"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import OperationalError, ProgrammingError
from django.test import TransactionTestCase, override_settings

from sesame_db.exceptions import DatabaseUnavailable
from sesame_db.utils import aget_user, get_token, get_user, issue_token

from .mixins import CaptureLogMixin, FailingDatabaseMixin, statement

SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESAME_MIDDLEWARE = "sesame_db.middleware.AuthenticationMiddleware"


class GetUserTests(FailingDatabaseMixin, CaptureLogMixin, TransactionTestCase):
    def test_lookup_fails(self):
        token, record = issue_token(self.user)
        with (
            self.captureLogs("ERROR"),
            self.failing() as failed,
            self.assertRaises(DatabaseUnavailable) as caught,
        ):
            get_user(token)
        self.assertEqual(statement(failed[0]), "SELECT")
        self.assertIs(caught.exception.__cause__, self.error)
        self.assertIsInstance(caught.exception, OperationalError)
        self.assertLogsContain(
            "Cannot use a token: the database failed: server closed the connection"
        )
        # Neither accepted nor rejected.
        self.assertEqual(self.use(record), (0, []))
        # Once the database is back, the link works.
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(self.use(record), (1, ["used"]))

    def test_use_fails(self):
        token, record = issue_token(self.user, max_uses=1)
        with (
            self.captureLogs("ERROR"),
            self.failing(self.is_use),
            self.assertRaises(DatabaseUnavailable),
        ):
            get_user(token)
        self.assertEqual(self.use(record), (0, []))
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(self.use(record), (1, ["used"]))

    def test_audit_of_use_fails(self):
        # On SQLite, the INSERT of the "used" event follows the UPDATE in one
        # transaction; on PostgreSQL, both are one statement. Either way,
        # the use isn't counted without its event.
        token, record = issue_token(self.user, max_uses=1)
        with (
            self.captureLogs("ERROR"),
            self.failing(self.is_used_event),
            self.assertRaises(DatabaseUnavailable),
        ):
            get_user(token)
        self.assertEqual(self.use(record), (0, []))
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(self.use(record), (1, ["used"]))

    def test_audit_of_rejection_fails(self):
        token, record = issue_token(self.user)
        record.revoke()
        with (
            self.captureLogs("ERROR"),
            self.failing(lambda sql: statement(sql) == "INSERT"),
            self.assertRaises(DatabaseUnavailable),
        ):
            get_user(token)
        self.assertEqual(self.use(record), (0, ["revoked"]))
        self.assertIsNone(get_user(token))
        self.assertEqual(self.use(record), (0, ["revoked", "rejected"]))

    def test_stateless_token(self):
        token = get_token(self.user)
        with (
            self.captureLogs("ERROR"),
            self.failing(),
            self.assertRaises(DatabaseUnavailable),
        ):
            get_user(token)
        self.assertEqual(get_user(token), self.user)

    def test_update_last_login_fails(self):
        token = get_token(self.user)
        with (
            self.captureLogs("ERROR"),
            self.failing(lambda sql: statement(sql) == "UPDATE"),
            self.assertRaises(DatabaseUnavailable),
        ):
            get_user(token, update_last_login=True)

    def test_forged_token_needs_no_database(self):
        token, _ = issue_token(self.user)
        forged = token[:-1] + ("A" if token[-1] != "A" else "B")
        with self.assertNumQueries(0):
            self.assertIsNone(get_user(forged))

    def test_programming_errors_are_not_hidden(self):
        # A missing table is a bug to fix, not an outage to wait out.
        token, _ = issue_token(self.user)
        error = ProgrammingError('relation "sesame_db_issuedtoken" does not exist')
        with self.failing(error=error), self.assertRaises(ProgrammingError) as caught:
            get_user(token)
        self.assertNotIsInstance(caught.exception, DatabaseUnavailable)

    async def test_aget_user(self):
        token, record = await sync_to_async(issue_token)(self.user)
        with self.captureLogs("ERROR"):
            async with self.afailing(self.is_use):
                with self.assertRaises(DatabaseUnavailable):
                    await aget_user(token)
        self.assertEqual(await sync_to_async(self.use)(record), (0, []))
        self.assertEqual(await aget_user(token), self.user)

    async def test_aget_user_stateless(self):
        token = get_token(self.user)
        with self.captureLogs("ERROR"):
            async with self.afailing():
                with self.assertRaises(DatabaseUnavailable):
                    await aget_user(token)


class ResponseTests(FailingDatabaseMixin, CaptureLogMixin, TransactionTestCase):
    """Every view of sesame_db answers 503 with Retry-After, and doesn't run the view."""

    def setUp(self):
        super().setUp()
        self.token, self.record = issue_token(self.user)

    def assertUnavailable(self, response):
        self.assertEqual(response.status_code, 503, response.content)
        self.assertEqual(response["Retry-After"], "5")
        self.assertEqual(response["Content-Type"], "text/plain; charset=utf-8")
        self.assertIn(b"Try again in a moment", response.content)

    def assertNotUsed(self):
        self.assertEqual(self.use(self.record), (0, []))

    def get(self, path, token=None):
        with self.captureLogs("ERROR"), self.failing(self.is_use):
            return self.client.get(path, {"sesame": token or self.token})

    async def aget(self, path):
        with self.captureLogs("ERROR"):
            async with self.afailing(self.is_use):
                return await self.async_client.get(path, {"sesame": self.token})

    def test_decorator(self):
        self.assertUnavailable(self.get("/decorated/"))
        self.assertNotUsed()
        # The same link works once the database is back.
        response = self.client.get("/decorated/", {"sesame": self.token})
        self.assertEqual(response.content, b"john")

    def test_decorator_token_not_required(self):
        # Running the view as an anonymous user would answer as if the link
        # were invalid.
        self.assertUnavailable(self.get("/optional/"))
        self.assertNotUsed()

    def test_decorator_stateless_token(self):
        with self.captureLogs("ERROR"), self.failing():
            response = self.client.get("/decorated/", {"sesame": get_token(self.user)})
        self.assertUnavailable(response)

    async def test_async_decorator(self):
        self.assertUnavailable(await self.aget("/adecorated/"))
        await sync_to_async(self.assertNotUsed)()

    def test_login_view(self):
        self.assertUnavailable(self.get("/login/"))
        self.assertNotUsed()
        self.assertNotIn("_auth_user_id", self.client.session)

    def is_login(self, sql):
        # login() creates a session and updates the last login date. (The
        # use's UPDATE of the token reads auth_user too.)
        return "django_session" in sql or sql.lstrip().startswith('UPDATE "auth_user"')

    def assertUsedButUnavailable(self, response):
        # The use was committed before login() failed: the link is used.
        self.assertUnavailable(response)
        self.assertEqual(self.use(self.record), (1, ["used"]))
        self.assertNotIn("_auth_user_id", self.client.session)

    def test_login_view_login_fails(self):
        with self.captureLogs("ERROR"), self.failing(self.is_login):
            response = self.client.get("/login/", {"sesame": self.token})
        self.assertUsedButUnavailable(response)

    def test_decorator_permanent_login_fails(self):
        with self.captureLogs("ERROR"), self.failing(self.is_login):
            response = self.client.get("/permanent/", {"sesame": self.token})
        self.assertUsedButUnavailable(response)

    async def test_async_decorator_permanent_login_fails(self):
        with self.captureLogs("ERROR"):
            async with self.afailing(self.is_login):
                response = await self.async_client.get(
                    "/apermanent/", {"sesame": self.token}
                )
        self.assertUnavailable(response)
        self.assertEqual(await sync_to_async(self.use)(self.record), (1, ["used"]))

    @override_settings(
        MIDDLEWARE=[SESSION_MIDDLEWARE, AUTH_MIDDLEWARE, SESAME_MIDDLEWARE]
    )
    def test_middleware_login_fails(self):
        with self.captureLogs("ERROR"), self.failing(self.is_login):
            response = self.client.get("/user/", {"sesame": self.token})
        self.assertUsedButUnavailable(response)

    @override_settings(
        MIDDLEWARE=[SESSION_MIDDLEWARE, AUTH_MIDDLEWARE, SESAME_MIDDLEWARE]
    )
    async def test_async_middleware_login_fails(self):
        with self.captureLogs("ERROR"):
            async with self.afailing(self.is_login):
                response = await self.async_client.get(
                    "/auser/", {"sesame": self.token}
                )
        self.assertUnavailable(response)
        self.assertEqual(await sync_to_async(self.use)(self.record), (1, ["used"]))

    @override_settings(ROOT_URLCONF="tests.cbv_urls")
    def test_token_authentication_mixin(self):
        self.assertUnavailable(self.get("/user/"))
        self.assertNotUsed()

    @override_settings(ROOT_URLCONF="tests.cbv_urls")
    async def test_async_token_authentication_mixin(self):
        self.assertUnavailable(await self.aget("/auser/"))
        await sync_to_async(self.assertNotUsed)()

    @override_settings(
        MIDDLEWARE=[SESSION_MIDDLEWARE, AUTH_MIDDLEWARE, SESAME_MIDDLEWARE]
    )
    def test_middleware(self):
        self.assertUnavailable(self.get("/user/"))
        self.assertNotUsed()

    @override_settings(
        MIDDLEWARE=[SESSION_MIDDLEWARE, AUTH_MIDDLEWARE, SESAME_MIDDLEWARE]
    )
    async def test_async_middleware(self):
        self.assertUnavailable(await self.aget("/auser/"))
        await sync_to_async(self.assertNotUsed)()

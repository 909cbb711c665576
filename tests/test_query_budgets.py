"""
The queries that each entry point costs to use one token.

Every entry point goes through :func:`sesame_db.utils.get_user` or
:func:`~sesame_db.utils.aget_user`; this module pins what that costs on each
of them, for the four kinds of tokens: stateless, stateless one-time, and
stored with and without the audit trail. Sessions are signed cookies, so that
only the queries of the token and of :func:`~django.contrib.auth.login` count.
``tests/test_compat.py`` checks that the stateless budgets are at most
django-sesame's.

"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.contrib.auth.signals import user_logged_in
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import connection
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory, TestCase, override_settings
from django.views.generic import View

from sesame_db.backends import replace_update_last_login, update_last_login
from sesame_db.contrib.channels import SesameAuthMiddleware, authenticate_connection
from sesame_db.decorators import authenticate
from sesame_db.middleware import AuthenticationMiddleware
from sesame_db.utils import get_token
from sesame_db.views import LoginView, TokenAuthenticationMixin

from .mixins import AsyncNumQueriesMixin, CreateUserMixin, last_login_updates

try:
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from sesame_db.contrib.rest_framework import SesameTokenAuthentication
except ImportError:  # pragma: no cover
    HAS_DRF = False
else:
    HAS_DRF = True

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"

KINDS: dict[str, dict[str, Any]] = {
    "stateless": {},
    "one-time": {"SESAME_ONE_TIME": True},
    "stored": {"SESAME_STORE": True},
    "stored, no audit": {"SESAME_STORE": True, "SESAME_AUDIT": False},
}


def ok(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("ok")


async def aok(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("ok")


def with_auth(view: Any) -> Any:
    """Wrap ``view`` in Django's session and authentication middleware."""
    return SessionMiddleware(DjangoAuthenticationMiddleware(view))


class ReportView(TokenAuthenticationMixin, View):
    def get(self, request):
        return HttpResponse("ok")


@override_settings(SESSION_ENGINE=SIGNED_COOKIES)
class QueryBudgetTests(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    # A stateless token:
    # 1. SELECT the user: the signature covers their password hash.
    STATELESS = 1

    # A one-time stateless token:
    # 1. SELECT the user.
    # 2. UPDATE last_login WHERE last_login is the value the token was signed
    #    with: the compare-and-set that consumes the token.
    ONE_TIME = 2

    # A stored token, with the audit trail:
    # 1. SELECT the link joined with its user.
    # 2. UPDATE the use count WHERE the link is still usable.
    # 3. INSERT the "used" event; on PostgreSQL, the UPDATE and the INSERT
    #    are one statement, a CTE.
    STORED_SQLITE = 3
    STORED_POSTGRESQL = 2

    # A stored token, without the audit trail:
    # 1. SELECT the link joined with its user.
    # 2. UPDATE the use count WHERE the link is still usable.
    STORED_NO_AUDIT = 2

    # Logging the user in adds, after any of the above:
    # 1. UPDATE last_login: Django's update_last_login receiver, which
    #    login() fires; except after a one-time token, whose consumption
    #    has just written last_login (sesame_db.backends.update_last_login).
    LOGIN = 1
    LOGIN_AFTER_ONE_TIME = 0

    def budget(self, kind: str, logs_in: bool) -> int:
        token_queries = {
            "stateless": self.STATELESS,
            "one-time": self.ONE_TIME,
            "stored": self.STORED_POSTGRESQL
            if connection.vendor == "postgresql"
            else self.STORED_SQLITE,
            "stored, no audit": self.STORED_NO_AUDIT,
        }[kind]
        if not logs_in:
            return token_queries
        if kind == "one-time":
            return token_queries + self.LOGIN_AFTER_ONE_TIME
        return token_queries + self.LOGIN

    def entry_points(self) -> dict[str, tuple[Any, bool, int]]:
        """Return each sync entry point: (handler, whether it logs in, success status)."""
        entry_points = {
            "middleware": (
                with_auth(AuthenticationMiddleware(ok)),
                True,
                302,
            ),
            "@authenticate": (with_auth(authenticate(ok)), False, 200),
            "@authenticate(permanent=True)": (
                with_auth(authenticate(permanent=True)(ok)),
                True,
                200,
            ),
            "LoginView": (with_auth(LoginView.as_view()), True, 302),
            "TokenAuthenticationMixin": (with_auth(ReportView.as_view()), False, 200),
            "TokenAuthenticationMixin, permanent": (
                with_auth(ReportView.as_view(permanent=True)),
                True,
                200,
            ),
        }
        if HAS_DRF:

            class WhoAmI(APIView):  # type: ignore[misc]
                authentication_classes = [SesameTokenAuthentication]

                def get(self, request):
                    return Response({"user": request.user.get_username()})

            entry_points["rest_framework"] = (WhoAmI.as_view(), False, 200)
        return entry_points

    def test_sync_entry_points(self):
        factory = RequestFactory()
        for kind, settings in KINDS.items():
            with override_settings(**settings):
                for name, (handler, logs_in, status) in self.entry_points().items():
                    # A new token each time: a one-time token is used up.
                    token = get_token(self.user)
                    request = factory.get("/", {"sesame": token})
                    with (
                        self.subTest(kind=kind, entry_point=name),
                        self.assertNumQueries(self.budget(kind, logs_in)),
                    ):
                        response = handler(request)
                    self.assertEqual(response.status_code, status)
                    self.user.refresh_from_db()

    async def test_async_entry_points(self):
        factory = AsyncRequestFactory()
        for kind, settings in KINDS.items():
            with override_settings(**settings):
                entry_points = {
                    "middleware": (with_auth(AuthenticationMiddleware(aok)), True, 302),
                    "@authenticate": (with_auth(authenticate(aok)), False, 200),
                    "@authenticate(permanent=True)": (
                        with_auth(authenticate(permanent=True)(aok)),
                        True,
                        200,
                    ),
                }
                for name, (handler, logs_in, status) in entry_points.items():
                    token = await self.aget_token()
                    request = factory.get("/", {"sesame": token})
                    async with self.assertNumQueriesAsync(self.budget(kind, logs_in)):
                        response = await handler(request)
                    self.assertEqual(response.status_code, status, (kind, name))
                    await self.user.arefresh_from_db()

    def channels_scope(self, token: str | None = None) -> dict[str, Any]:
        query_string = f"sesame={token}".encode() if token is not None else b""
        return {
            "type": "websocket",
            "path": "/ws/",
            "query_string": query_string,
            "client": ("192.0.2.1", 50000),
            "headers": [],
        }

    async def test_channels(self):
        users = []

        async def inner(scope, receive, send):
            users.append(scope["user"])

        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            pass

        application = SesameAuthMiddleware(inner, required=True)
        for kind, settings in KINDS.items():
            with override_settings(**settings):
                for name in ["SesameAuthMiddleware", "authenticate_connection"]:
                    token = await self.aget_token()
                    async with self.assertNumQueriesAsync(self.budget(kind, False)):
                        if name == "SesameAuthMiddleware":
                            await application(self.channels_scope(token), receive, send)
                        else:
                            users.append(
                                await authenticate_connection(
                                    self.channels_scope(), token
                                )
                            )
                    self.assertEqual(users.pop(), self.user, (kind, name))
                    await self.user.arefresh_from_db()

    async def aget_token(self) -> str:
        from asgiref.sync import sync_to_async

        return await sync_to_async(get_token)(self.user)


@override_settings(SESSION_ENGINE=SIGNED_COOKIES, SESAME_ONE_TIME=True)
class UpdateLastLoginTests(CreateUserMixin, TestCase):
    def login_with_middleware(self):
        handler = with_auth(AuthenticationMiddleware(ok))
        request = RequestFactory().get("/", {"sesame": get_token(self.user)})
        response = handler(request)
        self.assertEqual(response.status_code, 302)

    def test_one_time_token_writes_last_login_once(self):
        with self.assertNumQueries(QueryBudgetTests.ONE_TIME) as queries:
            self.login_with_middleware()
        self.assertEqual(len(last_login_updates(queries)), 1)
        # The consumption wrote the value that login() would have written.
        self.assertIn("WHERE", last_login_updates(queries)[0])

    def test_other_logins_still_update_last_login(self):
        # The password login of another user: Django's receiver runs.
        other = self.create_user("jane")
        with self.assertNumQueries(1) as queries:
            user_logged_in.send(sender=type(other), request=None, user=other)
        self.assertEqual(len(last_login_updates(queries)), 1)

    def test_changed_last_login_is_written(self):
        # A mark left by a consumption doesn't skip a later login() of the
        # same instance once last_login has changed.
        handler = with_auth(authenticate(ok))
        request = RequestFactory().get("/", {"sesame": get_token(self.user)})
        handler(request)
        user: Any = request.user
        user.last_login = None
        with self.assertNumQueries(1):
            user_logged_in.send(sender=type(user), request=None, user=user)

    def test_mark_is_used_once(self):
        handler = with_auth(authenticate(ok))
        request = RequestFactory().get("/", {"sesame": get_token(self.user)})
        handler(request)
        user = request.user
        with self.assertNumQueries(0):
            user_logged_in.send(sender=type(user), request=None, user=user)
        with self.assertNumQueries(1):
            user_logged_in.send(sender=type(user), request=None, user=user)

    def test_without_the_app(self):
        # Without "sesame_db" in INSTALLED_APPS, ready() doesn't replace
        # Django's receiver: login() writes last_login a second time.
        from django.contrib.auth.models import update_last_login as django_receiver

        self.assertTrue(user_logged_in.disconnect(dispatch_uid="update_last_login"))
        user_logged_in.connect(django_receiver, dispatch_uid="update_last_login")
        try:
            with self.assertNumQueries(QueryBudgetTests.ONE_TIME + 1) as queries:
                self.login_with_middleware()
            self.assertEqual(len(last_login_updates(queries)), 2)
        finally:
            user_logged_in.disconnect(dispatch_uid="update_last_login")
            user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")

    def test_replace_keeps_a_disconnected_receiver_disconnected(self):
        # A project that disconnected update_last_login on purpose keeps it
        # that way, whatever the order of the apps' ready().
        self.assertTrue(user_logged_in.disconnect(dispatch_uid="update_last_login"))
        try:
            self.assertFalse(replace_update_last_login())
            with self.assertNumQueries(0):
                user_logged_in.send(
                    sender=type(self.user), request=None, user=self.user
                )
        finally:
            user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")

    def test_replace_is_idempotent(self):
        # Replacing again leaves one receiver: one UPDATE per login.
        self.assertTrue(replace_update_last_login())
        with self.assertNumQueries(1):
            user_logged_in.send(sender=type(self.user), request=None, user=self.user)

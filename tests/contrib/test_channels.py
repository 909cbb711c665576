from __future__ import annotations

import contextlib

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.test import TestCase, TransactionTestCase, override_settings

pytest.importorskip("channels")

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator

from sesame_db.contrib.channels import (
    SesameAuthMiddleware,
    authenticate_connection,
    request_from_scope,
)
from sesame_db.models import TokenEvent
from sesame_db.utils import get_token, issue_token
from tests.mixins import CreateUserMixin, FailingDatabaseMixin, tamper


def username(user):
    return user.get_username() if user.is_authenticated else None


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Tell who the connection is; authenticate it with {"token": ...} messages."""

    async def connect(self):
        await self.accept()
        await self.send_json({"user": username(self.scope["user"])})

    async def receive_json(self, content):
        scope = content.get("scope", "")
        user = await authenticate_connection(self.scope, content["token"], scope)
        await self.send_json(
            {
                "authenticated": username(user) if user is not None else None,
                "user": username(self.scope.get("user"))
                if "user" in self.scope
                else None,
            }
        )


class FirstMessageConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """The token-in-first-message pattern: no token in the URL."""

    async def connect(self):
        self.authenticated = False
        await self.accept()

    async def receive_json(self, content):
        if not self.authenticated:
            user = await authenticate_connection(
                self.scope, content.get("token", ""), "chat"
            )
            if user is None:
                await self.close(code=4401)
                return
            self.authenticated = True
            await self.send_json({"hello": user.get_username()})
            return
        await self.send_json(
            {"echo": content, "user": self.scope["user"].get_username()}
        )


class SetUser:
    """Stand in for Channels' AuthMiddlewareStack: set a user from the "session"."""

    def __init__(self, inner, user):
        self.inner = inner
        self.user = user

    async def __call__(self, scope, receive, send):
        return await self.inner({**scope, "user": self.user}, receive, send)


@sync_to_async
def issue(user, scope="", **kwargs):
    return issue_token(user, scope, **kwargs)


@sync_to_async
def events(**filters):
    return list(TokenEvent.objects.filter(**filters).order_by("pk"))


class ChannelsTestCase(CreateUserMixin, TransactionTestCase):
    # Channels' consumers close database connections that are in a
    # transaction, such as TestCase's: commit for real instead.
    @contextlib.asynccontextmanager
    async def connect(
        self, application, path, client=("192.0.2.1", 50000), headers=None
    ):
        """Open a connection; yield the communicator, whether it's accepted, and the subprotocol or close code."""
        communicator = WebsocketCommunicator(application, path, headers=headers or [])
        if client is not None:
            communicator.scope["client"] = client
        connected, detail = await communicator.connect()
        try:
            yield communicator, connected, detail
        finally:
            await communicator.disconnect()

    async def whoami(self, path, middleware_kwargs=None, **kwargs):
        application = SesameAuthMiddleware(
            WhoAmIConsumer.as_asgi(), **(middleware_kwargs or {})
        )
        async with self.connect(application, path, **kwargs) as (
            communicator,
            connected,
            _,
        ):
            self.assertTrue(connected)
            return (await communicator.receive_json_from())["user"]


class SesameAuthMiddlewareTests(ChannelsTestCase):
    async def test_stateless_token(self):
        self.assertEqual(
            await self.whoami(f"/ws/?sesame={get_token(self.user)}"), "john"
        )

    async def test_stored_token(self):
        token, record = await issue(self.user)
        user = await self.whoami(
            f"/ws/chat/?room=1&sesame={token}",
            headers=[(b"user-agent", b"TestAgent/1.0")],
        )
        self.assertEqual(user, "john")
        [event] = await events(token=record, kind="used")
        self.assertEqual(
            (event.ip, event.user_agent, event.method, event.path),
            ("192.0.2.1", "TestAgent/1.0", "GET", "/ws/chat/"),
        )

    async def test_invalid_token(self):
        token, _ = await issue(self.user)
        self.assertIsNone(await self.whoami(f"/ws/?sesame={tamper(token)}"))
        self.assertIsNone(await self.whoami("/ws/?sesame=junk"))

    async def test_revoked_token(self):
        token, record = await issue(self.user)
        await sync_to_async(record.revoke)()
        self.assertIsNone(await self.whoami(f"/ws/?sesame={token}"))
        [event] = await events(token=record, kind="rejected")
        self.assertEqual(
            (event.reason, event.ip, event.path), ("revoked", "192.0.2.1", "/ws/")
        )

    async def test_used_up_token(self):
        token, _ = await issue(self.user, max_uses=1)
        self.assertEqual(await self.whoami(f"/ws/?sesame={token}"), "john")
        self.assertIsNone(await self.whoami(f"/ws/?sesame={token}"))

    async def test_scope(self):
        kwargs = {"middleware_kwargs": {"scope": "chat"}}
        scoped = get_token(self.user, "chat")
        self.assertEqual(await self.whoami(f"/ws/?sesame={scoped}", **kwargs), "john")
        self.assertIsNone(
            await self.whoami(f"/ws/?sesame={get_token(self.user)}", **kwargs)
        )
        self.assertIsNone(await self.whoami(f"/ws/?sesame={scoped}"))

    async def test_stored_scope(self):
        token, record = await issue(self.user, "chat")
        self.assertIsNone(await self.whoami(f"/ws/?sesame={token}"))
        [event] = await events(token=record, kind="rejected")
        self.assertEqual((event.reason, event.scope), ("wrong_scope", ""))
        kwargs = {"middleware_kwargs": {"scope": "chat"}}
        self.assertEqual(await self.whoami(f"/ws/?sesame={token}", **kwargs), "john")

    @override_settings(SESAME_MAX_AGE=300)
    async def test_max_age(self):
        import time_machine

        with time_machine.travel(1_700_000_000, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(120)
            self.assertEqual(await self.whoami(f"/ws/?sesame={token}"), "john")
            kwargs = {"middleware_kwargs": {"max_age": 60}}
            self.assertIsNone(await self.whoami(f"/ws/?sesame={token}", **kwargs))

    @override_settings(SESAME_TOKEN_NAME="login")
    async def test_token_name(self):
        token = get_token(self.user)
        self.assertEqual(await self.whoami(f"/ws/?login={token}"), "john")
        self.assertIsNone(await self.whoami(f"/ws/?sesame={token}"))

    async def test_no_token(self):
        self.assertIsNone(await self.whoami("/ws/"))
        self.assertIsNone(await self.whoami("/ws/?other=1"))

    async def test_no_token_keeps_the_session_user(self):
        other = await sync_to_async(self.create_user)("jane", email="jane@example.com")
        application = SetUser(SesameAuthMiddleware(WhoAmIConsumer.as_asgi()), other)
        async with self.connect(application, "/ws/") as (communicator, _, _):
            self.assertEqual((await communicator.receive_json_from())["user"], "jane")

    async def test_token_overrides_the_session_user(self):
        other = await sync_to_async(self.create_user)("jane", email="jane@example.com")
        application = SetUser(SesameAuthMiddleware(WhoAmIConsumer.as_asgi()), other)
        path = f"/ws/?sesame={get_token(self.user)}"
        async with self.connect(application, path) as (communicator, _, _):
            self.assertEqual((await communicator.receive_json_from())["user"], "john")
        async with self.connect(application, "/ws/?sesame=junk") as (
            communicator,
            _,
            _,
        ):
            self.assertIsNone((await communicator.receive_json_from())["user"])

    async def test_required(self):
        application = SesameAuthMiddleware(WhoAmIConsumer.as_asgi(), required=True)
        for path in ["/ws/", "/ws/?sesame=junk"]:
            async with self.connect(application, path) as (_, connected, code):
                self.assertEqual((connected, code), (False, 1008))
        path = f"/ws/?sesame={get_token(self.user)}"
        async with self.connect(application, path) as (communicator, connected, _):
            self.assertTrue(connected)
            self.assertEqual((await communicator.receive_json_from())["user"], "john")

    async def test_without_client_address(self):
        token, record = await issue(self.user)
        self.assertEqual(await self.whoami(f"/ws/?sesame={token}", client=None), "john")
        [event] = await events(token=record, kind="used")
        self.assertIsNone(event.ip)

    async def test_other_connections_pass_through(self):
        seen = []

        async def app(scope, receive, send):
            seen.append(scope)

        scope = {"type": "http", "path": "/", "query_string": b"sesame=junk"}
        await SesameAuthMiddleware(app)(scope, None, None)  # type: ignore[arg-type]
        self.assertIs(seen[0], scope)
        self.assertNotIn("user", scope)

    async def test_query_string_as_text(self):
        seen = []

        async def app(scope, receive, send):
            seen.append(scope["user"])

        token = get_token(self.user)
        scope = {"type": "websocket", "path": "/", "query_string": f"sesame={token}"}
        await SesameAuthMiddleware(app)(scope, None, None)  # type: ignore[arg-type]
        self.assertEqual(seen, [self.user])

    async def test_deny_ignores_other_messages(self):
        sent = []

        async def receive():
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message):
            sent.append(message)

        await SesameAuthMiddleware.deny(receive, send, code=1008)
        self.assertEqual(sent, [])

    async def test_callers_scope_is_not_changed(self):
        seen = []

        async def app(scope, receive, send):
            seen.append(scope)

        scope = {"type": "websocket", "path": "/", "query_string": b""}
        await SesameAuthMiddleware(app)(scope, None, None)  # type: ignore[arg-type]
        self.assertNotIn("user", scope)
        self.assertFalse(seen[0]["user"].is_authenticated)

    @override_settings(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "sesame-db-channels-tests",
            }
        },
        SESAME_RATE_LIMIT={"failures": 2, "period": 60},
    )
    async def test_rate_limited(self):
        caches["default"].clear()
        application = SesameAuthMiddleware(WhoAmIConsumer.as_asgi(), required=True)
        for _ in range(2):
            async with self.connect(application, "/ws/?sesame=junk") as (
                _,
                connected,
                code,
            ):
                self.assertEqual((connected, code), (False, 1008))
        path = f"/ws/?sesame={get_token(self.user)}"
        async with self.connect(application, path) as (_, connected, code):
            self.assertEqual((connected, code), (False, 1013))
        # Another client isn't limited.
        async with self.connect(application, path, client=("192.0.2.2", 1)) as (
            _,
            connected,
            _,
        ):
            self.assertTrue(connected)


class UnavailableTests(FailingDatabaseMixin, ChannelsTestCase):
    async def test_database_failure_closes_with_try_again_later(self):
        token, record = await issue(self.user)
        for required in [False, True]:
            application = SesameAuthMiddleware(
                WhoAmIConsumer.as_asgi(), required=required
            )
            path = f"/ws/?sesame={token}"
            with self.assertLogs("sesame_db", "ERROR"):
                async with (
                    self.afailing(),
                    self.connect(application, path) as (_, connected, code),
                ):
                    self.assertEqual((connected, code), (False, 1013))
        self.assertEqual(await sync_to_async(self.use)(record), (0, []))
        self.assertEqual(await self.whoami(f"/ws/?sesame={token}"), "john")


@pytest.mark.postgresql
class KilledConnectionTests(FailingDatabaseMixin, ChannelsTestCase):
    """Channels sends no request_finished signal: the middleware must close a broken connection."""

    databases = {"default", "other"}

    @sync_to_async
    def kill_connection(self):
        from django.db import connection, connections

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        # From another connection, and wait until it's gone.
        with connections["other"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        connections["other"].close()

    async def test_next_connection_reconnects(self):
        token, record = await issue(self.user)
        application = SesameAuthMiddleware(WhoAmIConsumer.as_asgi())
        path = f"/ws/?sesame={token}"
        await self.kill_connection()
        with self.assertLogs("sesame_db", "ERROR"):
            async with self.connect(application, path) as (_, connected, code):
                self.assertEqual((connected, code), (False, 1013))
        self.assertEqual(await self.whoami(path), "john")
        self.assertEqual(await sync_to_async(self.use)(record), (1, ["used"]))


class AuthenticateConnectionTests(ChannelsTestCase):
    async def test_first_message(self):
        application = FirstMessageConsumer.as_asgi()
        async with self.connect(application, "/ws/") as (communicator, connected, _):
            self.assertTrue(connected)
            await communicator.send_json_to({"token": get_token(self.user, "chat")})
            self.assertEqual(await communicator.receive_json_from(), {"hello": "john"})
            await communicator.send_json_to({"text": "hi"})
            self.assertEqual(
                await communicator.receive_json_from(),
                {"echo": {"text": "hi"}, "user": "john"},
            )

    async def test_first_message_invalid(self):
        application = FirstMessageConsumer.as_asgi()
        async with self.connect(application, "/ws/") as (communicator, _, _):
            await communicator.send_json_to({"token": get_token(self.user)})
            self.assertEqual(
                await communicator.receive_output(),
                {"type": "websocket.close", "code": 4401},
            )

    async def test_stored_token_is_audited(self):
        token, record = await issue(self.user, "chat", max_uses=1)
        application = FirstMessageConsumer.as_asgi()
        async with self.connect(application, "/ws/room/") as (communicator, _, _):
            await communicator.send_json_to({"token": token})
            self.assertEqual(await communicator.receive_json_from(), {"hello": "john"})
        [event] = await events(token=record, kind="used")
        self.assertEqual(
            (event.ip, event.path, event.scope), ("192.0.2.1", "/ws/room/", "chat")
        )
        # Used up: a second connection is refused.
        async with self.connect(application, "/ws/room/") as (communicator, _, _):
            await communicator.send_json_to({"token": token})
            self.assertEqual((await communicator.receive_output())["code"], 4401)

    async def test_sets_the_user_only_when_valid(self):
        application = SesameAuthMiddleware(WhoAmIConsumer.as_asgi())
        async with self.connect(application, "/ws/") as (communicator, _, _):
            self.assertEqual(await communicator.receive_json_from(), {"user": None})
            await communicator.send_json_to({"token": "junk"})
            self.assertEqual(
                await communicator.receive_json_from(),
                {"authenticated": None, "user": None},
            )
            await communicator.send_json_to({"token": get_token(self.user)})
            self.assertEqual(
                await communicator.receive_json_from(),
                {"authenticated": "john", "user": "john"},
            )

    async def test_direct_call(self):
        connection_scope = {
            "type": "websocket",
            "path": "/ws/",
            "client": ("192.0.2.9", 1),
        }
        self.assertIsNone(await authenticate_connection(connection_scope, "junk"))
        self.assertNotIn("user", connection_scope)
        user = await authenticate_connection(
            connection_scope, get_token(self.user, "x"), "x"
        )
        self.assertEqual(user, self.user)
        self.assertEqual(connection_scope["user"], self.user)


class RequestFromScopeTests(TestCase):
    def test_request(self):
        request = request_from_scope(
            {
                "type": "websocket",
                "path": "/ws/chat/",
                "query_string": b"sesame=secret",
                "client": ("2001:db8::1", 1234),
                "headers": [
                    (b"user-agent", b"Agent"),
                    (b"x-forwarded-for", b"198.51.100.1"),
                    (b"x-forwarded-for", b"198.51.100.2"),
                    (b"content-type", b"text/plain"),
                ],
            }
        )
        self.assertEqual(
            (request.method, request.path, request.path_info),
            ("GET", "/ws/chat/", "/ws/chat/"),
        )
        self.assertEqual(request.META["REMOTE_ADDR"], "2001:db8::1")
        self.assertEqual(request.META["HTTP_USER_AGENT"], "Agent")
        self.assertEqual(
            request.META["HTTP_X_FORWARDED_FOR"], "198.51.100.1,198.51.100.2"
        )
        self.assertEqual(request.META["CONTENT_TYPE"], "text/plain")
        # The token stays out of the request.
        self.assertEqual(dict(request.GET), {})
        self.assertNotIn("QUERY_STRING", request.META)

    def test_http_method(self):
        request = request_from_scope({"type": "http", "method": "POST", "path": "/"})
        self.assertEqual(request.method, "POST")
        self.assertNotIn("REMOTE_ADDR", request.META)

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_trusted_proxies(self):
        from sesame_db.store import client_ip

        request = request_from_scope(
            {
                "client": ("10.0.0.1", 1),
                "headers": [(b"x-forwarded-for", b"198.51.100.1")],
            }
        )
        self.assertEqual(client_ip(request), "198.51.100.1")

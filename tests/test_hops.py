"""
The thread hops that each async entry point costs to check one token.

Async code reaches the database and the cache through
:func:`~asgiref.sync.sync_to_async`, which runs sync code in a thread and
waits for it: a hop. Under an ASGI server, hops cost more than the queries
they run (see ``docs/load.rst``). :func:`count_hops` counts them by wrapping
:meth:`asgiref.sync.SyncToAsync.__call__`, which every hop goes through,
Django's included; this module pins the count of each async entry point for
each kind of token, as ``tests/test_query_budgets.py`` pins queries.

Requests get their session and user here rather than from Django's
``SessionMiddleware`` and ``AuthenticationMiddleware``: under ASGI, these
sync middleware take two hops per request of their own, which aren't
sesame_db's (``docs/load.rst`` counts a whole request).

"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import import_module
from typing import Any
from unittest import mock

from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.test import AsyncRequestFactory, TestCase, override_settings

from sesame_db.contrib.channels import SesameAuthMiddleware, authenticate_connection
from sesame_db.decorators import authenticate
from sesame_db.middleware import AuthenticationMiddleware
from sesame_db.models import IssuedToken
from sesame_db.utils import aget_user, get_token

from .mixins import CreateUserMixin, tamper

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"
RATE_LIMIT = {"failures": 1000, "period": 60}


@contextlib.contextmanager
def count_hops() -> Iterator[list[str]]:
    """Collect the name of the function of each ``sync_to_async`` call made in the block."""
    hops: list[str] = []
    original = SyncToAsync.__call__

    async def __call__(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        # Not repr(): a queryset's would query the database.
        func = self.func
        hops.append(getattr(func, "__qualname__", None) or type(func).__qualname__)
        return await original(self, *args, **kwargs)

    with mock.patch.object(SyncToAsync, "__call__", __call__):
        yield hops


async def aok(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("ok")


class CountHopsTests(TestCase):
    async def test_counts_each_hop(self):
        def double(value):
            return 2 * value

        with count_hops() as hops:
            self.assertEqual(await sync_to_async(double)(21), 42)
            await sync_to_async(double)(1)
        self.assertEqual(
            hops, ["CountHopsTests.test_counts_each_hop.<locals>.double"] * 2
        )

    async def test_counts_the_async_orm(self):
        with count_hops() as hops:
            await IssuedToken.objects.acount()
        self.assertEqual(hops, ["QuerySet.count"])


@override_settings(SESSION_ENGINE=SIGNED_COOKIES)
class HopBudgetTests(CreateUserMixin, TestCase):
    # A stateless token:
    # 1. SELECT the user, with the async ORM.
    STATELESS = 1

    # A one-time stateless token:
    # 1. SELECT the user, with the async ORM.
    # 2. UPDATE last_login, the compare-and-set, with the async ORM.
    ONE_TIME = 2

    # A stored token, audited or not, whatever SESAME_RATE_LIMIT says:
    # 1. the rate limit's counter, the redemption (SELECT, UPDATE, INSERT of
    #    the "used" event) and giving the attempt back, in one thread.
    STORED = 1

    # SESAME_RATE_LIMIT adds, to a stateless token:
    # 1. counting the attempt in the cache, before the check;
    # 2. giving it back once the token is valid.
    RATE_LIMITED = 2

    # Logging the user in adds (Django's alogin()):
    # 1. the sync receivers of user_logged_in, such as update_last_login.
    LOGIN = 1

    KINDS: dict[str, tuple[dict[str, Any], int]] = {
        "stateless": ({}, STATELESS),
        "one-time": ({"SESAME_ONE_TIME": True}, ONE_TIME),
        "stored": ({"SESAME_STORE": True}, STORED),
        "stored, no audit": ({"SESAME_STORE": True, "SESAME_AUDIT": False}, STORED),
    }

    def budget(self, kind: str, rate_limit: bool, logs_in: bool) -> int:
        settings, hops = self.KINDS[kind]
        if rate_limit and not settings.get("SESAME_STORE"):
            hops += self.RATE_LIMITED
        return hops + (self.LOGIN if logs_in else 0)

    def request(self, token: str) -> Any:
        request = AsyncRequestFactory().get("/", {"sesame": token})
        # What Django's session and authentication middleware would set.
        request.session = import_module(settings.SESSION_ENGINE).SessionStore()
        request.user = AnonymousUser()
        return request

    async def aget_token(self) -> str:
        return await sync_to_async(get_token)(self.user)

    def entry_points(self) -> dict[str, tuple[Any, bool]]:
        """Return each async entry point: (coroutine function of a token, whether it logs in)."""
        middleware = AuthenticationMiddleware(aok)
        decorated = authenticate(aok)
        permanent = authenticate(permanent=True)(aok)
        channels = SesameAuthMiddleware(self.inner, required=True)

        async def channels_middleware(token):
            await channels(self.channels_scope(token), self.receive, self.send)

        return {
            "aget_user": (aget_user, False),
            "middleware": (lambda token: middleware(self.request(token)), True),
            "@authenticate": (lambda token: decorated(self.request(token)), False),
            "@authenticate(permanent=True)": (
                lambda token: permanent(self.request(token)),
                True,
            ),
            "channels SesameAuthMiddleware": (channels_middleware, False),
            "channels authenticate_connection": (
                lambda token: authenticate_connection(self.channels_scope(), token),
                False,
            ),
        }

    def channels_scope(self, token: str | None = None) -> dict[str, Any]:
        query_string = f"sesame={token}".encode() if token is not None else b""
        return {
            "type": "websocket",
            "path": "/ws/",
            "query_string": query_string,
            "client": ("192.0.2.1", 50000),
            "headers": [],
        }

    async def inner(self, scope, receive, send):
        self.users.append(scope["user"])

    async def receive(self):
        return {"type": "websocket.connect"}

    async def send(self, message):
        self.sent.append(message)

    def setUp(self):
        super().setUp()
        self.users: list[Any] = []
        self.sent: list[Any] = []

    async def test_valid_tokens(self):
        for kind, (kind_settings, _) in self.KINDS.items():
            for rate_limit in [None, RATE_LIMIT]:
                with override_settings(**kind_settings, SESAME_RATE_LIMIT=rate_limit):
                    for name, (check, logs_in) in self.entry_points().items():
                        token = await self.aget_token()
                        budget = self.budget(kind, rate_limit is not None, logs_in)
                        with (
                            self.subTest(
                                kind=kind, rate_limit=rate_limit, entry_point=name
                            ),
                            count_hops() as hops,
                        ):
                            await check(token)
                            self.assertEqual(len(hops), budget, hops)
                        await self.user.arefresh_from_db()

    async def test_stored_use_hops_once(self):
        # The database work of a stored use, its audit included, in one hop,
        # even with the rate limit, whose counter is in the cache.
        with override_settings(SESAME_STORE=True, SESAME_RATE_LIMIT=RATE_LIMIT):
            token = await self.aget_token()
            with count_hops() as hops:
                self.assertEqual(await aget_user(token), self.user)
        self.assertEqual(hops, ["_redeem"])
        event = await self.aget_event("used")
        self.assertEqual(event.token.use_count, 1)

    async def aget_event(self, kind):
        from sesame_db.models import TokenEvent

        return await TokenEvent.objects.select_related("token").aget(kind=kind)

    async def test_rejected_stored_token_hops_once(self):
        # A revoked link: the rejection and its audit event in the same hop.
        with override_settings(SESAME_STORE=True, SESAME_RATE_LIMIT=RATE_LIMIT):
            token = await self.aget_token()
            await sync_to_async(IssuedToken.objects.all().revoke)()
            with count_hops() as hops:
                self.assertIsNone(await aget_user(token))
        self.assertEqual(hops, ["_redeem"])
        event = await self.aget_event("rejected")
        self.assertEqual(event.reason, "revoked")

    async def test_forged_tokens(self):
        # A wrong MAC is found with no query, hence no hop, unless the rate
        # limit counts the attempt. A stateless token's signature covers the
        # user's password hash: its user is loaded first.
        for kind, settings_, forged_hops in [
            ("stored", {"SESAME_STORE": True}, 0),
            ("stateless", {}, self.STATELESS),
        ]:
            for rate_limit, extra in [(None, 0), (RATE_LIMIT, 1)]:
                with (
                    self.subTest(kind=kind, rate_limit=rate_limit),
                    override_settings(**settings_, SESAME_RATE_LIMIT=rate_limit),
                ):
                    token = tamper(await self.aget_token())
                    with count_hops() as hops:
                        self.assertIsNone(await aget_user(token))
                    self.assertEqual(len(hops), forged_hops + extra, hops)

    async def test_rejected_entry_points(self):
        # A rejected token costs an entry point no more than aget_user().
        with override_settings(SESAME_STORE=True):
            token = await self.aget_token()
            await sync_to_async(IssuedToken.objects.all().revoke)()
            decorated = authenticate(aok)
            with count_hops() as hops, self.assertRaises(PermissionDenied):
                await decorated(self.request(token))
            self.assertEqual(hops, ["_redeem"])


class WholeRequestTests(CreateUserMixin, TestCase):
    # Through Django's ASGI handler, with the test project's middleware:
    # Django takes hops of its own for each sync middleware and signal, and
    # a token adds its check's, the same for an async view as for a sync
    # view, which Django runs in a thread.
    async def hops_of(self, path: str, **query: str) -> list[str]:
        with count_hops() as hops:
            response = await self.async_client.get(path, query)
        self.assertEqual(response.status_code, 200)
        return hops

    async def test_stored_token_adds_one_hop(self):
        with override_settings(SESAME_STORE=True, SESAME_RATE_LIMIT=RATE_LIMIT):
            token = await sync_to_async(get_token)(self.user)
            anonymous = await self.hops_of("/aoptional/")
            authenticated = await self.hops_of("/aoptional/", sesame=token)
        self.assertEqual(len(authenticated), len(anonymous) + 1)
        self.assertEqual(
            [hop for hop in authenticated if hop not in anonymous], ["_redeem"]
        )

    async def test_stateless_token_adds_one_hop(self):
        token = await sync_to_async(get_token)(self.user)
        anonymous = await self.hops_of("/aoptional/")
        authenticated = await self.hops_of("/aoptional/", sesame=token)
        self.assertEqual(len(authenticated), len(anonymous) + 1)

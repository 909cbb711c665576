from __future__ import annotations

import base64
import datetime
from typing import ClassVar
from unittest import mock

import time_machine
from asgiref.sync import async_to_sync
from django.contrib.auth import (
    aauthenticate,
    authenticate,
    get_user_model,
)
from django.contrib.auth import (
    get_user as get_session_user,
)
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.hashers import make_password
from django.contrib.auth.signals import user_login_failed
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest
from django.test import (
    RequestFactory,
    SimpleTestCase,
    TestCase,
    override_settings,
)

from sesame_db import utils as store_utils
from sesame_db.backends import ModelBackend, SesameBackendMixin
from sesame_db.backends import aauthenticate as sesame_aauthenticate
from sesame_db.backends import authenticate as sesame_authenticate
from sesame_db.models import TokenEvent
from sesame_db.signals import token_rejected, token_used
from sesame_db.tokens import MAX_TOKEN_LENGTH, create_token
from sesame_db.tokens_v1 import create_token as create_token_v1
from sesame_db.verify import capture

from .mixins import AsyncNumQueriesMixin, CaptureLogMixin, CreateUserMixin

BACKEND = "sesame_db.backends.ModelBackend"

# What Django shows to user_login_failed receivers instead of a secret.
CLEANSED = "********************"


def tampered(token):
    # Flip a bit in the last byte of the signature; the token stays well-formed.
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[-1] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


class BackendTestCase(AsyncNumQueriesMixin, CaptureLogMixin, CreateUserMixin, TestCase):
    # A valid token costs:
    # 1. SELECT the user, to compute the signature from its password hash.
    NUM_QUERIES = 1

    # A one-time token costs:
    # 1. SELECT the user, to compute the signature from its password hash and
    #    its last login;
    # 2. UPDATE its last login, only if it's still the one that was signed.
    NUM_QUERIES_ONE_TIME = 2

    # A token rejected before loading the user (malformed, expired) costs
    # nothing.
    NUM_QUERIES_REJECTED_EARLY = 0

    def setUp(self):
        super().setUp()
        self.request = RequestFactory().get("/")
        self.token = create_token(self.user)


class TestAuthenticate(BackendTestCase):
    def test_sesame_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            user = authenticate(self.request, sesame_token=self.token)
        self.assertEqual(user, self.user)
        assert user is not None
        # login() needs to know which backend authenticated the user.
        self.assertEqual(user.backend, BACKEND)

    def test_legacy_sesame_keyword(self):
        # django-sesame's keyword still works.
        with self.assertNumQueries(self.NUM_QUERIES):
            user = authenticate(self.request, sesame=self.token)
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, BACKEND)

    def test_sesame_token_takes_precedence(self):
        user = authenticate(self.request, sesame_token=self.token, sesame="invalid")
        self.assertEqual(user, self.user)

    def test_without_request(self):
        self.assertEqual(authenticate(sesame_token=self.token), self.user)

    def test_scope(self):
        token = create_token(self.user, "read")
        self.assertEqual(
            authenticate(self.request, sesame_token=token, scope="read"), self.user
        )
        self.assertIsNone(authenticate(self.request, sesame_token=token))

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(1_700_000_000, tick=False) as traveller:
            token = create_token(self.user)
            traveller.shift(120)
            self.assertEqual(authenticate(self.request, sesame_token=token), self.user)
            self.assertIsNone(
                authenticate(self.request, sesame_token=token, max_age=60)
            )
            self.assertIsNone(
                authenticate(
                    self.request,
                    sesame_token=token,
                    max_age=datetime.timedelta(minutes=1),
                )
            )

    def test_v1_token(self):
        token = create_token_v1(self.user)
        self.assertEqual(authenticate(self.request, sesame_token=token), self.user)

    def test_invalid_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            self.assertIsNone(
                authenticate(self.request, sesame_token=tampered(self.token))
            )

    def test_malformed_token(self):
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(authenticate(self.request, sesame_token="!!!"))

    def test_inactive_user(self):
        self.user.is_active = False
        self.user.save()
        self.assertIsNone(authenticate(self.request, sesame_token=self.token))

    def test_deleted_user(self):
        self.user.delete()
        self.assertIsNone(authenticate(self.request, sesame_token=self.token))

    def test_no_token(self):
        with self.assertNumQueries(0):
            self.assertIsNone(ModelBackend().authenticate(self.request))

    def test_username_and_password_go_to_other_backends(self):
        user = authenticate(self.request, username="john", password="letmein")
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, "django.contrib.auth.backends.ModelBackend")

    @override_settings(AUTHENTICATION_BACKENDS=[BACKEND])
    def test_username_and_password_rejected(self):
        self.assertIsNone(
            authenticate(self.request, username="john", password="letmein")
        )


class TestAAuthenticate(BackendTestCase):
    # django-sesame's backend only overrides authenticate(): on Django 5.2,
    # the inherited ModelBackend.aauthenticate(username, password) returns
    # None for every token.

    async def test_sesame_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aauthenticate(self.request, sesame_token=self.token)
        assert user is not None
        self.assertEqual(user.pk, self.user.pk)
        self.assertEqual(user.backend, BACKEND)

    async def test_legacy_sesame_keyword(self):
        user = await aauthenticate(self.request, sesame=self.token)
        self.assertEqual(user, self.user)

    async def test_backend_method(self):
        user = await ModelBackend().aauthenticate(self.request, sesame_token=self.token)
        self.assertEqual(user, self.user)

    async def test_scope(self):
        token = create_token(self.user, "read")
        self.assertEqual(
            await aauthenticate(self.request, sesame_token=token, scope="read"),
            self.user,
        )
        self.assertIsNone(await aauthenticate(self.request, sesame_token=token))

    async def test_invalid_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aauthenticate(self.request, sesame_token=tampered(self.token))
        self.assertIsNone(user)

    async def test_malformed_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_REJECTED_EARLY):
            user = await aauthenticate(self.request, sesame_token="!!!")
        self.assertIsNone(user)

    async def test_inactive_user(self):
        self.user.is_active = False
        await self.user.asave()
        self.assertIsNone(await aauthenticate(self.request, sesame_token=self.token))

    async def test_deleted_user(self):
        await self.user.adelete()
        self.assertIsNone(await aauthenticate(self.request, sesame_token=self.token))

    async def test_no_token(self):
        self.assertIsNone(await ModelBackend().aauthenticate(self.request))


@override_settings(SESAME_PRIMARY_KEY_FIELD="username")
class TestPrimaryKeyField(BackendTestCase):
    def test_token_contains_username(self):
        self.assertEqual(authenticate(self.request, sesame_token=self.token), self.user)
        # Another user with the same primary key in another field cannot
        # use the token.
        self.user.username = "jane"
        self.user.save()
        self.assertIsNone(authenticate(self.request, sesame_token=self.token))

    async def test_token_contains_username_async(self):
        self.assertEqual(
            await aauthenticate(self.request, sesame_token=self.token), self.user
        )

    def test_get_user_loads_by_primary_key(self):
        # Sessions store the primary key, whatever SESAME_PRIMARY_KEY_FIELD.
        self.assertEqual(ModelBackend().get_user(self.user.pk), self.user)

    async def test_aget_user_loads_by_primary_key(self):
        self.assertEqual(await ModelBackend().aget_user(self.user.pk), self.user)

    def test_session(self):
        user = authenticate(self.request, sesame_token=self.token)
        assert user is not None
        self.client.force_login(user, backend=BACKEND)
        request = HttpRequest()
        request.session = self.client.session
        self.assertEqual(get_session_user(request), self.user)


class TestUserLoginFailed(BackendTestCase):
    def setUp(self):
        super().setUp()
        self.failed_credentials: list[dict[str, object]] = []

        def receiver(sender, credentials, **kwargs):
            self.failed_credentials.append(credentials)

        user_login_failed.connect(receiver, weak=False)
        self.addCleanup(user_login_failed.disconnect, receiver)

    def assertTokenHidden(self, token):
        self.assertEqual(len(self.failed_credentials), 1)
        credentials = self.failed_credentials[0]
        self.assertEqual(credentials["sesame_token"], CLEANSED)
        self.assertNotIn(token, repr(credentials))
        for value in credentials.values():
            self.assertNotIn(token, str(value))

    def test_invalid_token(self):
        token = tampered(self.token)
        self.assertIsNone(authenticate(self.request, sesame_token=token))
        self.assertEqual(self.failed_credentials, [{"sesame_token": CLEANSED}])
        self.assertTokenHidden(token)

    def test_valid_token_for_inactive_user(self):
        self.user.is_active = False
        self.user.save()
        self.assertIsNone(authenticate(self.request, sesame_token=self.token))
        self.assertTokenHidden(self.token)

    def test_scope_mismatch(self):
        self.assertIsNone(
            authenticate(self.request, sesame_token=self.token, scope="read")
        )
        self.assertEqual(
            self.failed_credentials, [{"sesame_token": CLEANSED, "scope": "read"}]
        )
        self.assertTokenHidden(self.token)

    async def test_invalid_token_async(self):
        token = tampered(self.token)
        self.assertIsNone(await aauthenticate(self.request, sesame_token=token))
        self.assertEqual(self.failed_credentials, [{"sesame_token": CLEANSED}])
        self.assertTokenHidden(token)

    def test_valid_token(self):
        authenticate(self.request, sesame_token=self.token)
        self.assertEqual(self.failed_credentials, [])


@override_settings(SESAME_ONE_TIME=True)
class TestOneTime(BackendTestCase):
    def test_second_use_rejected(self):
        with self.assertNumQueries(self.NUM_QUERIES_ONE_TIME):
            user = authenticate(self.request, sesame_token=self.token)
        self.assertEqual(user, self.user)
        with self.assertNumQueries(self.NUM_QUERIES):
            self.assertIsNone(authenticate(self.request, sesame_token=self.token))

    async def test_second_use_rejected_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_ONE_TIME):
            user = await aauthenticate(self.request, sesame_token=self.token)
        self.assertEqual(user, self.user)
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aauthenticate(self.request, sesame_token=self.token)
        self.assertIsNone(user)

    def test_last_login_updated(self):
        self.assertIsNone(self.user.last_login)
        with time_machine.travel(1_700_000_000, tick=False):
            user = authenticate(self.request, sesame_token=self.token)
        expected = datetime.datetime.fromtimestamp(1_700_000_000, datetime.timezone.utc)
        assert user is not None
        self.assertEqual(user.last_login, expected)
        self.user.refresh_from_db()
        self.assertEqual(self.user.last_login, expected)

    def test_new_token_after_use(self):
        authenticate(self.request, sesame_token=self.token)
        self.user.refresh_from_db()
        token = create_token(self.user)
        self.assertNotEqual(token, self.token)
        self.assertEqual(authenticate(self.request, sesame_token=token), self.user)

    def test_concurrent_use_rejected(self):
        # Two requests load the user and verify the token before either one
        # updates the last login: the conditional update lets only one in.
        first = get_user_model().objects.get(pk=self.user.pk)
        second = get_user_model().objects.get(pk=self.user.pk)
        with mock.patch.object(ModelBackend, "get_token_user", return_value=first):
            self.assertEqual(authenticate(self.request, sesame_token=self.token), first)
        with (
            mock.patch.object(ModelBackend, "get_token_user", return_value=second),
            self.captureLogs(),
            # 1. UPDATE the last login, which matches no row.
            self.assertNumQueries(1),
        ):
            self.assertIsNone(authenticate(self.request, sesame_token=self.token))
        self.assertLogsContain(
            f"One-time token already used by user pk = {self.user.pk!r}"
        )
        self.user.refresh_from_db()
        self.assertEqual(self.user.last_login, first.last_login)

    async def test_concurrent_use_rejected_async(self):
        first = await get_user_model().objects.aget(pk=self.user.pk)
        second = await get_user_model().objects.aget(pk=self.user.pk)
        with mock.patch.object(ModelBackend, "aget_token_user", return_value=first):
            self.assertEqual(
                await aauthenticate(self.request, sesame_token=self.token), first
            )
        with mock.patch.object(ModelBackend, "aget_token_user", return_value=second):
            async with self.assertNumQueriesAsync(1):
                user = await aauthenticate(self.request, sesame_token=self.token)
        self.assertIsNone(user)


class TestLogging(BackendTestCase):
    """Each rejection is explained at DEBUG level, without the token."""

    def assertRejectionLogged(self, token, message, **credentials):
        with self.captureLogs():
            self.assertIsNone(
                authenticate(self.request, sesame_token=token, **credentials)
            )
        self.assertLogsContain(message)
        for record in self.logs.records:
            self.assertEqual(record.levelname, "DEBUG")
        self.assertTokenNotLogged(token)

    def assertTokenNotLogged(self, token):
        for line in self.logs.output:
            self.assertNotIn(token, line)
        for record in self.logs.records:
            self.assertNotIn(token, record.getMessage())
            self.assertNotIn(token, repr(record.args))

    def test_valid(self):
        with self.captureLogs():
            authenticate(self.request, sesame_token=self.token)
        self.assertLogsContain(
            f"Valid token for user pk = {self.user.pk!r} in scope ''"
        )
        self.assertTokenNotLogged(self.token)

    def test_malformed(self):
        self.assertRejectionLogged(
            "not a token", "Bad token: doesn't match a supported format"
        )

    def test_cannot_decode(self):
        self.assertRejectionLogged("AAAAA", "Bad token: cannot decode token")

    def test_too_long(self):
        self.assertRejectionLogged(
            "A" * (MAX_TOKEN_LENGTH + 1), "Bad token: too long (1025 characters)"
        )

    def test_bad_signature(self):
        self.assertRejectionLogged(
            tampered(self.token),
            f"Invalid token for user pk = {self.user.pk!r} in scope ''",
        )

    def test_password_change(self):
        self.user.set_password("changed")
        self.user.save()
        self.assertRejectionLogged(
            self.token, f"Invalid token for user pk = {self.user.pk!r} in scope ''"
        )

    def test_wrong_scope(self):
        self.assertRejectionLogged(
            self.token,
            f"Invalid token for user pk = {self.user.pk!r} in scope 'read'",
            scope="read",
        )

    def test_v1_scope(self):
        self.assertRejectionLogged(
            create_token_v1(self.user),
            "Invalid token: v1 tokens don't support scope 'read'",
            scope="read",
        )

    @override_settings(SESAME_MAX_AGE=300)
    def test_expired(self):
        with time_machine.travel(1_700_000_000, tick=False) as traveller:
            token = create_token(self.user)
            traveller.shift(400)
            self.assertRejectionLogged(token, "Expired token: age = 400 seconds")

    def test_unknown_user(self):
        pk = self.user.pk
        self.user.delete()
        self.assertRejectionLogged(self.token, f"Unknown or inactive user: pk = {pk!r}")

    def test_inactive_user(self):
        self.user.is_active = False
        self.user.save()
        self.assertRejectionLogged(
            self.token, f"Unknown or inactive user: pk = {self.user.pk!r}"
        )

    @override_settings(SESAME_ONE_TIME=True)
    def test_used_up(self):
        # Once the token is used, its signature no longer matches.
        authenticate(self.request, sesame_token=self.token)
        self.assertRejectionLogged(
            self.token, f"Invalid token for user pk = {self.user.pk!r} in scope ''"
        )

    async def test_logging_async(self):
        token = tampered(self.token)
        with self.captureLogs():
            self.assertIsNone(await aauthenticate(self.request, sesame_token=token))
        self.assertLogsContain(f"Invalid token for user pk = {self.user.pk!r}")
        self.assertTokenNotLogged(token)


@override_settings(AUTH_USER_MODEL="tests.UUIDUser")
class TestUUIDUser(BackendTestCase):
    def test_authenticate(self):
        self.assertEqual(authenticate(self.request, sesame_token=self.token), self.user)

    async def test_aauthenticate(self):
        self.assertEqual(
            await aauthenticate(self.request, sesame_token=self.token), self.user
        )


@override_settings(AUTH_USER_MODEL="tests.StrUser")
class TestStrUser(BackendTestCase):
    def test_authenticate(self):
        self.assertEqual(authenticate(self.request, sesame_token=self.token), self.user)


@override_settings(AUTH_USER_MODEL="tests.BigUser")
class TestBigUser(BackendTestCase):
    def test_authenticate(self):
        self.assertEqual(authenticate(self.request, sesame_token=self.token), self.user)


# Custom backends built on the mixin, with users kept in memory.


def make_user(pk=1, **kwargs):
    kwargs.setdefault("username", "john")
    kwargs.setdefault("password", make_password("letmein"))
    return get_user_model()(pk=pk, **kwargs)


# Like sesame_db's ModelBackend: authenticate() takes a token.
class InMemoryBackend(SesameBackendMixin, BaseBackend):  # type: ignore[misc]
    users: ClassVar[dict[object, object]] = {}

    def get_user(self, user_id):
        return self.users.get(user_id)


class PlainBackend(SesameBackendMixin):
    """A backend that doesn't inherit BaseBackend: it has no aget_user()."""

    users: ClassVar[dict[object, object]] = {}

    def get_user(self, user_id):
        return self.users.get(user_id)


# Like sesame_db's ModelBackend: authenticate() takes a token.
class TokenLoaderBackend(SesameBackendMixin, BaseBackend):  # type: ignore[misc]
    """A backend that loads token users with get_token_user(), as documented."""

    users: ClassVar[dict[object, object]] = {}

    def get_user(self, user_id):
        # Sessions aren't supported by this backend.
        return None

    def get_token_user(self, user_key):
        return self.users.get(user_key)


class TestSesameBackendMixin(SimpleTestCase):
    def setUp(self):
        self.user = make_user()
        self.token = create_token(self.user)
        users = {self.user.pk: self.user}
        for backend_class in [InMemoryBackend, PlainBackend, TokenLoaderBackend]:
            patcher = mock.patch.object(backend_class, "users", users)
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_authenticate(self):
        for backend_class in [InMemoryBackend, PlainBackend]:
            with self.subTest(backend=backend_class.__name__):
                backend = backend_class()
                self.assertIs(
                    backend.authenticate(None, sesame_token=self.token), self.user
                )
                self.assertIsNone(backend.authenticate(None, sesame_token="AAAAA"))
                self.assertIsNone(backend.authenticate(None))

    async def test_aauthenticate(self):
        for backend_class in [InMemoryBackend, PlainBackend]:
            with self.subTest(backend=backend_class.__name__):
                backend = backend_class()
                self.assertIs(
                    await backend.aauthenticate(None, sesame_token=self.token),
                    self.user,
                )
                self.assertIsNone(
                    await backend.aauthenticate(None, sesame_token="AAAAA")
                )

    async def test_aget_token_user_falls_back_to_get_token_user(self):
        backend = PlainBackend()
        self.assertFalse(hasattr(backend, "aget_user"))
        self.assertIs(await backend.aget_token_user(self.user.pk), self.user)
        self.assertIsNone(await backend.aget_token_user(2))

    def test_unknown_user(self):
        token = create_token(make_user(2))
        self.assertIsNone(InMemoryBackend().authenticate(None, sesame_token=token))

    def test_overridden_get_token_user(self):
        backend = TokenLoaderBackend()
        self.assertIs(backend.authenticate(None, sesame_token=self.token), self.user)

    # Regression: SesameBackendMixin.aget_token_user() preferred
    # self.aget_user(), which every subclass of Django's BaseBackend has (a
    # sync_to_async() wrapper of get_user()), so the async path ignored an
    # overridden get_token_user().
    def test_overridden_get_token_user_async(self):
        backend = TokenLoaderBackend()
        self.assertIs(
            async_to_sync(backend.aauthenticate)(None, sesame_token=self.token),
            self.user,
        )


# sesame_db.backends.authenticate() against django.contrib.auth.authenticate():
# the same calls, in the same order, with the same outcome, for every token
# and many lists of backends. The backends below record what happens to them.

EVENTS: list[tuple[object, ...]] = []


class Recording:
    def __init__(self):
        EVENTS.append(("init", type(self).__name__))

    def record(self, credentials):
        EVENTS.append(("authenticate", type(self).__name__, sorted(credentials)))


class KwargsBackend(Recording, BaseBackend):
    """Accepts any credentials and returns None."""

    def authenticate(self, request, **credentials):
        self.record(credentials)


class PasswordBackend(Recording, BaseBackend):
    """Doesn't accept a token: Django skips it."""

    def authenticate(self, request, username=None, password=None):  # type: ignore[override]
        self.record({"username": username})


class AcceptBackend(Recording, BaseBackend):
    """Accepts any token, as the user "other"."""

    def authenticate(self, request, sesame_token=None, scope="", max_age=None):  # type: ignore[override]
        self.record({"sesame_token": sesame_token})
        return get_user_model().objects.get(username="other")


class DenyBackend(Recording, BaseBackend):
    """Stops authentication: no backend after it gets its turn."""

    def authenticate(self, request, sesame_token=None, **credentials):
        self.record(credentials)
        raise PermissionDenied


class InitModelBackend(Recording, DjangoModelBackend):
    """Django's ModelBackend, with an __init__() that has an effect."""


class DenyingSesameBackend(ModelBackend):
    """sesame_db's backend, which stops authentication when a user is found."""

    def user_can_authenticate(self, user):
        EVENTS.append(("user_can_authenticate", user.pk))
        raise PermissionDenied


class OverridingSesameBackend(Recording, ModelBackend):  # type: ignore[misc]
    """sesame_db's backend, with authenticate() overridden: Django inspects it."""

    def authenticate(  # type: ignore[override]
        self, request, sesame=None, scope="", max_age=None, *, sesame_token=None
    ):
        self.record({"sesame_token": sesame_token})
        return super().authenticate(
            request, scope=scope, max_age=max_age, sesame_token=sesame_token
        )


def path(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


DJANGO = "django.contrib.auth.backends.ModelBackend"
ALLOW_ALL = "django.contrib.auth.backends.AllowAllUsersModelBackend"
BACKEND_LISTS = [
    [DJANGO, BACKEND],
    [BACKEND],
    [BACKEND, DJANGO],
    [ALLOW_ALL, path(InitModelBackend), BACKEND],
    [path(KwargsBackend), BACKEND],
    [path(PasswordBackend), path(AcceptBackend), BACKEND],
    [BACKEND, path(AcceptBackend)],
    [path(DenyBackend), BACKEND],
    [BACKEND, path(DenyBackend), path(AcceptBackend)],
    [path(DenyingSesameBackend), BACKEND],
    [path(OverridingSesameBackend), path(KwargsBackend)],
    [path(PasswordBackend)],
    [DJANGO],
]


class TestLikeDjangoAuthenticate(CreateUserMixin, TestCase):
    """sesame_db.backends.authenticate() behaves as django.contrib.auth.authenticate() with a token."""

    def setUp(self):
        super().setUp()
        self.other = self.create_user("other", email="other@example.com")
        stored = store_utils.issue_token(self.user)[0]
        stateless = create_token(self.user)
        self.tokens = {
            "valid": (stateless, ""),
            "forged": (tampered(stateless), ""),
            "wrong scope": (stateless, "read"),
            "stored": (stored, ""),
            "forged stored": (
                stored[:-2] + ("AA" if stored[-2:] != "AA" else "BB"),
                "",
            ),
            "stored, wrong scope": (stored, "read"),
            "not a token": ("not a token", ""),
        }
        self.request = RequestFactory().get("/")
        self.signals: list[tuple[object, ...]] = []

        def on_failed(sender, credentials, request, **kwargs):
            self.signals.append(("user_login_failed", sender, credentials, request))

        def on_used(sender, user, **kwargs):
            self.signals.append(("token_used", sender, user.pk))

        def on_rejected(sender, reason, **kwargs):
            self.signals.append(("token_rejected", sender, reason))

        user_login_failed.connect(on_failed, weak=False)
        self.addCleanup(user_login_failed.disconnect, on_failed)
        token_used.connect(on_used, weak=False)
        self.addCleanup(token_used.disconnect, on_used)
        token_rejected.connect(on_rejected, weak=False)
        self.addCleanup(token_rejected.disconnect, on_rejected)
        del EVENTS[:]

    def outcome(self, call, token, scope):
        """Run ``call`` and describe everything that it did."""
        caches["default"].clear()  # the audit's bound on repeated rejections
        del EVENTS[:], self.signals[:]
        events = TokenEvent.objects.count()
        # token_used is sent on commit.
        with self.captureOnCommitCallbacks(execute=True), capture() as rejections:
            try:
                user = call(self.request, sesame_token=token, scope=scope, max_age=None)
            except Exception as exc:
                user = exc
        result: object = None
        if isinstance(user, Exception):
            result = (type(user), str(user))
        elif user is not None:
            result = (user.pk, user.backend)
        return {
            "result": result,
            "calls": list(EVENTS),
            "signals": list(self.signals),
            "rejections": [exc.reason for exc in rejections],
            "audit events": TokenEvent.objects.count() - events,
        }

    def test_same_as_django(self):
        for backends in BACKEND_LISTS:
            for name, (token, scope) in self.tokens.items():
                with self.subTest(backends=backends, token=name):
                    with override_settings(AUTHENTICATION_BACKENDS=backends):
                        expected = self.outcome(authenticate, token, scope)
                        actual = self.outcome(sesame_authenticate, token, scope)
                    self.assertEqual(actual, expected)

    def test_same_as_django_async(self):
        def sync(function):
            return lambda *args, **kwargs: async_to_sync(function)(*args, **kwargs)

        for backends in BACKEND_LISTS:
            for name, (token, scope) in self.tokens.items():
                with self.subTest(backends=backends, token=name):
                    with override_settings(AUTHENTICATION_BACKENDS=backends):
                        expected = self.outcome(sync(aauthenticate), token, scope)
                        actual = self.outcome(sync(sesame_aauthenticate), token, scope)
                    self.assertEqual(actual, expected)

    def test_the_usual_backends(self):
        # The tests above can't pass by both doing nothing.
        token, _ = self.tokens["stored"]
        with override_settings(AUTHENTICATION_BACKENDS=[DJANGO, BACKEND]):
            outcome = self.outcome(sesame_authenticate, token, "")
        self.assertEqual(outcome["result"], (self.user.pk, BACKEND))
        self.assertEqual(
            outcome["signals"], [("token_used", ModelBackend, self.user.pk)]
        )
        self.assertEqual(outcome["audit events"], 1)

    def test_no_backends(self):
        token, _ = self.tokens["valid"]
        with override_settings(AUTHENTICATION_BACKENDS=[]):
            expected = self.outcome(authenticate, token, "")
            actual = self.outcome(sesame_authenticate, token, "")
        self.assertEqual(actual, expected)
        self.assertEqual(actual["result"][0], ImproperlyConfigured)

    def test_backends_follow_the_setting(self):
        token, _ = self.tokens["valid"]
        with override_settings(AUTHENTICATION_BACKENDS=[path(AcceptBackend)]):
            self.assertEqual(
                sesame_authenticate(None, sesame_token=token, scope="", max_age=None),
                self.other,
            )
        with override_settings(AUTHENTICATION_BACKENDS=[BACKEND]):
            self.assertEqual(
                sesame_authenticate(None, sesame_token=token, scope="", max_age=None),
                self.user,
            )

"""
Interoperability with django-sesame 3.2.

A project that moves from django-sesame to sesame_db keeps the links it has
already sent, and a project that runs both during the move sees no difference:
tokens must be identical byte for byte and accepted in both directions.

django-sesame is a test dependency only: sesame_db never imports it.

Each library reads the same ``SESAME_*`` settings and verifies tokens with its
own backend only (``AUTHENTICATION_BACKENDS`` is overridden on every call);
sesame_db verifies with ``get_user()`` and, as a third verifier, with
``aget_user()``. Settings whose value names a module of the library, such as
:data:`SESAME_TOKENS`, are written with a ``{lib}`` placeholder that becomes
``sesame`` or ``sesame_db``.

By design, sesame_db differs in two ways, tested here too: it rejects a v1
token when a scope is expected, where django-sesame raises
:exc:`NotImplementedError`, and it consumes one-time tokens in its backend,
whatever ``update_last_login`` says.

"""

from __future__ import annotations

import base64
import contextlib
import datetime
import importlib
import itertools
import struct
import unittest
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import time_machine
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import TestCase, override_settings

import sesame_db.utils

from .mixins import CreateUserMixin

try:
    import sesame.tokens_v2
    import sesame.utils
except ImportError:  # tox.ini installs django-sesame on Python >= 3.11 only
    HAS_SESAME = False
else:
    HAS_SESAME = True

Config = dict[str, Any]

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class LittleEndianPacker:
    """
    A custom packer shared by both libraries: the primary key in 8 bytes, little-endian.

    Its dotted path, ``tests.test_interop.LittleEndianPacker``, is mixed into
    the signing key by both libraries in the same way.

    """

    def pack_pk(self, user_pk):
        return struct.pack("<q", user_pk)

    def unpack_pk(self, data):
        (user_pk,) = struct.unpack("<q", data[:8])
        return user_pk, data[8:]


def _format(value: Any, package: str) -> Any:
    if isinstance(value, str):
        return value.format(lib=package)
    if isinstance(value, list):
        return [_format(item, package) for item in value]
    return value


@dataclass(frozen=True)
class Library:
    """One of the two libraries, configured by a :data:`Config` on every call."""

    name: str
    package: str
    # Verify with aget_user() rather than get_user().
    asynchronous: bool = False

    def __str__(self) -> str:
        return self.name

    @property
    def utils(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.utils")

    def settings(self, config: Config) -> Config:
        """Return ``config`` for this library, with its backend only."""
        return {
            **{name: _format(value, self.package) for name, value in config.items()},
            "AUTHENTICATION_BACKENDS": [f"{self.package}.backends.ModelBackend"],
        }

    async def _aget_users(self, tokens: list[str], scope: str, **kwargs):
        return [await self.utils.aget_user(token, scope, **kwargs) for token in tokens]

    def get_token(self, user, config: Config, scope: str = "") -> str:
        with override_settings(**self.settings(config)):
            return self.utils.get_token(user, scope)  # type: ignore[no-any-return]

    def get_user(self, token: str, config: Config, scope: str = "", **kwargs):
        return self.get_users([token], config, scope, **kwargs)[0]

    def get_users(self, tokens: list[str], config: Config, scope: str = "", **kwargs):
        """Verify each token of ``tokens``; return the list of results."""
        with override_settings(**self.settings(config)):
            if self.asynchronous:
                return async_to_sync(self._aget_users)(tokens, scope, **kwargs)
            return [self.utils.get_user(token, scope, **kwargs) for token in tokens]


SESAME = Library("django-sesame", "sesame")
SESAME_DB = Library("sesame_db", "sesame_db")
SESAME_DB_ASYNC = Library("sesame_db (async)", "sesame_db", asynchronous=True)
LIBRARIES = [SESAME, SESAME_DB]
VERIFIERS = [*LIBRARIES, SESAME_DB_ASYNC]

# (minted by, verified by): the cross pairs are the point of this module;
# each library against itself checks that the test itself is sound.
PAIRS = list(itertools.product(LIBRARIES, VERIFIERS))

V1 = {"SESAME_TOKENS": ["{lib}.tokens_v1"]}
MAX_AGE = {"SESAME_MAX_AGE": 300}

CONFIGS: dict[str, Config] = {
    "default": {},
    "max age in seconds": MAX_AGE,
    "max age as timedelta": {"SESAME_MAX_AGE": datetime.timedelta(minutes=5)},
    "one-time": {"SESAME_ONE_TIME": True},
    "invalidate on email change": {"SESAME_INVALIDATE_ON_EMAIL_CHANGE": True},
    "survive password change": {
        "SESAME_INVALIDATE_ON_PASSWORD_CHANGE": False,
        **MAX_AGE,
    },
    "SESAME_KEY": {"SESAME_KEY": "another key"},
    "SECRET_KEY as bytes": {"SECRET_KEY": b"secret \xff bytes"},
    "4-byte signature": {"SESAME_SIGNATURE_SIZE": 4},
    "32-byte signature": {"SESAME_SIGNATURE_SIZE": 32},
    "primary key field": {"SESAME_PRIMARY_KEY_FIELD": "username"},
    "UUID primary key": {"AUTH_USER_MODEL": "tests.UUIDUser"},
    "string primary key": {"AUTH_USER_MODEL": "tests.StrUser"},
    "bigint primary key": {"AUTH_USER_MODEL": "tests.BigUser"},
    # sesame_db maps sesame_db.packers.X to sesame.packers.X in the key.
    "built-in packer": {"SESAME_PACKER": "{lib}.packers.LongPacker"},
    "custom packer": {"SESAME_PACKER": "tests.test_interop.LittleEndianPacker"},
    "everything": {
        "AUTH_USER_MODEL": "tests.StrUser",
        "SESAME_MAX_AGE": datetime.timedelta(hours=1),
        "SESAME_ONE_TIME": True,
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE": True,
        "SESAME_KEY": "another key",
        "SESAME_SIGNATURE_SIZE": 16,
    },
    "v1": V1,
    "v1, max age": {**V1, **MAX_AGE},
    "v1, one-time, email": {
        **V1,
        "SESAME_ONE_TIME": True,
        "SESAME_INVALIDATE_ON_EMAIL_CHANGE": True,
    },
    "v1, UUID primary key": {**V1, "AUTH_USER_MODEL": "tests.UUIDUser"},
    "v1, string primary key": {**V1, "AUTH_USER_MODEL": "tests.StrUser"},
    "v1 first, v2 accepted": {"SESAME_TOKENS": ["{lib}.tokens_v1", "{lib}.tokens_v2"]},
}

# Make primary keys that exercise the packers: 8 significant bytes, and
# multi-byte UTF-8 characters.
USER_KWARGS: dict[str, dict[str, Any]] = {
    "tests.BigUser": {"id": 2**40 + 7},
    "tests.StrUser": {"id": "üsér-☃"},
}


def is_v1(config: Config) -> bool:
    """Tell whether ``config`` creates v1 tokens."""
    tokens: list[str] = config.get("SESAME_TOKENS", ["{lib}.tokens_v2"])
    return tokens[0] == "{lib}.tokens_v1"


def b64decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tampered(token: str, config: Config) -> Iterator[str]:
    """Yield variants of ``token`` that must be rejected."""
    if is_v1(config):
        # v1 signatures cover the Base64 text, so any character counts.
        for index, char in enumerate(token):
            if char != ":":
                new = BASE64URL[(BASE64URL.find(char) + 1) % 64]
                yield token[:index] + new + token[index + 1 :]
    else:
        # Changing a character may leave the decoded bytes unchanged (the
        # last character has unused low bits): flip bits in the bytes.
        data = b64decode(token)
        for index in range(len(data)):
            flipped = data[index] ^ (1 << (index % 8))
            yield b64encode(data[:index] + bytes([flipped]) + data[index + 1 :])
    yield token + "A"
    yield token + "="
    yield token + " "
    yield " " + token
    yield token + "\x00"


@unittest.skipUnless(HAS_SESAME, "django-sesame isn't installed")
class InteropTests(CreateUserMixin, TestCase):
    @contextlib.contextmanager
    def configured_user(self, config: Config) -> Iterator[Any]:
        """Create a user of the model of ``config``; roll it back on exit."""
        # Only AUTH_USER_MODEL stays overridden: every call to a library
        # applies the whole configuration that it's given, and nothing else.
        user_model = {k: v for k, v in config.items() if k == "AUTH_USER_MODEL"}
        with override_settings(**user_model), transaction.atomic():
            User = get_user_model()
            yield self.create_user("alice", **USER_KWARGS.get(User._meta.label, {}))
            transaction.set_rollback(True)

    def assertAccepted(self, library, token, config, user, scope="", **kwargs):
        self.assertEqual(library.get_user(token, config, scope, **kwargs), user)

    def assertRejected(self, library, token, config, scope="", **kwargs):
        self.assertIsNone(library.get_user(token, config, scope, **kwargs))

    def assertAllRejected(self, tokens, config):
        tokens = list(tokens)
        accepted = [
            (token, str(verifier))
            for verifier in VERIFIERS
            for token, user in zip(
                tokens, verifier.get_users(tokens, config), strict=True
            )
            if user is not None
        ]
        self.assertEqual(accepted, [], "tokens accepted (token, verifier)")

    # The matrix: every configuration, every pair.

    def test_token_accepted(self):
        for (name, config), (minter, verifier) in itertools.product(
            CONFIGS.items(), PAIRS
        ):
            with (
                self.subTest(config=name, minter=minter, verifier=verifier),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                self.assertAccepted(verifier, token, config, user)

    def test_tokens_identical(self):
        # Timestamps count seconds since 2020 and may be negative.
        times = [NOW, datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc)]
        for (name, config), now in itertools.product(CONFIGS.items(), times):
            with (
                self.subTest(config=name, now=now),
                self.configured_user(config) as user,
                time_machine.travel(now, tick=False),
            ):
                self.assertEqual(
                    SESAME_DB.get_token(user, config),
                    SESAME.get_token(user, config),
                )

    def test_query_string_and_parameters_identical(self):
        config = {"SESAME_TOKEN_NAME": "magic", **MAX_AGE}
        with time_machine.travel(NOW, tick=False), override_settings(**config):
            for name in ["get_query_string", "get_parameters"]:
                with self.subTest(function=name):
                    self.assertEqual(
                        getattr(sesame_db.utils, name)(self.user, "scope"),
                        getattr(sesame.utils, name)(self.user, "scope"),
                    )

    def test_tampered_token_rejected(self):
        for (name, config), minter in itertools.product(CONFIGS.items(), LIBRARIES):
            with (
                self.subTest(config=name, minter=minter),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                self.assertAllRejected(tampered(token, config), config)

    def test_truncated_token_rejected(self):
        for (name, config), minter in itertools.product(CONFIGS.items(), LIBRARIES):
            with (
                self.subTest(config=name, minter=minter),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                prefixes = [token[:length] for length in range(len(token))]
                self.assertAllRejected(prefixes, config)

    # Settings that must agree between minting and verifying.

    MISMATCHES: dict[str, tuple[Config, Config]] = {
        "SESAME_KEY": ({}, {"SESAME_KEY": "another key"}),
        "SECRET_KEY": ({}, {"SECRET_KEY": "another secret key"}),
        "MAX_AGE set": ({}, MAX_AGE),
        "MAX_AGE unset": (MAX_AGE, {}),
        "SESAME_PACKER": ({}, {"SESAME_PACKER": "{lib}.packers.LongPacker"}),
        "custom packer": (
            {"SESAME_PACKER": "{lib}.packers.LongLongPacker"},
            {"SESAME_PACKER": "tests.test_interop.LittleEndianPacker"},
        ),
        "SIGNATURE_SIZE": ({}, {"SESAME_SIGNATURE_SIZE": 12}),
        "INVALIDATE_ON_PASSWORD_CHANGE": (
            MAX_AGE,
            {**MAX_AGE, "SESAME_INVALIDATE_ON_PASSWORD_CHANGE": False},
        ),
        "INVALIDATE_ON_EMAIL_CHANGE": ({}, {"SESAME_INVALIDATE_ON_EMAIL_CHANGE": True}),
        "ONE_TIME": ({}, {"SESAME_ONE_TIME": True}),
        "v1 SALT": (V1, {**V1, "SESAME_SALT": "pepper"}),
        "v1 MAX_AGE": (V1, {**V1, **MAX_AGE}),
    }

    def test_settings_mismatch_rejected(self):
        for (name, (mint_config, verify_config)), (
            minter,
            verifier,
        ) in itertools.product(self.MISMATCHES.items(), PAIRS):
            with (
                self.subTest(setting=name, minter=minter, verifier=verifier),
                self.configured_user(mint_config) as user,
            ):
                # The user has a last login, so that ONE_TIME changes the revocation key.
                user.last_login = NOW
                user.save()
                token = minter.get_token(user, mint_config)
                self.assertRejected(verifier, token, verify_config)

    def test_primary_key_field_mismatch_rejected(self):
        # "john" packed as a string and read as an integer primary key, and back.
        username = {"SESAME_PRIMARY_KEY_FIELD": "username"}
        for minter, verifier in PAIRS:
            with self.subTest(minter=minter, verifier=verifier):
                token = minter.get_token(self.user, username)
                self.assertRejected(verifier, token, {})
                token = minter.get_token(self.user, {})
                self.assertRejected(verifier, token, username)

    # Expiry.

    EXPIRING = ["max age in seconds", "max age as timedelta", "v1, max age"]

    def test_max_age(self):
        # v2 tokens expire when age >= max_age; v1 tokens when age > max_age.
        for name, (minter, verifier) in itertools.product(self.EXPIRING, PAIRS):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter, verifier=verifier),
                time_machine.travel(NOW, tick=False) as traveller,
            ):
                token = minter.get_token(self.user, config)
                traveller.shift(-60)  # a clock running late
                self.assertAccepted(verifier, token, config, self.user)
                traveller.shift(60 + 299)
                self.assertAccepted(verifier, token, config, self.user)
                traveller.shift(2)
                self.assertRejected(verifier, token, config)
                traveller.shift(86400)
                self.assertRejected(verifier, token, config)

    def test_max_age_boundary_agrees(self):
        for name, minter in itertools.product(self.EXPIRING, LIBRARIES):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter),
                time_machine.travel(NOW, tick=False) as traveller,
            ):
                token = minter.get_token(self.user, config)
                traveller.shift(300)
                self.assertEqual(
                    SESAME_DB.get_user(token, config),
                    SESAME.get_user(token, config),
                )

    def test_max_age_argument(self):
        # django-sesame doesn't support max_age for v1 tokens.
        for name, (minter, verifier) in itertools.product(self.EXPIRING[:2], PAIRS):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter, verifier=verifier),
                time_machine.travel(NOW, tick=False) as traveller,
            ):
                token = minter.get_token(self.user, config)
                traveller.shift(120)
                self.assertRejected(verifier, token, config, max_age=60)
                self.assertRejected(
                    verifier, token, config, max_age=datetime.timedelta(minutes=1)
                )
                traveller.shift(300)
                self.assertAccepted(verifier, token, config, self.user, max_age=600)
                self.assertAccepted(
                    verifier,
                    token,
                    config,
                    self.user,
                    max_age=datetime.timedelta(minutes=10),
                )

    def test_max_age_argument_ignored_without_max_age_setting(self):
        for minter, verifier in PAIRS:
            with self.subTest(minter=minter, verifier=verifier):
                token = minter.get_token(self.user, {})
                with self.assertLogs(verifier.package, "WARNING"):
                    self.assertAccepted(verifier, token, {}, self.user, max_age=60)

    # Scopes.

    SCOPED = ["default", "max age in seconds", "string primary key", "everything"]
    SCOPES = ["report:42", "café ☕", "a" * 1000]

    def test_scope(self):
        for name, (minter, verifier) in itertools.product(self.SCOPED, PAIRS):
            config = CONFIGS[name]
            for scope in self.SCOPES:
                with (
                    self.subTest(
                        config=name, minter=minter, verifier=verifier, scope=scope[:20]
                    ),
                    self.configured_user(config) as user,
                ):
                    token = minter.get_token(user, config, scope)
                    self.assertRejected(verifier, token, config)
                    self.assertRejected(verifier, token, config, scope + " ")
                    self.assertRejected(verifier, token, config, "other")
                    self.assertAccepted(verifier, token, config, user, scope)

    def test_unscoped_token_rejected_in_scope(self):
        for name, (minter, verifier) in itertools.product(self.SCOPED, PAIRS):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter, verifier=verifier),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                self.assertRejected(verifier, token, config, "report:42")

    def test_v1_token_accepted_by_default_formats(self):
        # Links sent by a django-sesame 1.x-era configuration keep working
        # after a switch to the default SESAME_TOKENS, where v2 comes first.
        for extra, (minter, verifier) in itertools.product([{}, MAX_AGE], PAIRS):
            with self.subTest(max_age=bool(extra), minter=minter, verifier=verifier):
                token = minter.get_token(self.user, {**V1, **extra})
                self.assertIn(":", token)
                self.assertAccepted(verifier, token, extra, self.user)

    def test_v1_token_in_scope(self):
        # By design, sesame_db rejects a v1 token when a scope is expected,
        # while django-sesame raises NotImplementedError.
        for minter in LIBRARIES:
            with self.subTest(minter=minter):
                token = minter.get_token(self.user, V1)
                self.assertRejected(SESAME_DB, token, V1, "report:42")
                with self.assertRaises(NotImplementedError):
                    SESAME.get_user(token, V1, "report:42")

    # Revocation.

    REVOCABLE = ["default", "UUID primary key", "v1"]

    def test_password_change(self):
        for name, minter in itertools.product(self.REVOCABLE, LIBRARIES):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                user.set_password("new password")
                user.save()
                for verifier in VERIFIERS:
                    self.assertRejected(verifier, token, config)

    def test_password_change_allowed(self):
        config = CONFIGS["survive password change"]
        for minter, verifier in PAIRS:
            with (
                self.subTest(minter=minter, verifier=verifier),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                user.set_password("new password")
                user.save()
                self.assertAccepted(verifier, token, config, user)

    def test_email_change(self):
        for name, minter in itertools.product(
            ["invalidate on email change", "v1, one-time, email"], LIBRARIES
        ):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                user.email = "alice@example.org"
                user.save()
                for verifier in VERIFIERS:
                    self.assertRejected(verifier, token, config)

    def test_email_change_allowed(self):
        for minter, verifier in PAIRS:
            with (
                self.subTest(minter=minter, verifier=verifier),
                self.configured_user({}) as user,
            ):
                token = minter.get_token(user, {})
                user.email = "alice@example.org"
                user.save()
                self.assertAccepted(verifier, token, {}, user)

    # Only the hash goes into the revocation key, not the algorithm, the
    # parameters or the salt, and django-sesame's table of hash sizes decides
    # where the hash starts.
    def test_password_formats(self):
        hash_sizes = sesame.tokens_v2.HASH_SIZES
        passwords = {
            **{
                algorithm: f"{algorithm}$params$" + "s" * 22 + "h" * size
                for algorithm, size in hash_sizes.items()
            },
            "unusable": "!" + "u" * 40,
            "unknown hasher": "custom$params$salt$" + "h" * 32,
            "empty": "",
        }
        for (name, password), (minter, verifier) in itertools.product(
            passwords.items(), PAIRS
        ):
            size = hash_sizes.get(name, len(password))
            with (
                self.subTest(password=name, minter=minter, verifier=verifier),
                self.configured_user({}) as user,
            ):
                user.password = password
                user.save()
                token = minter.get_token(user, {})
                self.assertAccepted(verifier, token, {}, user)
                if size < len(password):  # a change outside the hash
                    index = len(password) - size - 1
                    user.password = password[:index] + "x" + password[index + 1 :]
                    user.save()
                    self.assertAccepted(verifier, token, {}, user)
                if password:  # a change in the hash
                    user.password = password[:-1] + "x"
                    user.save()
                    self.assertRejected(verifier, token, {})

    def test_inactive_user(self):
        for minter, verifier in PAIRS:
            with (
                self.subTest(minter=minter, verifier=verifier),
                self.configured_user({}) as user,
            ):
                token = minter.get_token(user, {})
                user.is_active = False
                user.save()
                self.assertRejected(verifier, token, {})

    def test_one_time(self):
        # A token used by one library is rejected by the other.
        names = ["one-time", "everything", "v1, one-time, email"]
        for name, minter, first, second in itertools.product(
            names, LIBRARIES, VERIFIERS, VERIFIERS
        ):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter, first=first, second=second),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, config)
                self.assertAccepted(first, token, config, user)
                self.assertRejected(second, token, config)
                # A new token, created after the last login changed, works.
                user.refresh_from_db()
                token = minter.get_token(user, config)
                self.assertAccepted(second, token, config, user)

    def test_one_time_update_last_login_false(self):
        # By design, sesame_db consumes one-time tokens in the backend, even
        # with update_last_login=False; django-sesame only updates the last
        # login in get_user(), when update_last_login allows it.
        config = CONFIGS["one-time"]
        token = SESAME.get_token(self.user, config)
        self.assertAccepted(SESAME, token, config, self.user, update_last_login=False)
        self.assertAccepted(
            SESAME_DB, token, config, self.user, update_last_login=False
        )
        self.assertRejected(SESAME, token, config)

    # Key rotation.

    ROTATED = ["default", "max age in seconds", "UUID primary key", "v1"]

    def test_secret_key_fallbacks(self):
        # django-sesame builds its v1 signer only when SESAME_SALT or
        # SESAME_MAX_AGE change: setting SESAME_SALT rebuilds it.
        old = {"SECRET_KEY": "old secret key", "SESAME_SALT": "sesame"}
        new = {"SECRET_KEY": "new secret key", "SESAME_SALT": "sesame"}
        rotated = {**new, "SECRET_KEY_FALLBACKS": ["old secret key"]}
        for name, (minter, verifier) in itertools.product(self.ROTATED, PAIRS):
            config = CONFIGS[name]
            with (
                self.subTest(config=name, minter=minter, verifier=verifier),
                self.configured_user(config) as user,
            ):
                token = minter.get_token(user, {**config, **old})
                self.assertRejected(verifier, token, {**config, **new})
                self.assertAccepted(verifier, token, {**config, **rotated}, user)
                token = minter.get_token(user, {**config, **rotated})
                self.assertAccepted(verifier, token, {**config, **new}, user)

    # Credentials.

    def test_sesame_get_user_with_sesame_db_backend(self):
        # A project that still calls sesame.utils.get_user() after switching
        # backends: sesame_db's backend accepts the sesame= credential.
        token = SESAME.get_token(self.user, {})
        with override_settings(
            AUTHENTICATION_BACKENDS=["sesame_db.backends.ModelBackend"]
        ):
            user = sesame.utils.get_user(token)
        self.assertEqual(user, self.user)
        self.assertEqual(user.backend, "sesame_db.backends.ModelBackend")

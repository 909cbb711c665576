"""
Settings of sesame_db, read from ``SESAME_*`` Django settings.

Every other module reads settings through :data:`conf`, never through
:mod:`django.conf.settings` directly.

"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "conf"]

DEFAULTS: dict[str, Any] = {
    # Generating URLs
    "TOKEN_NAME": "sesame",
    # Tokens lifecycle
    "MAX_AGE": None,
    "ONE_TIME": False,
    "INVALIDATE_ON_PASSWORD_CHANGE": True,
    "INVALIDATE_ON_EMAIL_CHANGE": False,
    # Custom primary keys
    "PACKER": None,
    "PRIMARY_KEY_FIELD": "pk",
    # Token formats, the first one is used for creating tokens
    "TOKENS": ["sesame_db.tokens_v2", "sesame_db.tokens_v1"],
    # Tokens v2
    "KEY": "",
    # A 10-byte signature has about 1.2e24 possible values: enough for a
    # token that is checked online, short enough for a URL.
    "SIGNATURE_SIZE": 10,
    # Tokens v1
    "SALT": "sesame",
    # Database store
    "STORE": False,
    "AUDIT": True,
    "TRUSTED_PROXIES": 0,
    "CONFIRM": False,
    "CONFIRM_TEMPLATE": "sesame_db/confirm.html",
    # Seconds; a timedelta works too.
    "TOKEN_RETENTION": 30 * 24 * 3600,
    "EVENT_RETENTION": 365 * 24 * 3600,
    # PostgreSQL: False lets the use of a stored link commit without waiting
    # for its WAL flush; see docs/store.rst.
    "SYNCHRONOUS_COMMIT": True,
    # Admin
    "ADMIN_SCOPES": [],
    "ADMIN_EVENTS_DELETABLE": False,
    # Rate limiting of failed attempts, off by default, e.g.
    # {"failures": 10, "period": 60}; the period is in seconds or a timedelta.
    "RATE_LIMIT": None,
    "RATE_LIMIT_CACHE": "default",
    # Login by email (sesame_db.urls); durations in seconds or a timedelta.
    "LOGIN_MAX_AGE": 600,
    # How many of a person's login links stay valid: a new request revokes
    # the older ones beyond this number.
    "LOGIN_MAX_VALID_LINKS": 1,
    # Requests per address and per client in a window of "period" seconds,
    # or None for no throttling.
    "LOGIN_THROTTLE": {"address": 3, "client": 30, "period": 900},
    "LOGIN_BIND_BROWSER": True,
    "LOGIN_CODE": True,
    "LOGIN_CODE_LENGTH": 6,
    # Dotted paths of project functions, or None.
    "LOGIN_SEND_EMAIL": None,
    "LOGIN_SIGNUP": None,
    # e.g. "https://example.com"; None builds links from the request.
    "LOGIN_BASE_URL": None,
}

# Durations accept a timedelta or a number of seconds.
_DURATIONS = ("MAX_AGE", "TOKEN_RETENTION", "EVENT_RETENTION", "LOGIN_MAX_AGE")

# Settings whose changes clear the cache.
_WATCHED = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "AUTH_USER_MODEL")


def _normalize_packer_path(path: str) -> str:
    # django-sesame mixes the dotted path of SESAME_PACKER into the signing
    # key. Projects that migrate rename "sesame.packers.X" into
    # "sesame_db.packers.X"; mix in the old name so that links already sent
    # keep working.
    if path.startswith("sesame_db.packers."):
        return "sesame.packers." + path.removeprefix("sesame_db.packers.")
    return path


def derive_key(
    secret_key: str | bytes,
    key: str,
    max_age: float | None,
    packer: str | None,
    primary_key_field: str,
) -> bytes:
    """
    Make a 64-byte signing key, like django-sesame does.

    Settings that change the meaning of a token are mixed into the key, so a
    token created with one packer cannot be misread by another.

    """
    return hashlib.blake2b(
        "|".join(
            [
                # str() of bytes gives "b'...'", as in django-sesame.
                str(secret_key),
                str(key),
                # Changing MAX_AGE is allowed as long as it is not None.
                "max_age" if max_age is not None else "",
                _normalize_packer_path(packer) if packer is not None else "",
                primary_key_field,
            ]
        ).encode(),
        person=b"sesame.settings",
    ).digest()


class Settings:
    """
    Typed access to the ``SESAME_*`` settings.

    Values are read from :mod:`django.conf.settings` on first access and kept
    until a :data:`~django.core.signals.setting_changed` signal (sent by
    :func:`~django.test.override_settings`) clears them. Reading Django's
    settings on every access would cost an exception per unset setting on the
    hot path of every request.

    """

    TOKEN_NAME: str
    MAX_AGE: float | None
    ONE_TIME: bool
    INVALIDATE_ON_PASSWORD_CHANGE: bool
    INVALIDATE_ON_EMAIL_CHANGE: bool
    PACKER: str | None
    PRIMARY_KEY_FIELD: str
    TOKENS: Sequence[str]
    KEY: str
    SIGNATURE_SIZE: int
    SALT: str
    STORE: bool
    AUDIT: bool
    TRUSTED_PROXIES: int
    CONFIRM: bool
    CONFIRM_TEMPLATE: str
    TOKEN_RETENTION: float
    EVENT_RETENTION: float
    SYNCHRONOUS_COMMIT: bool
    ADMIN_SCOPES: Sequence[str]
    ADMIN_EVENTS_DELETABLE: bool
    RATE_LIMIT: dict[str, Any] | None
    RATE_LIMIT_CACHE: str
    LOGIN_MAX_AGE: float
    LOGIN_MAX_VALID_LINKS: int
    LOGIN_THROTTLE: dict[str, Any] | None
    LOGIN_BIND_BROWSER: bool
    LOGIN_CODE: bool
    LOGIN_CODE_LENGTH: int
    LOGIN_SEND_EMAIL: str | None
    LOGIN_SIGNUP: str | None
    LOGIN_BASE_URL: str | None

    # Derived values.
    SIGNING_KEY: bytes
    VERIFICATION_KEYS: list[bytes]
    SECRET_KEYS: list[str | bytes]

    @functools.cached_property
    def token_formats(self) -> list[ModuleType]:
        return [importlib.import_module(path) for path in self.TOKENS]

    @functools.cached_property
    def v2_hashers(self) -> list[hashlib.blake2b]:
        # Keyed BLAKE2b states of tokens v2, one per verification key:
        # copying one is cheaper than keying a new hash for every token.
        return [
            hashlib.blake2b(
                digest_size=self.SIGNATURE_SIZE,
                key=key,
                person=b"sesame.tokens_v2",
            )
            for key in self.VERIFICATION_KEYS
        ]

    def _load(self) -> None:
        values = {
            name: getattr(settings, "SESAME_" + name, default)
            for name, default in DEFAULTS.items()
        }
        for name in _DURATIONS:
            if isinstance(values[name], datetime.timedelta):
                values[name] = values[name].total_seconds()
        values["SECRET_KEYS"] = [
            settings.SECRET_KEY,
            *getattr(settings, "SECRET_KEY_FALLBACKS", []),
        ]
        keys = [
            derive_key(
                secret_key,
                values["KEY"],
                values["MAX_AGE"],
                values["PACKER"],
                values["PRIMARY_KEY_FIELD"],
            )
            for secret_key in values["SECRET_KEYS"]
        ]
        values["SIGNING_KEY"] = keys[0]
        values["VERIFICATION_KEYS"] = keys
        self.__dict__.update(values)
        # Loaded: from now on, values are plain instance attributes. A class
        # that defines __getattr__ slows down every attribute access, found
        # or not (CPython hooks them all and can't specialize them), and
        # settings are read a dozen times per token.
        self.__class__ = Settings

    def clear(self) -> None:
        """Forget cached values; they're read again on next access."""
        # The hook first: a thread that reads a setting meanwhile loads it
        # again rather than missing it.
        self.__class__ = _UnloadedSettings
        self.__dict__.clear()


class _UnloadedSettings(Settings):
    """The settings before they're read: the first access to one reads them all."""

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # Called only when a value isn't cached yet.
            if not name.isupper():
                raise AttributeError(name)
            self._load()
            try:
                return self.__dict__[name]
            except KeyError:
                raise AttributeError(name) from None


conf: Settings = _UnloadedSettings()


def is_watched(setting: str) -> bool:
    """Tell whether changing ``setting`` changes values derived from the settings."""
    return setting.startswith("SESAME_") or setting in _WATCHED


@receiver(setting_changed, dispatch_uid="sesame_db.conf.reload")
def reload(*, setting: str, **kwargs: Any) -> None:
    if is_watched(setting):
        conf.clear()

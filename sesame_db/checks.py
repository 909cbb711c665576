"""
System checks for sesame_db settings.

They run when ``"sesame_db"`` is in :setting:`INSTALLED_APPS`.

"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import conf

__all__ = ["check_backends", "check_middleware", "check_settings", "check_user_model"]

SESAME_MIDDLEWARE = "sesame_db.middleware.AuthenticationMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the ``SESAME_*`` settings that don't depend on models."""
    errors: list[CheckMessage] = []
    max_age = conf.MAX_AGE
    if max_age is not None and (
        isinstance(max_age, bool)
        or not isinstance(max_age, (int, float))
        or max_age <= 0
    ):
        errors.append(
            Error(
                f"SESAME_MAX_AGE must be None, a positive number of seconds or a timedelta, not {getattr(settings, 'SESAME_MAX_AGE', None)!r}.",
                id="sesame_db.E006",
            )
        )
    elif max_age is None and not conf.INVALIDATE_ON_PASSWORD_CHANGE:
        errors.append(
            Error(
                "Insecure configuration: tokens never expire and survive password changes.",
                hint="Set SESAME_MAX_AGE to a low value or set SESAME_INVALIDATE_ON_PASSWORD_CHANGE to True.",
                id="sesame_db.E001",
            )
        )
    size = conf.SIGNATURE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 64:
        errors.append(
            Error(
                f"SESAME_SIGNATURE_SIZE must be an integer between 1 and 64, not {size!r}.",
                id="sesame_db.E005",
            )
        )
    if not conf.TOKENS:
        errors.append(
            Error(
                "SESAME_TOKENS must list at least one token format.",
                id="sesame_db.E004",
            )
        )
    for path in conf.TOKENS:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"SESAME_TOKENS contains {path!r}, which cannot be imported: {exc}.",
                    id="sesame_db.E004",
                )
            )
            continue
        missing = [
            name
            for name in ("create_token", "decode_token", "detect_token")
            if not hasattr(module, name)
        ]
        if missing:
            errors.append(
                Error(
                    f"SESAME_TOKENS contains {path!r}, which doesn't define {', '.join(missing)}.",
                    id="sesame_db.E004",
                )
            )
    return errors


def check_user_model(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the settings that depend on the user model: packer and email field."""
    errors: list[CheckMessage] = []
    try:
        from .packers import get_packer

        get_packer()
    except (ImproperlyConfigured, ImportError, FieldDoesNotExist) as exc:
        errors.append(
            Error(f"Cannot pack primary keys of users: {exc}.", id="sesame_db.E003")
        )
    if conf.INVALIDATE_ON_EMAIL_CHANGE:
        User = get_user_model()
        email_field = User.get_email_field_name()
        try:
            User._meta.get_field(email_field)
        except FieldDoesNotExist:
            errors.append(
                Error(
                    f"SESAME_INVALIDATE_ON_EMAIL_CHANGE is set but {User._meta.label} has no field {email_field!r}.",
                    hint="Set User.EMAIL_FIELD correctly or set SESAME_INVALIDATE_ON_EMAIL_CHANGE to False.",
                    id="sesame_db.E002",
                )
            )
    return errors


def check_backends(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check that an authentication backend accepts tokens."""
    from .backends import SesameBackendMixin

    for path in settings.AUTHENTICATION_BACKENDS:
        try:
            backend = import_string(path)
        except ImportError:
            continue  # Django reports this.
        if isinstance(backend, type) and issubclass(backend, SesameBackendMixin):
            return []
    return [
        Warning(
            "No authentication backend in AUTHENTICATION_BACKENDS accepts sesame_db tokens: every token will be rejected.",
            hint="Add 'sesame_db.backends.ModelBackend' to AUTHENTICATION_BACKENDS.",
            id="sesame_db.W001",
        )
    ]


def check_middleware(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check that the middleware comes after the session and authentication middleware."""
    middleware = list(settings.MIDDLEWARE)
    if SESAME_MIDDLEWARE not in middleware:
        return []
    position = middleware.index(SESAME_MIDDLEWARE)
    errors: list[CheckMessage] = []
    for other in (SESSION_MIDDLEWARE, AUTH_MIDDLEWARE):
        if other in middleware[position:]:
            errors.append(
                Warning(
                    f"{SESAME_MIDDLEWARE} is placed before {other}: users who follow a link aren't logged in for longer than one request.",
                    hint=f"Move {SESAME_MIDDLEWARE} just after {AUTH_MIDDLEWARE} in MIDDLEWARE.",
                    id="sesame_db.W002",
                )
            )
    return errors

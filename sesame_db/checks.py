"""
System checks for sesame_db settings.

They run when ``"sesame_db"`` is in :setting:`INSTALLED_APPS`.

"""

from __future__ import annotations

import datetime
import importlib
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache.backends.base import BaseCache
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import DatabaseError, connections, router
from django.utils.module_loading import import_string

from .conf import conf

__all__ = [
    "check_backends",
    "check_login_settings",
    "check_middleware",
    "check_migrations",
    "check_settings",
    "check_store_settings",
    "check_user_model",
]

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


# SESAME_TRUSTED_PROXIES above this is a mistake, not a deployment.
MAX_TRUSTED_PROXIES = 10
DUMMY_CACHE = "django.core.cache.backends.dummy.DummyCache"
LOCMEM_CACHE = "django.core.cache.backends.locmem.LocMemCache"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rate_limit_errors(value: Any) -> list[CheckMessage]:
    problem = None
    if not isinstance(value, Mapping) or set(value) != {"failures", "period"}:
        problem = "a dict with the keys 'failures' and 'period'"
    elif not _is_int(value["failures"]) or value["failures"] < 1:
        problem = "a dict whose 'failures' is a positive integer"
    else:
        period = value["period"]
        if isinstance(period, datetime.timedelta):
            period = period.total_seconds()
        elif isinstance(period, bool) or not isinstance(period, numbers.Real):
            period = 0
        if not period > 0:
            problem = (
                "a dict whose 'period' is a positive number of seconds or a timedelta"
            )
    if problem is None:
        return []
    return [
        Error(
            f"SESAME_RATE_LIMIT must be None or {problem}, not {value!r}.",
            hint='For example: SESAME_RATE_LIMIT = {"failures": 10, "period": 60}.',
            id="sesame_db.E009",
        )
    ]


def check_store_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the settings of the database store and of rate limiting."""
    errors: list[CheckMessage] = []
    proxies = conf.TRUSTED_PROXIES
    if not _is_int(proxies) or proxies < 0:
        errors.append(
            Error(
                f"SESAME_TRUSTED_PROXIES must be a non-negative integer, not {proxies!r}.",
                hint="Set it to the number of reverse proxies that append to X-Forwarded-For, or to 0.",
                id="sesame_db.E007",
            )
        )
    elif proxies > MAX_TRUSTED_PROXIES:
        errors.append(
            Warning(
                f"SESAME_TRUSTED_PROXIES is {proxies}: requests rarely cross more than {MAX_TRUSTED_PROXIES} proxies.",
                hint="Set it to the number of reverse proxies that append to X-Forwarded-For. "
                "When it's larger, the audit trail and the rate limit see the address of a proxy.",
                id="sesame_db.W003",
            )
        )
    for name in ("STORE", "AUDIT", "CONFIRM"):
        value = getattr(conf, name)
        if not isinstance(value, bool):
            errors.append(
                Error(
                    f"SESAME_{name} must be True or False, not {value!r}.",
                    id="sesame_db.E008",
                )
            )
    rate_limit = conf.RATE_LIMIT
    alias = conf.RATE_LIMIT_CACHE
    # The cache also counts repeated rejections for the audit trail, with or
    # without a rate limit.
    if alias not in settings.CACHES:
        errors.append(
            Error(
                f"SESAME_RATE_LIMIT_CACHE is {alias!r}, which isn't a cache in CACHES.",
                hint="Set SESAME_RATE_LIMIT_CACHE to an alias of CACHES.",
                id="sesame_db.E010",
            )
        )
    if rate_limit is not None:
        errors.extend(_rate_limit_errors(rate_limit))
        backend = settings.CACHES.get(alias, {}).get("BACKEND")
        if backend == DUMMY_CACHE:
            errors.append(
                Warning(
                    f"SESAME_RATE_LIMIT counts failures in the cache {alias!r}, a DummyCache, which keeps nothing: no client is ever limited.",
                    hint="Set SESAME_RATE_LIMIT_CACHE to a cache shared by every process, such as Redis or Memcached.",
                    id="sesame_db.W005",
                )
            )
        elif backend is not None and not _has_atomic_incr(backend):
            errors.append(
                Warning(
                    f"SESAME_RATE_LIMIT counts failures in the cache {alias!r}, whose incr() isn't atomic: "
                    "concurrent failures can go over the limit, and each one restarts the period.",
                    hint="Set SESAME_RATE_LIMIT_CACHE to a cache with an atomic incr(), shared by every process, such as Redis or Memcached.",
                    id="sesame_db.W006",
                )
            )
        if backend == LOCMEM_CACHE:
            errors.append(
                Warning(
                    f"SESAME_RATE_LIMIT counts failures in the cache {alias!r}, a LocMemCache, which each process keeps "
                    "for itself: with several processes or servers, a client gets the limit once per process.",
                    hint="Set SESAME_RATE_LIMIT_CACHE to a cache shared by every process, such as Redis. "
                    "Silence this warning if the site runs in a single process.",
                    id="sesame_db.W007",
                )
            )
    return errors


def _has_atomic_incr(path: str) -> bool:
    # BaseCache.incr() reads then writes, with the default timeout: the file
    # and database caches inherit it.
    try:
        backend = import_string(path)
    except ImportError:
        return True  # Django reports this.
    return not (
        isinstance(backend, type)
        and issubclass(backend, BaseCache)
        and backend.incr is BaseCache.incr
    )


def _in_migrate() -> bool:
    # migrate runs the database checks before it migrates: a warning about
    # the migrations that it's about to apply would only be noise. Django
    # passes nothing that tells who runs the checks, hence the call stack.
    from django.core.management.commands.migrate import Command as Migrate

    frame = sys._getframe(1)
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), Migrate):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def check_migrations(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """
    Check that the migrations of the database store are applied, and on PostgreSQL, its functions installed.

    Like Django's database checks, it runs only when ``databases`` is given:
    ``manage.py check --database default`` and the test runner; not in
    ``migrate``, which applies them.

    """
    if not databases or _in_migrate():
        return []
    if app_configs is not None and not any(
        app_config.name == "sesame_db" for app_config in app_configs
    ):
        return []
    from django.db.migrations.loader import MigrationLoader

    IssuedToken = apps.get_model("sesame_db", "IssuedToken")
    warnings: list[CheckMessage] = []
    for alias in databases:
        if not router.allow_migrate_model(alias, IssuedToken):
            continue
        try:
            loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
        except DatabaseError:
            # The database can't be reached; other commands will say so.
            continue
        pending = sorted(
            name
            for app_label, name in loader.graph.nodes
            if app_label == "sesame_db"
            and (app_label, name) not in loader.applied_migrations
        )
        if pending:
            warnings.append(
                Warning(
                    f"The database {alias!r} lacks migrations of sesame_db: {', '.join(pending)}. "
                    "Stored links fail until they're applied.",
                    hint=f"Run: manage.py migrate sesame_db --database {alias}",
                    id="sesame_db.W004",
                )
            )
        elif connections[alias].vendor == "postgresql":
            from .sql import list_functions
            from .store import missing_functions

            try:
                missing = missing_functions(alias)
                present = list_functions(alias, executable=False) if missing else ()
            except DatabaseError:
                continue
            absent = [name for name in missing if name not in present]
            denied = [name for name in missing if name in present]
            if absent:
                warnings.append(
                    Warning(
                        f"The database {alias!r} lacks functions of sesame_db for the current settings: {', '.join(absent)}. "
                        "Stored links work without them, but each use costs more.",
                        hint=f"Run: manage.py migrate --database {alias}",
                        id="sesame_db.W009",
                    )
                )
            if denied:
                warnings.append(
                    Warning(
                        f"The role of the database {alias!r} may not execute functions of sesame_db: {', '.join(denied)}. "
                        "Stored links work without them, but each use costs more.",
                        hint="GRANT EXECUTE on them to the site's role.",
                        id="sesame_db.W009",
                    )
                )
    return warnings


# Login by email (sesame_db.urls): sesame_db.E030 to E036 and W008.

MIN_CODE_LENGTH = 6
MAX_CODE_LENGTH = 12


def _dotted_path_error(name: str, value: Any) -> CheckMessage | None:
    if value is None:
        return None
    problem = None
    if not isinstance(value, str):
        problem = f"not {value!r}"
    else:
        try:
            function = import_string(value)
        except ImportError as exc:
            problem = f"{value!r} can't be imported: {exc}"
        else:
            if not callable(function):
                problem = f"{value!r} isn't callable"
    if problem is None:
        return None
    return Error(
        f"SESAME_LOGIN_{name} must be None or the dotted path of a function; {problem}.",
        id="sesame_db.E035",
    )


def check_login_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Check the ``SESAME_LOGIN_*`` settings of login by email."""
    from urllib.parse import urlsplit

    errors: list[CheckMessage] = []
    max_age = conf.LOGIN_MAX_AGE
    if (
        isinstance(max_age, bool)
        or not isinstance(max_age, (int, float))
        or not max_age > 0
    ):
        errors.append(
            Error(
                f"SESAME_LOGIN_MAX_AGE must be a positive number of seconds or a timedelta, not {max_age!r}.",
                id="sesame_db.E030",
            )
        )
    valid_links = conf.LOGIN_MAX_VALID_LINKS
    if not _is_int(valid_links) or valid_links < 1:
        errors.append(
            Error(
                f"SESAME_LOGIN_MAX_VALID_LINKS must be a positive integer, not {valid_links!r}.",
                id="sesame_db.E031",
            )
        )
    throttle = conf.LOGIN_THROTTLE
    if throttle is not None:
        period = throttle.get("period") if isinstance(throttle, Mapping) else None
        if isinstance(period, datetime.timedelta):
            period = period.total_seconds()
        if (
            not isinstance(throttle, Mapping)
            or set(throttle) != {"address", "client", "period"}
            or not all(
                _is_int(throttle[key]) and throttle[key] >= 1
                for key in ("address", "client")
            )
            or isinstance(period, bool)
            or not isinstance(period, numbers.Real)
            or not float(period) > 0
        ):
            errors.append(
                Error(
                    "SESAME_LOGIN_THROTTLE must be None or a dict of positive 'address' and 'client' "
                    f"counts and a positive 'period' in seconds or a timedelta, not {throttle!r}.",
                    hint='For example: SESAME_LOGIN_THROTTLE = {"address": 3, "client": 30, "period": 900}.',
                    id="sesame_db.E032",
                )
            )
    for name in ("LOGIN_BIND_BROWSER", "LOGIN_CODE"):
        value = getattr(conf, name)
        if not isinstance(value, bool):
            errors.append(
                Error(
                    f"SESAME_{name} must be True or False, not {value!r}.",
                    id="sesame_db.E033",
                )
            )
    length = conf.LOGIN_CODE_LENGTH
    if not _is_int(length) or not MIN_CODE_LENGTH <= length <= MAX_CODE_LENGTH:
        errors.append(
            Error(
                f"SESAME_LOGIN_CODE_LENGTH must be an integer from {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH}, not {length!r}.",
                hint="Shorter codes are easier to guess in the tries that a link allows.",
                id="sesame_db.E034",
            )
        )
    for name in ("SEND_EMAIL", "SIGNUP"):
        if (
            error := _dotted_path_error(name, getattr(conf, "LOGIN_" + name))
        ) is not None:
            errors.append(error)
    base_url = conf.LOGIN_BASE_URL
    if base_url is not None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            errors.append(
                Error(
                    f"SESAME_LOGIN_BASE_URL must be None or an absolute http or https URL without query string, not {base_url!r}.",
                    hint='For example: SESAME_LOGIN_BASE_URL = "https://www.example.com".',
                    id="sesame_db.E036",
                )
            )
    if base_url is None and "*" in settings.ALLOWED_HOSTS and _login_urls_included():
        errors.append(
            Warning(
                'ALLOWED_HOSTS accepts any host ("*") and SESAME_LOGIN_BASE_URL is None: '
                "login emails link to the host that the request names, which "
                "whoever asks for someone's link chooses.",
                hint='Set SESAME_LOGIN_BASE_URL, e.g. "https://www.example.com", or list your hosts in ALLOWED_HOSTS.',
                id="sesame_db.W008",
            )
        )
    return errors


def _login_urls_included() -> bool:
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("sesame_db:login-request")
    except NoReverseMatch:
        return False
    return True

"""
Settings of the sesame_db demo site: embedded SQLite, console email. Not for production.

Environment variables switch it to a production-like setup for the load test
(benchmarks/load.py); unset, as with ``make demo``, nothing changes:

- ``DEMO_DEBUG=0`` turns DEBUG off;
- ``DEMO_SQLITE_PATH`` moves the SQLite database (the smoke test, tests/test_demo.py);
- ``DEMO_PGHOST`` (with ``DEMO_PGPORT``, ``DEMO_PGDATABASE``, ``DEMO_PGUSER``,
  ``DEMO_PGPASSWORD``) moves the database to PostgreSQL, with persistent
  connections (``DEMO_CONN_MAX_AGE`` seconds, 600 by default) and health checks,
  or with ``DEMO_PG_POOL=1`` a pool of connections (psycopg[pool]), and with
  ``DEMO_PG_PREPARED=1`` server-side binding with prepared statements;
- ``DEMO_SESAME_LOG_LEVEL`` sets the level of the ``sesame_db`` logger (DEBUG);
- ``DEMO_URLCONF`` replaces the URLconf, to add views around the demo's.

"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DEMO_SECRET_KEY", "demo-only-secret-key-do-not-use-in-production"
)
DEBUG = os.environ.get("DEMO_DEBUG", "1") != "0"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before sesame_db: its templates override sesame_db's.
    "demo_site",
    "sesame_db",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame_db.backends.ModelBackend",
]

ROOT_URLCONF = os.environ.get("DEMO_URLCONF", "demo_site.urls")

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES: dict[str, dict[str, object]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_SQLITE_PATH", BASE_DIR / "db.sqlite3"),
    }
}
if os.environ.get("DEMO_PGHOST"):
    # As a production site would: persistent connections, checked before
    # each request's first query, so that the site recovers by itself once
    # a restarted database is back. Under ASGI, where Django's docs say to
    # disable persistent connections, DEMO_PG_POOL=1 uses psycopg's pool
    # instead, whose connections are checked when taken.
    pool = os.environ.get("DEMO_PG_POOL") == "1"
    options: dict[str, object] = {"pool": True} if pool else {}
    if os.environ.get("DEMO_PG_PREPARED") == "1":
        # Django's opt-in: psycopg prepares a statement once it has run
        # prepare_threshold times, and PostgreSQL stops planning it on
        # each request (docs/performance.rst).
        options.update(server_side_binding=True, prepare_threshold=5)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["DEMO_PGHOST"],
            "PORT": os.environ.get("DEMO_PGPORT", ""),
            "NAME": os.environ.get("DEMO_PGDATABASE", "sesame_demo"),
            "USER": os.environ.get("DEMO_PGUSER", "postgres"),
            "PASSWORD": os.environ.get("DEMO_PGPASSWORD", ""),
            "CONN_MAX_AGE": 0
            if pool
            else int(os.environ.get("DEMO_CONN_MAX_AGE", "600")),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "sesame_db:login-request"
LOGIN_REDIRECT_URL = "home"

# Emails go to the console, readable (demo_site/mail.py). Django 6.1 replaces
# EMAIL_BACKEND with MAILERS.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "demo_site.mail.EmailBackend"}}
else:
    EMAIL_BACKEND = "demo_site.mail.EmailBackend"
DEFAULT_FROM_EMAIL = "demo@localhost"

# Links expire after one hour.
SESAME_MAX_AGE = 3600

# Keep tokens out of the debug page, error emails and request logs
# (docs/security.rst, "Keeping tokens out of error reports").
DEFAULT_EXCEPTION_REPORTER = "sesame_db.reporting.ExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "sesame_db.reporting.SafeExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "one_line_forbidden": {"()": "demo_site.log.OneLineForbidden"},
        "redact_tokens": {"()": "sesame_db.reporting.RedactTokenFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        "require_debug_true": {"()": "django.utils.log.RequireDebugTrue"},
    },
    "formatters": {
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_tokens"]},
        # Django's own handlers, as in its default configuration, plus the
        # filter: the console in DEBUG only, emails to ADMINS otherwise.
        "django_console": {
            "class": "logging.StreamHandler",
            "filters": ["require_debug_true", "redact_tokens"],
        },
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_tokens"],
        },
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "ERROR",
            "filters": ["require_debug_false", "redact_tokens"],
        },
    },
    "loggers": {
        # A refused link: one line, without the traceback of PermissionDenied.
        "django.request": {"filters": ["one_line_forbidden"]},
        "sesame_db": {
            "handlers": ["console"],
            "level": os.environ.get("DEMO_SESAME_LOG_LEVEL", "DEBUG"),
        },
        "django": {"handlers": ["django_console", "mail_admins"], "level": "INFO"},
        # runserver logs each request line, query string included.
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
        },
    },
}

# Several app servers (benchmarks/load.py --app-servers 2), set by DEMO_*
# variables: PostgreSQL through PgBouncer in transaction pooling mode, rate
# limit counters in a Redis server that every process shares, and client
# addresses from X-Forwarded-For, which the load generator sets.
if os.environ.get("DEMO_PGBOUNCER") == "1":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if os.environ.get("DEMO_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["DEMO_REDIS_URL"],
        }
    }
if os.environ.get("DEMO_RATE_LIMIT"):
    # "failures/seconds", such as "200/3600".
    _failures, _, _period = os.environ["DEMO_RATE_LIMIT"].partition("/")
    SESAME_RATE_LIMIT = {"failures": int(_failures), "period": int(_period)}
if os.environ.get("DEMO_TRUSTED_PROXIES"):
    SESAME_TRUSTED_PROXIES = int(os.environ["DEMO_TRUSTED_PROXIES"])

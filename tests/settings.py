from __future__ import annotations

import os

import django

SECRET_KEY = "tests-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "sesame_db",
    "tests",
    "tests.usermodels",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame_db.backends.ModelBackend",
]

# SESAME_TEST_DB selects the database: "sqlite" (default) or "postgresql",
# a throwaway server started by tests/postgres.py. Without PostgreSQL, the
# run skips every test with the reason, except in CI, where it fails.
TEST_DB = os.environ.get("SESAME_TEST_DB", "sqlite")
POSTGRES_UNAVAILABLE = ""
DATABASES: dict[str, dict[str, object]] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
}
if TEST_DB == "postgresql":
    from tests.postgres import Unavailable, database_settings

    try:
        DATABASES["default"] = database_settings()
        # SESAME_TEST_PG_PREPARED=1: server-side binding with prepared
        # statements, Django's opt-in of psycopg 3 (docs/performance.rst).
        if os.environ.get("SESAME_TEST_PG_PREPARED"):
            DATABASES["default"]["OPTIONS"] = {
                "server_side_binding": True,
                "prepare_threshold": 1,
            }
    except Unavailable as exc:
        if os.environ.get("CI"):
            raise
        POSTGRES_UNAVAILABLE = str(exc)
elif TEST_DB != "sqlite":
    raise ValueError(
        f"SESAME_TEST_DB must be 'sqlite' or 'postgresql', not {TEST_DB!r}"
    )
# A second database, for the tests of database routing.
DATABASES["other"] = {
    **DATABASES["default"],
    **({"NAME": "other"} if TEST_DB == "postgresql" else {}),
}
if TEST_DB == "postgresql" and os.environ.get("SESAME_TEST_PG_SUBPROCESS"):
    # A subprocess of tests/test_prepared.py, on the parent's server: test
    # databases of its own, which it destroys at the end.
    for _alias, _database in DATABASES.items():
        _database["TEST"] = {"NAME": f"test_sesame_db_subprocess_{_alias}"}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_REDIRECT_URL = "/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Django 6.1 deprecates EMAIL_BACKEND for MAILERS and warns, an error under
# -W error::DeprecationWarning, when an email is sent with neither. The test
# runner swaps each mailer's backend for the local-memory one.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

"""
Settings for the migration tests: only sesame_db and the apps it depends on.

``DEFAULT_AUTO_FIELD`` differs from the ``default_auto_field`` that
``SesameDbConfig`` pins, so a migration that depends on the project's setting
shows up as a change.

SESAME_TEST_DB selects the database, as in tests/settings.py: "sqlite"
(default, in memory) or "postgresql", a throwaway server started by
tests/postgres.py.

"""

from __future__ import annotations

import os

SECRET_KEY = "migrations-tests-secret-key-not-for-production"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "sesame_db",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame_db.backends.ModelBackend",
]

DATABASES: dict[str, dict[str, object]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    },
}

TEST_DB = os.environ.get("SESAME_TEST_DB", "sqlite")
if TEST_DB == "postgresql":
    from tests.postgres import database_settings

    DATABASES["default"] = database_settings()
elif TEST_DB != "sqlite":
    raise ValueError(
        f"SESAME_TEST_DB must be 'sqlite' or 'postgresql', not {TEST_DB!r}"
    )

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

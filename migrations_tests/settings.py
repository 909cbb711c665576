"""
Settings for the migration tests: only sesame_db and the apps it depends on.

``DEFAULT_AUTO_FIELD`` differs from the ``default_auto_field`` that
``SesameDbConfig`` pins, so a migration that depends on the project's setting
shows up as a change.

"""

from __future__ import annotations

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

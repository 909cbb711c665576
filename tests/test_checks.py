from __future__ import annotations

import datetime
import sys
import types
from io import StringIO
from unittest import mock

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import OperationalError, connections
from django.db.migrations.recorder import MigrationRecorder
from django.test import SimpleTestCase, TestCase, override_settings

from sesame_db import sql, store
from sesame_db.backends import ModelBackend
from sesame_db.checks import (
    check_backends,
    check_middleware,
    check_migrations,
    check_settings,
    check_store_settings,
    check_user_model,
)

from .mixins import IsolateDjangoSesameMixin, installed_functions

SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
MESSAGES = "django.contrib.messages.middleware.MessageMiddleware"
SESAME = "sesame_db.middleware.AuthenticationMiddleware"


class CustomBackend(ModelBackend):
    """A subclass of sesame_db's backend."""


def ids(messages):
    return [message.id for message in messages]


def run_check_command():
    """Run ``manage.py check`` and return everything that it reported."""
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command("check", stdout=stdout, stderr=stderr)
    except SystemCheckError as exc:
        return str(exc) + stdout.getvalue() + stderr.getvalue()
    return stdout.getvalue() + stderr.getvalue()


class TestCheckSettings(IsolateDjangoSesameMixin, SimpleTestCase):
    def test_default_settings(self):
        self.assertEqual(check_settings(), [])

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_e001_insecure(self):
        errors = check_settings()
        self.assertEqual(ids(errors), ["sesame_db.E001"])
        self.assertEqual(
            errors[0].msg,
            "Insecure configuration: tokens never expire and survive password changes.",
        )
        self.assertTrue(errors[0].is_serious())

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False, SESAME_MAX_AGE=300)
    def test_e001_not_triggered_with_max_age(self):
        self.assertEqual(check_settings(), [])

    @override_settings(SESAME_MAX_AGE=None)
    def test_e001_not_triggered_with_password_invalidation(self):
        self.assertEqual(check_settings(), [])

    def test_e006_invalid_max_age(self):
        for max_age in [0, -1, 0.0, "300", True, False, datetime.timedelta(0), [300]]:
            with (
                self.subTest(max_age=max_age),
                override_settings(SESAME_MAX_AGE=max_age),
            ):
                errors = check_settings()
                self.assertEqual(ids(errors), ["sesame_db.E006"])
                self.assertTrue(errors[0].is_serious())

    def test_e006_message(self):
        with override_settings(SESAME_MAX_AGE="300"):
            errors = check_settings()
        self.assertEqual(
            errors[0].msg,
            "SESAME_MAX_AGE must be None, a positive number of seconds or a timedelta, not '300'.",
        )

    def test_e006_valid_max_age(self):
        for max_age in [None, 1, 300, 0.5, datetime.timedelta(minutes=5)]:
            with (
                self.subTest(max_age=max_age),
                override_settings(SESAME_MAX_AGE=max_age),
            ):
                self.assertEqual(check_settings(), [])

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False, SESAME_MAX_AGE=0)
    def test_e006_takes_precedence_over_e001(self):
        self.assertEqual(ids(check_settings()), ["sesame_db.E006"])

    def test_e005_invalid_signature_size(self):
        for size in [0, -1, 65, 10.0, "10", True, None]:
            with (
                self.subTest(size=size),
                override_settings(SESAME_SIGNATURE_SIZE=size),
            ):
                errors = check_settings()
                self.assertEqual(ids(errors), ["sesame_db.E005"])
                self.assertEqual(
                    errors[0].msg,
                    f"SESAME_SIGNATURE_SIZE must be an integer between 1 and 64, not {size!r}.",
                )

    def test_e005_valid_signature_size(self):
        for size in [1, 10, 64]:
            with (
                self.subTest(size=size),
                override_settings(SESAME_SIGNATURE_SIZE=size),
            ):
                self.assertEqual(check_settings(), [])

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v2", "does_not_exist.tokens"])
    def test_e004_cannot_import(self):
        errors = check_settings()
        self.assertEqual(ids(errors), ["sesame_db.E004"])
        self.assertTrue(
            errors[0].msg.startswith(
                "SESAME_TOKENS contains 'does_not_exist.tokens', which cannot be imported: "
            ),
            errors[0].msg,
        )

    @override_settings(SESAME_TOKENS=["json"])
    def test_e004_not_a_token_format(self):
        errors = check_settings()
        self.assertEqual(ids(errors), ["sesame_db.E004"])
        self.assertEqual(
            errors[0].msg,
            "SESAME_TOKENS contains 'json', which doesn't define create_token, decode_token, detect_token.",
        )

    def test_e004_incomplete_token_format(self):
        # django-sesame's token modules have parse_token, not decode_token.
        module = types.ModuleType("legacy_tokens")
        module.create_token = module.detect_token = lambda *args: None  # type: ignore[attr-defined]
        with (
            mock.patch.dict(sys.modules, {"legacy_tokens": module}),
            override_settings(SESAME_TOKENS=["legacy_tokens"]),
        ):
            errors = check_settings()
        self.assertEqual(ids(errors), ["sesame_db.E004"])
        self.assertEqual(
            errors[0].msg,
            "SESAME_TOKENS contains 'legacy_tokens', which doesn't define decode_token.",
        )

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v1"])
    def test_e004_not_triggered(self):
        self.assertEqual(check_settings(), [])

    # With an empty SESAME_TOKENS, every token would be rejected as malformed
    # and create_token() would raise IndexError: a check reports it.
    @override_settings(SESAME_TOKENS=[])
    def test_e004_no_token_format(self):
        self.assertEqual(ids(check_settings()), ["sesame_db.E004"])

    @override_settings(
        SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False,
        SESAME_SIGNATURE_SIZE=0,
        SESAME_TOKENS=["json"],
    )
    def test_several_errors(self):
        self.assertEqual(
            ids(check_settings()),
            ["sesame_db.E001", "sesame_db.E005", "sesame_db.E004"],
        )


class TestCheckUserModel(IsolateDjangoSesameMixin, SimpleTestCase):
    def test_default_settings(self):
        self.assertEqual(check_user_model(), [])

    def test_custom_user_models(self):
        for model in ["tests.UUIDUser", "tests.StrUser", "tests.BigUser"]:
            with self.subTest(model=model), override_settings(AUTH_USER_MODEL=model):
                self.assertEqual(check_user_model(), [])

    @override_settings(SESAME_PRIMARY_KEY_FIELD="email")
    def test_e003_not_unique(self):
        errors = check_user_model()
        self.assertEqual(ids(errors), ["sesame_db.E003"])
        self.assertEqual(
            errors[0].msg,
            "Cannot pack primary keys of users: auth.User.email isn't unique: "
            "set SESAME_PRIMARY_KEY_FIELD to a unique field.",
        )

    @override_settings(SESAME_PRIMARY_KEY_FIELD="does_not_exist")
    def test_e003_no_such_field(self):
        self.assertEqual(ids(check_user_model()), ["sesame_db.E003"])

    @override_settings(SESAME_PACKER="tests.test_checks.DoesNotExist")
    def test_e003_packer_not_found(self):
        self.assertEqual(ids(check_user_model()), ["sesame_db.E003"])

    def test_e003_unsupported_primary_key(self):
        from django.contrib.auth import get_user_model

        pk = get_user_model()._meta.pk
        with mock.patch.object(pk, "get_internal_type", return_value="DecimalField"):
            errors = check_user_model()
        self.assertEqual(ids(errors), ["sesame_db.E003"])
        self.assertEqual(
            errors[0].msg,
            "Cannot pack primary keys of users: DecimalField primary keys aren't "
            "supported: set SESAME_PACKER to a custom packer.",
        )

    @override_settings(SESAME_PRIMARY_KEY_FIELD="username")
    def test_e003_not_triggered_with_unique_field(self):
        self.assertEqual(check_user_model(), [])

    @override_settings(SESAME_PACKER="sesame_db.packers.StrPacker")
    def test_e003_not_triggered_with_packer(self):
        self.assertEqual(check_user_model(), [])

    @override_settings(
        AUTH_USER_MODEL="tests.NoEmailUser", SESAME_INVALIDATE_ON_EMAIL_CHANGE=True
    )
    def test_e002_no_email_field(self):
        errors = check_user_model()
        self.assertEqual(ids(errors), ["sesame_db.E002"])
        self.assertEqual(
            errors[0].msg,
            "SESAME_INVALIDATE_ON_EMAIL_CHANGE is set but tests.NoEmailUser has no field 'missing'.",
        )

    @override_settings(AUTH_USER_MODEL="tests.NoEmailUser")
    def test_e002_not_triggered_without_email_invalidation(self):
        self.assertEqual(check_user_model(), [])

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_e002_not_triggered_with_email_field(self):
        self.assertEqual(check_user_model(), [])


class TestCheckBackends(SimpleTestCase):
    def test_default_settings(self):
        self.assertEqual(check_backends(), [])

    @override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]
    )
    def test_w001_no_sesame_backend(self):
        warnings = check_backends()
        self.assertEqual(ids(warnings), ["sesame_db.W001"])
        self.assertFalse(warnings[0].is_serious())

    @override_settings(
        AUTHENTICATION_BACKENDS=["does_not_exist.Backend", "tests.DoesNotExist"]
    )
    def test_w001_backends_not_found(self):
        self.assertEqual(ids(check_backends()), ["sesame_db.W001"])

    @override_settings(AUTHENTICATION_BACKENDS=["tests.test_checks.CustomBackend"])
    def test_w001_not_triggered_with_subclass(self):
        self.assertEqual(check_backends(), [])

    @override_settings(
        AUTHENTICATION_BACKENDS=[
            "does_not_exist.Backend",
            "sesame_db.backends.ModelBackend",
        ]
    )
    def test_w001_not_triggered_after_missing_backend(self):
        self.assertEqual(check_backends(), [])


class TestCheckMiddleware(SimpleTestCase):
    def test_default_settings(self):
        self.assertNotIn(SESAME, settings.MIDDLEWARE)
        self.assertEqual(check_middleware(), [])

    @override_settings(MIDDLEWARE=[SESSION, AUTH, SESAME, MESSAGES])
    def test_w002_not_triggered(self):
        self.assertEqual(check_middleware(), [])

    @override_settings(MIDDLEWARE=[SESSION, SESAME, AUTH, MESSAGES])
    def test_w002_before_auth(self):
        warnings = check_middleware()
        self.assertEqual(ids(warnings), ["sesame_db.W002"])
        self.assertIn(f"is placed before {AUTH}", warnings[0].msg)
        self.assertFalse(warnings[0].is_serious())

    @override_settings(MIDDLEWARE=[SESAME, SESSION, AUTH, MESSAGES])
    def test_w002_before_session_and_auth(self):
        warnings = check_middleware()
        self.assertEqual(ids(warnings), ["sesame_db.W002", "sesame_db.W002"])
        self.assertIn(f"is placed before {SESSION}", warnings[0].msg)
        self.assertIn(f"is placed before {AUTH}", warnings[1].msg)


class TestCheckCommand(IsolateDjangoSesameMixin, SimpleTestCase):
    """The checks are registered: ``manage.py check`` reports them."""

    def test_default_settings(self):
        self.assertNotIn("sesame_db.", run_check_command())

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_e001(self):
        self.assertIn("sesame_db.E001", run_check_command())

    @override_settings(
        AUTH_USER_MODEL="tests.NoEmailUser", SESAME_INVALIDATE_ON_EMAIL_CHANGE=True
    )
    def test_e002(self):
        self.assertIn("sesame_db.E002", run_check_command())

    @override_settings(AUTH_USER_MODEL="tests.NoEmailUser")
    def test_e002_not_triggered(self):
        self.assertNotIn("sesame_db.E002", run_check_command())

    @override_settings(SESAME_PRIMARY_KEY_FIELD="email")
    def test_e003(self):
        self.assertIn("sesame_db.E003", run_check_command())

    @override_settings(SESAME_TOKENS=["json"])
    def test_e004(self):
        self.assertIn("sesame_db.E004", run_check_command())

    @override_settings(SESAME_SIGNATURE_SIZE=100)
    def test_e005(self):
        self.assertIn("sesame_db.E005", run_check_command())

    @override_settings(SESAME_MAX_AGE=-1)
    def test_e006(self):
        self.assertIn("sesame_db.E006", run_check_command())

    def test_errors_stop_the_command(self):
        with (
            override_settings(SESAME_MAX_AGE=-1),
            self.assertRaises(SystemCheckError),
        ):
            call_command("check", stdout=StringIO(), stderr=StringIO())

    @override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]
    )
    def test_w001(self):
        # Warnings don't stop the command.
        stderr = StringIO()
        call_command("check", stdout=StringIO(), stderr=stderr)
        self.assertIn("sesame_db.W001", stderr.getvalue())

    @override_settings(MIDDLEWARE=[SESSION, SESAME, AUTH, MESSAGES])
    def test_w002(self):
        stderr = StringIO()
        call_command("check", stdout=StringIO(), stderr=stderr)
        self.assertIn("sesame_db.W002", stderr.getvalue())

    @override_settings(MIDDLEWARE=[SESSION, AUTH, SESAME, MESSAGES])
    def test_w002_not_triggered(self):
        self.assertNotIn("sesame_db.W002", run_check_command())


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:6379",
}


class TestCheckStoreSettings(SimpleTestCase):
    def test_default_settings(self):
        self.assertEqual(check_store_settings(), [])

    def test_e007_trusted_proxies(self):
        for value in [-1, "1", 1.0, True, None, [1]]:
            with (
                self.subTest(value=value),
                override_settings(SESAME_TRUSTED_PROXIES=value),
            ):
                errors = check_store_settings()
                self.assertEqual(ids(errors), ["sesame_db.E007"])
                self.assertTrue(errors[0].is_serious())
        with override_settings(SESAME_TRUSTED_PROXIES="2"):
            self.assertEqual(
                check_store_settings()[0].msg,
                "SESAME_TRUSTED_PROXIES must be a non-negative integer, not '2'.",
            )

    def test_e007_not_triggered(self):
        for value in [0, 1, 2, 10]:
            with (
                self.subTest(value=value),
                override_settings(SESAME_TRUSTED_PROXIES=value),
            ):
                self.assertEqual(check_store_settings(), [])

    @override_settings(SESAME_TRUSTED_PROXIES=11)
    def test_w003_too_many_proxies(self):
        warnings = check_store_settings()
        self.assertEqual(ids(warnings), ["sesame_db.W003"])
        self.assertFalse(warnings[0].is_serious())
        self.assertEqual(
            warnings[0].msg,
            "SESAME_TRUSTED_PROXIES is 11: requests rarely cross more than 10 proxies.",
        )

    def test_e008_booleans(self):
        for name in ["STORE", "AUDIT", "CONFIRM"]:
            for value in [1, 0, "True", None]:
                with (
                    self.subTest(name=name, value=value),
                    override_settings(**{f"SESAME_{name}": value}),
                ):
                    errors = check_store_settings()
                    self.assertEqual(ids(errors), ["sesame_db.E008"])
                    self.assertEqual(
                        errors[0].msg,
                        f"SESAME_{name} must be True or False, not {value!r}.",
                    )

    @override_settings(SESAME_STORE=1, SESAME_AUDIT="yes", SESAME_CONFIRM=True)
    def test_e008_one_error_per_setting(self):
        self.assertEqual(ids(check_store_settings()), ["sesame_db.E008"] * 2)

    def test_e009_rate_limit(self):
        for value in [
            10,
            {"failures": 10},
            {"failures": 10, "period": 60, "per": "ip"},
            {"failures": 0, "period": 60},
            {"failures": True, "period": 60},
            {"failures": "10", "period": 60},
            {"failures": 10, "period": 0},
            {"failures": 10, "period": -1.5},
            {"failures": 10, "period": "60"},
            {"failures": 10, "period": True},
            {"failures": 10, "period": float("nan")},
            {"failures": 10, "period": datetime.timedelta(0)},
        ]:
            with (
                self.subTest(value=value),
                override_settings(SESAME_RATE_LIMIT=value, CACHES={"default": REDIS}),
            ):
                errors = check_store_settings()
                self.assertEqual(ids(errors), ["sesame_db.E009"])
                self.assertTrue(errors[0].is_serious())

    @override_settings(SESAME_RATE_LIMIT={"failures": 10})
    def test_e009_message(self):
        self.assertEqual(
            check_store_settings()[0].msg,
            "SESAME_RATE_LIMIT must be None or a dict with the keys 'failures' and 'period', not {'failures': 10}.",
        )

    def test_e009_not_triggered(self):
        for value in [
            None,
            {"failures": 1, "period": 1},
            {"failures": 10, "period": 0.5},
            {"failures": 10, "period": datetime.timedelta(minutes=5)},
        ]:
            with (
                self.subTest(value=value),
                override_settings(SESAME_RATE_LIMIT=value, CACHES={"default": REDIS}),
            ):
                self.assertEqual(check_store_settings(), [])

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60},
        SESAME_RATE_LIMIT_CACHE="ratelimit",
        CACHES={"default": LOCMEM},
    )
    def test_e010_unknown_cache(self):
        errors = check_store_settings()
        self.assertEqual(ids(errors), ["sesame_db.E010"])
        self.assertEqual(
            errors[0].msg,
            "SESAME_RATE_LIMIT_CACHE is 'ratelimit', which isn't a cache in CACHES.",
        )

    @override_settings(SESAME_RATE_LIMIT_CACHE="ratelimit", CACHES={"default": LOCMEM})
    def test_e010_without_rate_limit(self):
        # The cache counts repeated rejections for the audit trail too.
        self.assertEqual(ids(check_store_settings()), ["sesame_db.E010"])

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60},
        CACHES={"default": DUMMY},
    )
    def test_w005_dummy_cache(self):
        warnings = check_store_settings()
        self.assertEqual(ids(warnings), ["sesame_db.W005"])
        self.assertFalse(warnings[0].is_serious())

    def test_w006_cache_without_atomic_incr(self):
        for backend in [
            "django.core.cache.backends.filebased.FileBasedCache",
            "django.core.cache.backends.db.DatabaseCache",
        ]:
            with (
                self.subTest(backend=backend),
                override_settings(
                    SESAME_RATE_LIMIT={"failures": 10, "period": 60},
                    CACHES={"default": {"BACKEND": backend, "LOCATION": "x"}},
                ),
            ):
                warnings = check_store_settings()
                self.assertEqual(ids(warnings), ["sesame_db.W006"])
                self.assertEqual(
                    warnings[0].msg,
                    "SESAME_RATE_LIMIT counts failures in the cache 'default', whose incr() isn't atomic: "
                    "concurrent failures can go over the limit, and each one restarts the period.",
                )

    def test_w006_not_triggered(self):
        for backend in [
            "django.core.cache.backends.redis.RedisCache",
            "django.core.cache.backends.memcached.PyMemcacheCache",
            "no.such.Cache",
        ]:
            with (
                self.subTest(backend=backend),
                override_settings(
                    SESAME_RATE_LIMIT={"failures": 10, "period": 60},
                    CACHES={"default": {"BACKEND": backend}},
                ),
            ):
                self.assertEqual(check_store_settings(), [])

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60}, CACHES={"default": LOCMEM}
    )
    def test_w007_local_memory_cache(self):
        warnings = check_store_settings()
        self.assertEqual(ids(warnings), ["sesame_db.W007"])
        self.assertFalse(warnings[0].is_serious())
        self.assertEqual(
            warnings[0].msg,
            "SESAME_RATE_LIMIT counts failures in the cache 'default', a LocMemCache, which each process keeps "
            "for itself: with several processes or servers, a client gets the limit once per process.",
        )

    @override_settings(SESAME_RATE_LIMIT=None, CACHES={"default": LOCMEM})
    def test_w007_not_triggered_without_rate_limit(self):
        self.assertEqual(check_store_settings(), [])


class TestCheckMigrations(TestCase):
    databases = {"default", "other"}

    def unapply(self, name, using="default"):
        # Rolled back with the test's transaction.
        MigrationRecorder(connections[using]).record_unapplied("sesame_db", name)

    def test_applied(self):
        self.assertEqual(check_migrations(databases=["default", "other"]), [])

    def test_only_with_databases(self):
        self.unapply("0002_tokenevent_reason_rate_limited")
        self.assertEqual(check_migrations(), [])
        self.assertEqual(check_migrations(databases=[]), [])

    def test_w004_unapplied(self):
        self.unapply("0001_initial")
        self.unapply("0002_tokenevent_reason_rate_limited")
        warnings = check_migrations(databases=["default", "other"])
        self.assertEqual(ids(warnings), ["sesame_db.W004"])
        self.assertFalse(warnings[0].is_serious())
        self.assertEqual(
            warnings[0].msg,
            "The database 'default' lacks migrations of sesame_db: "
            "0001_initial, 0002_tokenevent_reason_rate_limited. "
            "Stored links fail until they're applied.",
        )
        self.assertEqual(
            warnings[0].hint, "Run: manage.py migrate sesame_db --database default"
        )

    def test_w004_other_database(self):
        self.unapply("0002_tokenevent_reason_rate_limited", using="other")
        warnings = check_migrations(databases=["default", "other"])
        self.assertEqual(ids(warnings), ["sesame_db.W004"])
        self.assertIn("'other'", warnings[0].msg)

    @override_settings(DATABASE_ROUTERS=["tests.routers.StoreOnDefaultRouter"])
    def test_w004_only_where_the_router_allows_the_store(self):
        self.unapply("0002_tokenevent_reason_rate_limited", using="other")
        self.assertEqual(check_migrations(databases=["default", "other"]), [])

    def test_other_apps_only(self):
        self.unapply("0002_tokenevent_reason_rate_limited")
        app_configs = [apps.get_app_config("auth")]
        self.assertEqual(
            check_migrations(app_configs=app_configs, databases=["default"]), []
        )
        app_configs.append(apps.get_app_config("sesame_db"))
        self.assertEqual(
            ids(check_migrations(app_configs=app_configs, databases=["default"])),
            ["sesame_db.W004"],
        )

    @pytest.mark.postgresql
    def test_w009_missing_functions(self):
        # Settings that migrate didn't install the functions of.
        with override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True):
            missing = store.missing_functions("default")
            warnings = check_migrations(databases=["default"])
            # Those of guest links check no user's row: they're the same.
            self.assertEqual(len(missing), 2)
            self.assertEqual(ids(warnings), ["sesame_db.W009"])
            self.assertFalse(warnings[0].is_serious())
            self.assertEqual(
                warnings[0].msg,
                "The database 'default' lacks functions of sesame_db for the current "
                f"settings: {', '.join(missing)}. "
                "Stored links work without them, but each use costs more.",
            )
            self.assertEqual(
                warnings[0].hint, "Run: manage.py migrate --database default"
            )
            installed_functions(self, "default", store.function_variants())
            self.assertEqual(store.missing_functions("default"), [])
            self.assertEqual(check_migrations(databases=["default"]), [])

    @pytest.mark.postgresql
    def test_w009_functions_the_role_may_not_execute(self):
        # Hardened databases revoke EXECUTE from PUBLIC: migrate can't help.
        # All rolled back with the test's transaction.
        before = sql.list_functions("default")
        self.addCleanup(sql._installed.__setitem__, "default", before)
        name = sorted(before)[0]
        with connections["default"].cursor() as cursor:
            cursor.execute("CREATE ROLE sesame_db_site")
            cursor.execute(
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO sesame_db_site"
            )
            cursor.execute(f"REVOKE EXECUTE ON FUNCTION {name} FROM PUBLIC")
            cursor.execute("SET LOCAL ROLE sesame_db_site")
        warnings = check_migrations(databases=["default"])
        self.assertEqual(ids(warnings), ["sesame_db.W009"])
        self.assertEqual(
            warnings[0].msg,
            "The role of the database 'default' may not execute functions of "
            f"sesame_db: {name}. "
            "Stored links work without them, but each use costs more.",
        )
        self.assertEqual(warnings[0].hint, "GRANT EXECUTE on them to the site's role.")

    def test_unreachable_database(self):
        with mock.patch(
            "django.db.migrations.loader.MigrationLoader.__init__",
            side_effect=OperationalError("cannot connect"),
        ):
            self.assertEqual(check_migrations(databases=["default"]), [])

    def test_check_command(self):
        self.unapply("0002_tokenevent_reason_rate_limited")
        # Without --database, database checks don't run.
        self.assertNotIn("sesame_db.W004", run_check_command())
        stderr = StringIO()
        call_command("check", "--database", "default", stdout=StringIO(), stderr=stderr)
        self.assertIn("sesame_db.W004", stderr.getvalue())


class TestCheckStoreCommand(SimpleTestCase):
    """The store checks are registered: ``manage.py check`` reports them."""

    @override_settings(SESAME_TRUSTED_PROXIES=-1)
    def test_e007(self):
        self.assertIn("sesame_db.E007", run_check_command())

    @override_settings(SESAME_TRUSTED_PROXIES=50)
    def test_w003(self):
        self.assertIn("sesame_db.W003", run_check_command())

    @override_settings(SESAME_STORE="yes")
    def test_e008(self):
        self.assertIn("sesame_db.E008", run_check_command())

    @override_settings(SESAME_RATE_LIMIT=10)
    def test_e009(self):
        self.assertIn("sesame_db.E009", run_check_command())

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60},
        SESAME_RATE_LIMIT_CACHE="missing",
    )
    def test_e010(self):
        self.assertIn("sesame_db.E010", run_check_command())

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60}, CACHES={"default": DUMMY}
    )
    def test_w005(self):
        self.assertIn("sesame_db.W005", run_check_command())

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": "/nonexistent/sesame-db-check",
            }
        },
    )
    def test_w006(self):
        self.assertIn("sesame_db.W006", run_check_command())

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 10, "period": 60}, CACHES={"default": LOCMEM}
    )
    def test_w007(self):
        self.assertIn("sesame_db.W007", run_check_command())

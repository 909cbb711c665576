from __future__ import annotations

import datetime
import hashlib
from typing import Any

from django.conf import settings
from django.test import SimpleTestCase, override_settings

from sesame_db import packers, tokens_v1, tokens_v2
from sesame_db.conf import DEFAULTS, conf, derive_key


def expected_key(secret_key, key="", max_age=None, packer=None, pk_field="pk"):
    """Derive a signing key as django-sesame 3.x does, from its documented recipe."""
    parts = [
        secret_key,
        key,
        "" if max_age is None else "max_age",
        "" if packer is None else packer,
        pk_field,
    ]
    return hashlib.blake2b("|".join(parts).encode(), person=b"sesame.settings").digest()


class TestDefaults(SimpleTestCase):
    # The documented defaults of django-sesame 3.x, with sesame_db's modules.
    DOCUMENTED = {
        "TOKEN_NAME": "sesame",
        "MAX_AGE": None,
        "ONE_TIME": False,
        "INVALIDATE_ON_PASSWORD_CHANGE": True,
        "INVALIDATE_ON_EMAIL_CHANGE": False,
        "PACKER": None,
        "PRIMARY_KEY_FIELD": "pk",
        "TOKENS": ["sesame_db.tokens_v2", "sesame_db.tokens_v1"],
        "KEY": "",
        "SIGNATURE_SIZE": 10,
        "SALT": "sesame",
        # The database store.
        "STORE": False,
        "AUDIT": True,
        "TRUSTED_PROXIES": 0,
        "CONFIRM": False,
        "CONFIRM_TEMPLATE": "sesame_db/confirm.html",
        "TOKEN_RETENTION": 30 * 86400,
        "EVENT_RETENTION": 365 * 86400,
        "SYNCHRONOUS_COMMIT": True,
        # The admin.
        "ADMIN_SCOPES": [],
        "ADMIN_EVENTS_DELETABLE": False,
        # Rate limiting.
        "RATE_LIMIT": None,
        "RATE_LIMIT_CACHE": "default",
        # Login by email.
        "LOGIN_MAX_AGE": 600,
        "LOGIN_MAX_VALID_LINKS": 1,
        "LOGIN_THROTTLE": {"address": 3, "client": 30, "period": 900},
        "LOGIN_BIND_BROWSER": True,
        "LOGIN_CODE": True,
        "LOGIN_CODE_LENGTH": 6,
        "LOGIN_SEND_EMAIL": None,
        "LOGIN_SIGNUP": None,
        "LOGIN_BASE_URL": None,
    }

    def test_defaults_are_documented(self):
        self.assertEqual(DEFAULTS, self.DOCUMENTED)

    def test_conf_returns_defaults(self):
        for name, default in DEFAULTS.items():
            with self.subTest(name=name):
                self.assertFalse(hasattr(settings, "SESAME_" + name))
                self.assertEqual(getattr(conf, name), default)

    def test_token_formats(self):
        self.assertEqual(conf.token_formats, [tokens_v2, tokens_v1])

    def test_packer(self):
        # auth.User has an AutoField primary key.
        self.assertIs(type(packers.current_packer()), packers.LongPacker)


class TestOverrideSettings(SimpleTestCase):
    def test_token_name(self):
        self.assertEqual(conf.TOKEN_NAME, "sesame")
        with override_settings(SESAME_TOKEN_NAME="login"):
            self.assertEqual(conf.TOKEN_NAME, "login")
        self.assertEqual(conf.TOKEN_NAME, "sesame")

    def test_every_setting(self):
        values = {
            "TOKEN_NAME": "login",
            "MAX_AGE": 60,
            "ONE_TIME": True,
            "INVALIDATE_ON_PASSWORD_CHANGE": False,
            "INVALIDATE_ON_EMAIL_CHANGE": True,
            "PACKER": "sesame_db.packers.StrPacker",
            "PRIMARY_KEY_FIELD": "username",
            "TOKENS": ["sesame_db.tokens_v1"],
            "KEY": "other",
            "SIGNATURE_SIZE": 16,
            "SALT": "pepper",
            "STORE": True,
            "AUDIT": False,
            "TRUSTED_PROXIES": 2,
            "CONFIRM": True,
            "CONFIRM_TEMPLATE": "confirm.html",
            "TOKEN_RETENTION": 3600,
            "EVENT_RETENTION": 7200,
            "SYNCHRONOUS_COMMIT": False,
            "ADMIN_SCOPES": ["login", "report:42"],
            "ADMIN_EVENTS_DELETABLE": True,
            "RATE_LIMIT": {"failures": 5, "period": 60},
            "RATE_LIMIT_CACHE": "other",
            "LOGIN_MAX_AGE": 300,
            "LOGIN_MAX_VALID_LINKS": 2,
            "LOGIN_THROTTLE": {"address": 1, "client": 2, "period": 60},
            "LOGIN_BIND_BROWSER": False,
            "LOGIN_CODE": False,
            "LOGIN_CODE_LENGTH": 8,
            "LOGIN_SEND_EMAIL": "myapp.tasks.send_login_email",
            "LOGIN_SIGNUP": "myapp.accounts.create_account",
            "LOGIN_BASE_URL": "https://www.example.com",
        }
        self.assertEqual(set(values), set(DEFAULTS))
        for name, value in values.items():
            with self.subTest(name=name):
                getattr(conf, name)  # Fill the cache.
                with override_settings(**{"SESAME_" + name: value}):
                    self.assertEqual(getattr(conf, name), value)
                self.assertEqual(getattr(conf, name), DEFAULTS[name])

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_int(self):
        self.assertEqual(conf.MAX_AGE, 300)

    @override_settings(SESAME_MAX_AGE=datetime.timedelta(minutes=5))
    def test_max_age_timedelta(self):
        self.assertIsInstance(conf.MAX_AGE, float)
        self.assertEqual(conf.MAX_AGE, 300.0)

    @override_settings(
        SESAME_TOKEN_RETENTION=datetime.timedelta(days=2),
        SESAME_EVENT_RETENTION=datetime.timedelta(hours=1),
    )
    def test_retention_timedelta(self):
        self.assertEqual(conf.TOKEN_RETENTION, 2 * 86400)
        self.assertEqual(conf.EVENT_RETENTION, 3600)

    @override_settings(SESAME_MAX_AGE=datetime.timedelta(milliseconds=1500))
    def test_max_age_timedelta_fraction(self):
        self.assertEqual(conf.MAX_AGE, 1.5)

    def test_token_formats(self):
        self.assertEqual(conf.token_formats, [tokens_v2, tokens_v1])
        with override_settings(SESAME_TOKENS=["sesame_db.tokens_v1"]):
            self.assertEqual(conf.token_formats, [tokens_v1])
        self.assertEqual(conf.token_formats, [tokens_v2, tokens_v1])


class TestDerivedValues(SimpleTestCase):
    def test_signing_key(self):
        self.assertEqual(conf.SIGNING_KEY, expected_key(settings.SECRET_KEY))
        self.assertEqual(len(conf.SIGNING_KEY), 64)

    def test_verification_keys(self):
        self.assertEqual(conf.VERIFICATION_KEYS, [expected_key(settings.SECRET_KEY)])

    def test_secret_key_change(self):
        old_key = conf.SIGNING_KEY  # Fill the cache.
        with override_settings(SECRET_KEY="new"):
            self.assertEqual(conf.SIGNING_KEY, expected_key("new"))
            self.assertEqual(conf.VERIFICATION_KEYS, [expected_key("new")])
        self.assertEqual(conf.SIGNING_KEY, old_key)

    def test_bytes_secret_key(self):
        # Django accepts bytes; django-sesame mixes in their str().
        with override_settings(SECRET_KEY=b"bytes"):
            self.assertEqual(conf.SIGNING_KEY, expected_key("b'bytes'"))

    def test_secret_key_fallbacks_change(self):
        self.assertEqual(conf.VERIFICATION_KEYS, [expected_key(settings.SECRET_KEY)])
        with override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old", "older"]):
            self.assertEqual(conf.SIGNING_KEY, expected_key("new"))
            self.assertEqual(
                conf.VERIFICATION_KEYS,
                [expected_key("new"), expected_key("old"), expected_key("older")],
            )
        self.assertEqual(conf.VERIFICATION_KEYS, [expected_key(settings.SECRET_KEY)])

    def test_only_secret_key_fallbacks_change(self):
        self.assertEqual(conf.VERIFICATION_KEYS, [expected_key(settings.SECRET_KEY)])
        with override_settings(SECRET_KEY_FALLBACKS=["old"]):
            self.assertEqual(
                conf.VERIFICATION_KEYS,
                [expected_key(settings.SECRET_KEY), expected_key("old")],
            )

    def test_settings_mixed_into_signing_key(self):
        cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
            ({"SESAME_KEY": "extra"}, {"key": "extra"}),
            ({"SESAME_MAX_AGE": 300}, {"max_age": 300}),
            (
                {"SESAME_MAX_AGE": datetime.timedelta(hours=1)},
                {"max_age": 3600},
            ),
            (
                {"SESAME_PACKER": "tests.test_conf.CustomPacker"},
                {"packer": "tests.test_conf.CustomPacker"},
            ),
            ({"SESAME_PRIMARY_KEY_FIELD": "username"}, {"pk_field": "username"}),
        ]
        default_key = conf.SIGNING_KEY
        for overrides, arguments in cases:
            with self.subTest(overrides=overrides), override_settings(**overrides):
                self.assertEqual(
                    conf.SIGNING_KEY, expected_key(settings.SECRET_KEY, **arguments)
                )
                self.assertNotEqual(conf.SIGNING_KEY, default_key)

    def test_max_age_value_not_mixed_into_signing_key(self):
        # Changing SESAME_MAX_AGE is allowed as long as it isn't None.
        with override_settings(SESAME_MAX_AGE=300):
            key_300 = conf.SIGNING_KEY
        with override_settings(SESAME_MAX_AGE=datetime.timedelta(days=1)):
            self.assertEqual(conf.SIGNING_KEY, key_300)

    def test_sesame_db_packer_path_has_the_key_of_sesame_packer_path(self):
        # Projects migrating from django-sesame rename SESAME_PACKER.
        with override_settings(SESAME_PACKER="sesame_db.packers.StrPacker"):
            self.assertEqual(
                conf.SIGNING_KEY,
                expected_key(settings.SECRET_KEY, packer="sesame.packers.StrPacker"),
            )

    def test_auth_user_model_change(self):
        self.assertIs(
            type(packers.current_packer()), packers.LongPacker
        )  # Fill the cache.
        with override_settings(AUTH_USER_MODEL="tests.UUIDUser"):
            self.assertIs(type(packers.current_packer()), packers.UUIDPacker)
        self.assertIs(type(packers.current_packer()), packers.LongPacker)

    def test_packer_change(self):
        self.assertIs(
            type(packers.current_packer()), packers.LongPacker
        )  # Fill the cache.
        with override_settings(SESAME_PACKER="sesame_db.packers.LongLongPacker"):
            self.assertIs(type(packers.current_packer()), packers.LongLongPacker)
        self.assertIs(type(packers.current_packer()), packers.LongPacker)

    def test_primary_key_field_change(self):
        self.assertIs(
            type(packers.current_packer()), packers.LongPacker
        )  # Fill the cache.
        with override_settings(SESAME_PRIMARY_KEY_FIELD="username"):
            self.assertIs(type(packers.current_packer()), packers.StrPacker)
        self.assertIs(type(packers.current_packer()), packers.LongPacker)

    def test_packer_is_cached(self):
        self.assertIs(packers.current_packer(), packers.current_packer())

    def test_unrelated_setting_change_keeps_cache(self):
        packer = packers.current_packer()
        signing_key = conf.SIGNING_KEY
        with override_settings(USE_I18N=not settings.USE_I18N):
            self.assertIs(packers.current_packer(), packer)
            self.assertIs(conf.SIGNING_KEY, signing_key)


class CustomPacker(packers.BasePacker):
    pass


class TestDeriveKey(SimpleTestCase):
    def test_matches_recipe(self):
        self.assertEqual(
            derive_key("secret", "key", 300, "myapp.Packer", "username"),
            hashlib.blake2b(
                b"secret|key|max_age|myapp.Packer|username", person=b"sesame.settings"
            ).digest(),
        )

    def test_defaults(self):
        self.assertEqual(
            derive_key("secret", "", None, None, "pk"),
            hashlib.blake2b(b"secret||||pk", person=b"sesame.settings").digest(),
        )

    def test_sesame_db_packers_map_to_sesame_packers(self):
        for name in packers.__all__:
            if not name.endswith("Packer"):
                continue
            with self.subTest(name=name):
                self.assertEqual(
                    derive_key("secret", "", None, f"sesame_db.packers.{name}", "pk"),
                    derive_key("secret", "", None, f"sesame.packers.{name}", "pk"),
                )

    def test_other_packers_are_kept(self):
        self.assertNotEqual(
            derive_key("secret", "", None, "myapp.sesame_db.packers.X", "pk"),
            derive_key("secret", "", None, "sesame.packers.X", "pk"),
        )
        self.assertNotEqual(
            derive_key("secret", "", None, "sesame.packers.StrPacker", "pk"),
            derive_key("secret", "", None, "sesame.packers.BytesPacker", "pk"),
        )

    def test_each_input_matters(self):
        base = ("secret", "", None, None, "pk")
        variants = [
            ("other", "", None, None, "pk"),
            ("secret", "key", None, None, "pk"),
            ("secret", "", 300, None, "pk"),
            ("secret", "", None, "sesame.packers.StrPacker", "pk"),
            ("secret", "", None, None, "username"),
        ]
        keys = {derive_key(*base)} | {derive_key(*variant) for variant in variants}
        self.assertEqual(len(keys), 1 + len(variants))


class TestUnknownAttribute(SimpleTestCase):
    NAMES = ["nope", "NOPE", "packers", "SESAME_TOKEN_NAME"]

    def test_unknown_attribute(self):
        for name in self.NAMES:
            with self.subTest(name=name):
                with self.assertRaises(AttributeError):
                    getattr(conf, name)
                self.assertFalse(hasattr(conf, name))

    def test_unknown_sesame_setting_is_not_exposed(self):
        name = "NOPE"
        with override_settings(SESAME_NOPE=True), self.assertRaises(AttributeError):
            getattr(conf, name)


class TestLoadedSettings(SimpleTestCase):
    # Issue 13: once read, settings are plain instance attributes. A class
    # with __getattr__ routes every attribute access through a slower hook,
    # which CPython can't specialize, even for values that are found.
    def test_loaded_settings_have_no_getattr_hook(self):
        self.assertEqual(conf.TOKEN_NAME, "sesame")  # Fill the cache.
        self.assertFalse(hasattr(type(conf), "__getattr__"))
        self.assertIn("TOKEN_NAME", vars(conf))

    def test_cleared_settings_load_on_first_access(self):
        self.assertEqual(conf.TOKEN_NAME, "sesame")
        conf.clear()
        self.assertEqual(vars(conf), {})
        self.assertTrue(hasattr(type(conf), "__getattr__"))
        self.assertEqual(conf.TOKEN_NAME, "sesame")
        self.assertFalse(hasattr(type(conf), "__getattr__"))

    def test_unknown_names_raise_attribute_error(self):
        conf.clear()
        with self.assertRaises(AttributeError):
            getattr(conf, "NOT_A_SETTING")  # noqa: B009
        with self.assertRaises(AttributeError):
            getattr(conf, "not_a_value")  # noqa: B009
        self.assertEqual(conf.TOKEN_NAME, "sesame")
        with self.assertRaises(AttributeError):
            getattr(conf, "NOT_A_SETTING")  # noqa: B009

    def test_derived_values_are_cleared(self):
        hashers = conf.v2_hashers
        self.assertIs(conf.v2_hashers, hashers)
        with override_settings(SESAME_SIGNATURE_SIZE=12):
            self.assertEqual(conf.v2_hashers[0].digest_size, 12)
        self.assertEqual(conf.v2_hashers[0].digest_size, 10)

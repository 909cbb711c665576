"""The system checks of the SESAME_LOGIN_* settings: sesame_db.E030 to E036 and W008."""

from __future__ import annotations

import datetime

from django.test import SimpleTestCase, override_settings

from sesame_db.checks import check_login_settings

from .test_checks import ids, run_check_command


def a_function():
    pass


NOT_CALLABLE = 42


class LoginChecksTests(SimpleTestCase):
    def assertErrors(self, expected, **settings):
        with override_settings(**settings):
            self.assertEqual(ids(check_login_settings()), expected)

    def test_defaults(self):
        self.assertEqual(check_login_settings(), [])

    def test_e030_max_age(self):
        for value in [0, -1, "600", None, True]:
            with self.subTest(value=value):
                self.assertErrors(["sesame_db.E030"], SESAME_LOGIN_MAX_AGE=value)
        self.assertErrors([], SESAME_LOGIN_MAX_AGE=datetime.timedelta(minutes=5))
        self.assertErrors([], SESAME_LOGIN_MAX_AGE=30.5)

    def test_e031_max_valid_links(self):
        for value in [0, -1, "2", 1.5, True]:
            with self.subTest(value=value):
                self.assertErrors(
                    ["sesame_db.E031"], SESAME_LOGIN_MAX_VALID_LINKS=value
                )
        self.assertErrors([], SESAME_LOGIN_MAX_VALID_LINKS=3)

    def test_e032_throttle(self):
        for value in [
            {},
            {"address": 3, "client": 30},
            {"address": 0, "client": 30, "period": 60},
            {"address": 3, "client": "30", "period": 60},
            {"address": 3, "client": 30, "period": 0},
            {"address": 3, "client": 30, "period": True},
            {"address": 3, "client": 30, "period": 60, "other": 1},
            [3, 30, 60],
        ]:
            with self.subTest(value=value):
                self.assertErrors(["sesame_db.E032"], SESAME_LOGIN_THROTTLE=value)
        self.assertErrors([], SESAME_LOGIN_THROTTLE=None)
        self.assertErrors(
            [],
            SESAME_LOGIN_THROTTLE={
                "address": 1,
                "client": 1,
                "period": datetime.timedelta(hours=1),
            },
        )

    def test_e033_booleans(self):
        self.assertErrors(["sesame_db.E033"], SESAME_LOGIN_BIND_BROWSER="yes")
        self.assertErrors(["sesame_db.E033"], SESAME_LOGIN_CODE=1)

    def test_e034_code_length(self):
        for value in [5, 13, "6", 6.0]:
            with self.subTest(value=value):
                self.assertErrors(["sesame_db.E034"], SESAME_LOGIN_CODE_LENGTH=value)
        self.assertErrors([], SESAME_LOGIN_CODE_LENGTH=12)

    def test_e035_dotted_paths(self):
        for name in ["SESAME_LOGIN_SEND_EMAIL", "SESAME_LOGIN_SIGNUP"]:
            for value in [
                "tests.test_login_checks.missing",
                "no.such.module",
                "tests.test_login_checks.NOT_CALLABLE",
                42,
            ]:
                with self.subTest(name=name, value=value):
                    self.assertErrors(["sesame_db.E035"], **{name: value})
            self.assertErrors([], **{name: "tests.test_login_checks.a_function"})

    def test_e036_base_url(self):
        for value in [
            "www.example.com",
            "ftp://example.com",
            "https://example.com/?a=1",
            "https://example.com/#top",
            "https://",
            42,
        ]:
            with self.subTest(value=value):
                self.assertErrors(["sesame_db.E036"], SESAME_LOGIN_BASE_URL=value)
        self.assertErrors([], SESAME_LOGIN_BASE_URL="https://example.com/app")

    def test_w008_any_host_without_base_url(self):
        self.assertErrors(["sesame_db.W008"], ALLOWED_HOSTS=["*"])
        self.assertErrors(
            [], ALLOWED_HOSTS=["*"], SESAME_LOGIN_BASE_URL="https://example.com"
        )
        self.assertErrors([], ALLOWED_HOSTS=["www.example.com"])
        # Without the login URLs, no link is built from the Host header.
        self.assertErrors([], ALLOWED_HOSTS=["*"], ROOT_URLCONF="tests.cbv_urls")

    @override_settings(SESAME_LOGIN_CODE_LENGTH=4)
    def test_registered(self):
        self.assertIn("sesame_db.E034", run_check_command())

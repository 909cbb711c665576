from __future__ import annotations

import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import SimpleTestCase, override_settings

from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens import MAX_TOKEN_LENGTH, parse_token
from sesame_db.tokens_v1 import create_token as create_token_v1
from sesame_db.tokens_v2 import create_token as create_token_v2


class TestReason(SimpleTestCase):
    # These values are stored in the audit log and documented: changing one
    # is backwards-incompatible, so they're spelled out here.
    STABLE_VALUES = {
        "MALFORMED": "malformed",
        "BAD_SIGNATURE": "bad_signature",
        "EXPIRED": "expired",
        "WRONG_SCOPE": "wrong_scope",
        "UNKNOWN_USER": "unknown_user",
        "USED_UP": "used_up",
        "UNKNOWN": "unknown",
        "REVOKED": "revoked",
        "INACTIVE_USER": "inactive_user",
        "INVALIDATED": "invalidated",
        "RATE_LIMITED": "rate_limited",
        "GUEST_LINK": "guest_link",
        "OTHER_BROWSER": "other_browser",
    }

    def test_values_are_stable(self):
        self.assertEqual(
            {reason.name: reason.value for reason in Reason}, self.STABLE_VALUES
        )

    def test_members_are_strings(self):
        for name, value in self.STABLE_VALUES.items():
            with self.subTest(name=name):
                reason = Reason[name]
                self.assertIsInstance(reason, str)
                self.assertEqual(reason, value)
                self.assertEqual(str(reason), value)

    def test_lookup_by_value(self):
        for name, value in self.STABLE_VALUES.items():
            with self.subTest(name=name):
                self.assertIs(Reason(value), Reason[name])

    def test_labels_are_human_readable(self):
        for reason in Reason:
            with self.subTest(reason=reason):
                # Labels are shown in the admin; values are identifiers.
                self.assertTrue(str(reason.label))
                self.assertNotIn("_", str(reason.label))


class TestInvalidToken(SimpleTestCase):
    def test_attributes(self):
        exc = InvalidToken(Reason.EXPIRED, "Expired token: age = %d seconds", 42)
        self.assertIs(exc.reason, Reason.EXPIRED)
        self.assertEqual(exc.message, "Expired token: age = %d seconds")
        self.assertEqual(exc.log_args, (42,))

    def test_str_formats_message(self):
        exc = InvalidToken(
            Reason.UNKNOWN_USER, "Unknown or inactive user: %s = %r", "pk", "john"
        )
        self.assertEqual(str(exc), "Unknown or inactive user: pk = 'john'")

    def test_str_without_arguments(self):
        exc = InvalidToken(Reason.MALFORMED, "Bad token: cannot decode token")
        self.assertEqual(str(exc), "Bad token: cannot decode token")

    def test_is_an_exception(self):
        with self.assertRaises(InvalidToken) as cm:
            raise InvalidToken(Reason.USED_UP, "One-time token already used")
        self.assertIsInstance(cm.exception, Exception)
        self.assertIs(cm.exception.reason, Reason.USED_UP)


class TestInvalidTokenNeverContainsToken(SimpleTestCase):
    """The message of every rejection is safe to log: it never contains the token."""

    def setUp(self):
        User = get_user_model()
        self.user = User(
            pk=42,
            username="john",
            email="john@example.com",
            password=make_password("letmein"),
        )

    def get_user(self, user_pk):
        return self.user if user_pk == self.user.pk else None

    def assertRejectedWithoutToken(self, token, reason, scope=""):
        with self.assertRaises(InvalidToken) as cm:
            parse_token(token, self.get_user, scope)
        exc = cm.exception
        self.assertEqual(exc.reason, reason)
        self.assertNotIn(token, str(exc))
        self.assertNotIn(token, repr(exc))
        self.assertNotIn(token, repr(exc.args))

    def test_too_long(self):
        self.assertRejectedWithoutToken("A" * (MAX_TOKEN_LENGTH + 1), Reason.MALFORMED)

    def test_unsupported_format(self):
        self.assertRejectedWithoutToken("not a token!", Reason.MALFORMED)

    def test_undecodable(self):
        # 4k + 1 Base64 characters cannot be decoded.
        self.assertRejectedWithoutToken("AAAAA", Reason.MALFORMED)

    def test_bad_signature(self):
        token = create_token_v2(self.user)
        self.user.set_password("changed")
        self.assertRejectedWithoutToken(token, Reason.BAD_SIGNATURE)

    def test_wrong_scope(self):
        token = create_token_v2(self.user)
        self.assertRejectedWithoutToken(token, Reason.BAD_SIGNATURE, scope="other")

    def test_unknown_user(self):
        token = create_token_v2(self.user)
        self.user.pk = 43
        self.assertRejectedWithoutToken(token, Reason.UNKNOWN_USER)

    def test_v1_wrong_scope(self):
        token = create_token_v1(self.user)
        self.assertRejectedWithoutToken(token, Reason.WRONG_SCOPE, scope="other")

    def test_v1_bad_signature(self):
        token = create_token_v1(self.user)
        self.user.set_password("changed")
        self.assertRejectedWithoutToken(token, Reason.BAD_SIGNATURE)

    @override_settings(SESAME_MAX_AGE=300)
    def test_expired(self):
        with time_machine.travel(1_700_000_000, tick=False) as traveller:
            token = create_token_v2(self.user)
            traveller.shift(300)
            self.assertRejectedWithoutToken(token, Reason.EXPIRED)

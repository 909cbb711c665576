from __future__ import annotations

import datetime
import hashlib
import struct

import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core import signing
from django.test import SimpleTestCase, override_settings
from django.utils.crypto import pbkdf2

from sesame_db import tokens_v1
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens import parse_token

# 2024-01-01T00:00:00Z, as a Unix timestamp.
NOW = 1704067200


def make_user(pk=1, **kwargs):
    """Make an unsaved user: token code never touches the database."""
    kwargs.setdefault("username", "john")
    kwargs.setdefault("email", "john@example.com")
    kwargs.setdefault("password", make_password("letmein"))
    return get_user_model()(pk=pk, **kwargs)


def v1_hash(data, salt="sesame"):
    # django-sesame 1.x: PBKDF2 with MD5, 10000 iterations, salted with SESAME_SALT.
    return pbkdf2(data, salt, 10000, digest=hashlib.md5)


class TokensV1TestCase(SimpleTestCase):
    def setUp(self):
        super().setUp()
        self.user = make_user()
        self.loaded = []

    def get_user(self, user_key):
        self.loaded.append(user_key)
        return self.user if user_key == self.user.pk else None

    def parse(self, token, scope="", max_age=None):
        return parse_token(token, self.get_user, scope, max_age)

    def assertValid(self, token, scope="", max_age=None):
        self.assertIs(self.parse(token, scope, max_age), self.user)

    def assertInvalid(self, token, reason, scope="", max_age=None):
        with self.assertRaises(InvalidToken) as cm:
            self.parse(token, scope, max_age)
        self.assertEqual(cm.exception.reason, reason)
        return cm.exception


class TestFormat(TokensV1TestCase):
    def test_round_trip(self):
        token = tokens_v1.create_token(self.user)
        self.assertValid(token)
        self.assertEqual(self.loaded, [1])

    def test_content(self):
        token = tokens_v1.create_token(self.user)
        # A Signer signature with the SESAME_SALT salt and SHA-1.
        signer = signing.Signer(salt="sesame", algorithm="sha1")
        payload = signer.unsign(token)
        data = signing.b64_decode(payload.encode())
        self.assertEqual(data, struct.pack("!l", 1) + v1_hash(self.user.password))

    def test_matches_independent_implementation(self):
        signer = signing.Signer(salt="sesame", algorithm="sha1")
        data = struct.pack("!l", 1) + v1_hash(self.user.password)
        self.assertEqual(
            tokens_v1.create_token(self.user),
            signer.sign(signing.b64_encode(data).decode()),
        )

    def test_detect(self):
        token = tokens_v1.create_token(self.user)
        self.assertRegex(token, r"\A[A-Za-z0-9_-]{27}:[A-Za-z0-9_-]{27}\Z")
        self.assertTrue(tokens_v1.detect_token(token))

    @override_settings(SESAME_MAX_AGE=300)
    def test_round_trip_with_max_age(self):
        token = tokens_v1.create_token(self.user)
        self.assertValid(token)

    @override_settings(SESAME_MAX_AGE=300)
    def test_content_with_max_age(self):
        with time_machine.travel(NOW, tick=False):
            token = tokens_v1.create_token(self.user)
            signer = signing.TimestampSigner(salt="sesame", algorithm="sha1")
            payload, timestamp = signer.unsign(token, max_age=300), signer.timestamp()
        self.assertRegex(
            token, r"\A[A-Za-z0-9_-]{27}:[0-9A-Za-z]{6}:[A-Za-z0-9_-]{27}\Z"
        )
        self.assertEqual(token.split(":")[1], timestamp)
        data = signing.b64_decode(payload.encode())
        self.assertEqual(data, struct.pack("!l", 1) + v1_hash(self.user.password))

    def test_scope_not_supported_on_creation(self):
        with self.assertRaises(ValueError):
            tokens_v1.create_token(self.user, "read")


class TestDetectToken(SimpleTestCase):
    UNTIMED = "A" * 27 + ":" + "B" * 27
    TIMED = "A" * 27 + ":" + "1" * 6 + ":" + "B" * 27

    def test_untimed(self):
        self.assertTrue(tokens_v1.detect_token(self.UNTIMED))
        self.assertFalse(tokens_v1.detect_token(self.TIMED))

    @override_settings(SESAME_MAX_AGE=300)
    def test_timed(self):
        self.assertTrue(tokens_v1.detect_token(self.TIMED))
        self.assertFalse(tokens_v1.detect_token(self.UNTIMED))

    def test_reject(self):
        for token in [
            "",
            "A" * 27,
            "AAA:" + "B" * 27,
            "A" * 27 + ":" + "B" * 26,
            "A" * 27 + ":" + "B" * 28,
            "A" * 27 + "=:" + "B" * 27,
        ]:
            with self.subTest(token=token):
                self.assertFalse(tokens_v1.detect_token(token))


class TestRejection(TokensV1TestCase):
    def test_scope_rejected(self):
        token = tokens_v1.create_token(self.user)
        exc = self.assertInvalid(token, Reason.WRONG_SCOPE, scope="read")
        self.assertEqual(
            str(exc), "Invalid token: v1 tokens don't support scope 'read'"
        )

    def test_password_change(self):
        token = tokens_v1.create_token(self.user)
        self.user.set_password("changed")
        exc = self.assertInvalid(token, Reason.BAD_SIGNATURE)
        self.assertEqual(str(exc), "Invalid token for user pk = 1")

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False, SESAME_MAX_AGE=300)
    def test_password_change_without_invalidation(self):
        token = tokens_v1.create_token(self.user)
        self.user.set_password("changed")
        self.assertValid(token)

    def test_email_change(self):
        token = tokens_v1.create_token(self.user)
        self.user.email = "jane@example.com"
        self.assertValid(token)

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_email_change_with_invalidation(self):
        token = tokens_v1.create_token(self.user)
        self.user.email = "jane@example.com"
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_tampered_signature(self):
        token = tokens_v1.create_token(self.user)
        payload, signature = token.split(":")
        tampered = payload + ":" + ("B" if signature[0] == "A" else "A") + signature[1:]
        exc = self.assertInvalid(tampered, Reason.BAD_SIGNATURE)
        self.assertEqual(str(exc), "Bad token: invalid signature")
        self.assertEqual(self.loaded, [])

    def test_unknown_user(self):
        token = tokens_v1.create_token(make_user(2))
        exc = self.assertInvalid(token, Reason.UNKNOWN_USER)
        self.assertEqual(str(exc), "Unknown or inactive user: pk = 2")

    def test_valid_signature_unexpected_content(self):
        # Signed with our key but unreadable: for example, SESAME_PACKER
        # changed since the token was created.
        signer = signing.Signer(salt="sesame", algorithm="sha1")
        for payload in [
            signing.b64_encode(b"\x01\x02\x03").decode(),  # too short for a pk
            "AAAAA",  # not Base64
        ]:
            token = signer.sign(payload)
            with self.subTest(payload=payload):
                self.assertTrue(tokens_v1.detect_token(token))
                exc = self.assertInvalid(token, Reason.MALFORMED)
                self.assertIn("valid signature but unexpected content", str(exc))
        self.assertEqual(self.loaded, [])

    def test_salt_change(self):
        token = tokens_v1.create_token(self.user)
        with override_settings(SESAME_SALT="pepper"):
            self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_secret_key_rotation(self):
        with override_settings(SECRET_KEY="old"):
            token = tokens_v1.create_token(self.user)
        with override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"]):
            self.assertValid(token)
        with override_settings(SECRET_KEY="new"):
            self.assertInvalid(token, Reason.BAD_SIGNATURE)

    @override_settings(SESAME_MAX_AGE=300)
    def test_untimed_token_when_max_age_is_set(self):
        with override_settings(SESAME_MAX_AGE=None):
            token = tokens_v1.create_token(self.user)
        self.assertInvalid(token, Reason.MALFORMED)


class TestExpiry(TokensV1TestCase):
    @override_settings(SESAME_MAX_AGE=300)
    def test_expired(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v1.create_token(self.user)
            traveller.shift(299)
            self.assertValid(token)
            traveller.shift(2)
            exc = self.assertInvalid(token, Reason.EXPIRED)
        self.assertEqual(str(exc), "Expired token")
        self.assertEqual(self.loaded, [1])

    @override_settings(SESAME_MAX_AGE=datetime.timedelta(minutes=5))
    def test_expired_timedelta(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v1.create_token(self.user)
            traveller.shift(301)
            self.assertInvalid(token, Reason.EXPIRED)

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_argument(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v1.create_token(self.user)
            traveller.shift(120)
            self.assertValid(token)
            self.assertInvalid(token, Reason.EXPIRED, max_age=60)
            self.assertInvalid(
                token, Reason.EXPIRED, max_age=datetime.timedelta(minutes=1)
            )
            traveller.shift(600)
            self.assertValid(token, max_age=3600)

    def test_no_expiry_without_max_age(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v1.create_token(self.user)
            traveller.shift(datetime.timedelta(days=3650))
            self.assertValid(token)


class TestOneTime(TokensV1TestCase):
    LAST_LOGIN = datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)

    @override_settings(SESAME_ONE_TIME=True)
    def test_revocation_key_includes_last_login(self):
        self.user.last_login = self.LAST_LOGIN
        self.assertEqual(
            tokens_v1.get_revocation_key(self.user),
            v1_hash(self.user.password + "2024-01-02 03:04:05.000006+00:00"),
        )

    @override_settings(SESAME_ONE_TIME=True)
    def test_revocation_key_without_last_login(self):
        # django-sesame 1.x signed str(None).
        self.assertEqual(
            tokens_v1.get_revocation_key(self.user),
            v1_hash(self.user.password + "None"),
        )

    def test_revocation_key_without_one_time(self):
        self.user.last_login = self.LAST_LOGIN
        self.assertEqual(
            tokens_v1.get_revocation_key(self.user), v1_hash(self.user.password)
        )

    @override_settings(SESAME_ONE_TIME=True)
    def test_login_invalidates_token(self):
        token = tokens_v1.create_token(self.user)
        self.assertValid(token)
        self.user.last_login = self.LAST_LOGIN
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_login_does_not_invalidate_token_without_one_time(self):
        token = tokens_v1.create_token(self.user)
        self.user.last_login = self.LAST_LOGIN
        self.assertValid(token)


class TestRevocationKey(SimpleTestCase):
    def test_password(self):
        user = make_user()
        self.assertEqual(tokens_v1.get_revocation_key(user), v1_hash(user.password))
        self.assertEqual(len(tokens_v1.get_revocation_key(user)), 16)

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_password_and_email(self):
        user = make_user()
        self.assertEqual(
            tokens_v1.get_revocation_key(user),
            v1_hash(user.password + "john@example.com"),
        )

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_nothing(self):
        self.assertEqual(tokens_v1.get_revocation_key(make_user()), v1_hash(""))

    @override_settings(SESAME_SALT="pepper")
    def test_salt(self):
        user = make_user()
        self.assertEqual(
            tokens_v1.get_revocation_key(user), v1_hash(user.password, salt="pepper")
        )

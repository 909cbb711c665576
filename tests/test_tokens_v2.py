from __future__ import annotations

import base64
import datetime
import hashlib
import struct
import uuid

import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import SimpleTestCase, override_settings

from sesame_db import tokens_v2
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens import parse_token

from .mixins import CaptureLogMixin

# 2024-01-01T00:00:00Z, as a Unix timestamp.
NOW = 1704067200
# Timestamps in v2 tokens count seconds from 2020-01-01T00:00:00Z.
EPOCH_2020 = 1577836800


def make_user(pk=1, **kwargs):
    """Make an unsaved user: token code never touches the database."""
    kwargs.setdefault("username", "john")
    kwargs.setdefault("email", "john@example.com")
    kwargs.setdefault("password", make_password("letmein"))
    return get_user_model()(pk=pk, **kwargs)


def signing_key(secret_key=None, key="", max_age=None):
    """Derive the signing key from django-sesame's documented recipe."""
    if secret_key is None:
        secret_key = settings.SECRET_KEY
    data = f"{secret_key}|{key}|{'' if max_age is None else 'max_age'}||pk"
    return hashlib.blake2b(data.encode(), person=b"sesame.settings").digest()


def b64decode(token):
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expected_token(packed_pk, revocation_key, scope="", timestamp=None, key=None):
    """Build a v2 token independently, from the django-sesame format."""
    if key is None:
        key = signing_key(max_age=timestamp)
    data = packed_pk
    if timestamp is not None:
        data += struct.pack("!i", timestamp - EPOCH_2020)
    signature = hashlib.blake2b(
        data + revocation_key + scope.encode(),
        digest_size=10,
        key=key,
        person=b"sesame.tokens_v2",
    ).digest()
    return b64encode(data + signature)


class TokensV2TestCase(SimpleTestCase):
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


class TestFormat(TokensV2TestCase):
    def test_round_trip(self):
        token = tokens_v2.create_token(self.user)
        self.assertValid(token)
        self.assertEqual(self.loaded, [self.user.pk])

    def test_length(self):
        # 4-byte primary key + 10-byte signature = 14 bytes = 19 characters.
        self.assertEqual(len(tokens_v2.create_token(self.user)), 19)

    @override_settings(SESAME_MAX_AGE=300)
    def test_length_with_max_age(self):
        # 4-byte primary key + 4-byte timestamp + 10-byte signature = 18 bytes
        # = 24 characters.
        self.assertEqual(len(tokens_v2.create_token(self.user)), 24)

    def test_alphabet(self):
        for pk in range(1, 200):
            with self.subTest(pk=pk):
                token = tokens_v2.create_token(make_user(pk))
                self.assertRegex(token, r"\A[A-Za-z0-9_-]+\Z")

    def test_content(self):
        token = tokens_v2.create_token(self.user)
        data = b64decode(token)
        self.assertEqual(len(data), 14)
        self.assertEqual(data[:4], struct.pack("!l", self.user.pk))

    def test_matches_independent_implementation(self):
        hash_ = self.user.password.rpartition("$")[2]
        self.assertEqual(
            tokens_v2.create_token(self.user),
            expected_token(b"\x00\x00\x00\x01", hash_.encode()),
        )

    def test_matches_independent_implementation_with_scope(self):
        hash_ = self.user.password.rpartition("$")[2]
        self.assertEqual(
            tokens_v2.create_token(self.user, "scope"),
            expected_token(b"\x00\x00\x00\x01", hash_.encode(), scope="scope"),
        )

    @override_settings(SESAME_MAX_AGE=300)
    def test_matches_independent_implementation_with_max_age(self):
        hash_ = self.user.password.rpartition("$")[2]
        with time_machine.travel(NOW, tick=False):
            token = tokens_v2.create_token(self.user)
        self.assertEqual(b64decode(token)[4:8], struct.pack("!i", NOW - EPOCH_2020))
        self.assertEqual(
            token,
            expected_token(b"\x00\x00\x00\x01", hash_.encode(), timestamp=NOW),
        )

    def test_deterministic_without_max_age(self):
        self.assertEqual(
            tokens_v2.create_token(self.user), tokens_v2.create_token(self.user)
        )

    def test_tokens_differ_between_users(self):
        self.assertNotEqual(
            tokens_v2.create_token(make_user(1)), tokens_v2.create_token(make_user(2))
        )


class TestDetectToken(SimpleTestCase):
    def test_detect(self):
        for token in ["AAAA", "abcdefghijklmnopqrs", "A-_9" * 10]:
            with self.subTest(token=token):
                self.assertTrue(tokens_v2.detect_token(token))

    def test_reject(self):
        for token in ["", "AAA", "AAAA=", "AA+/AA", "AAAA:AAAA", "AAAA AAAA", "ééééé"]:
            with self.subTest(token=token):
                self.assertFalse(tokens_v2.detect_token(token))


class TestMalformed(TokensV2TestCase):
    def assertMalformed(self, token, message):
        exc = self.assertInvalid(token, Reason.MALFORMED)
        self.assertEqual(str(exc), message)
        # The user isn't loaded for a malformed token.
        self.assertEqual(self.loaded, [])

    def test_cannot_decode(self):
        # 4k + 1 Base64 characters cannot be decoded.
        self.assertMalformed("AAAAA", "Bad token: cannot decode token")

    def test_cannot_extract_primary_key(self):
        # 3 bytes are too short for a 4-byte primary key.
        self.assertMalformed("AAAA", "Bad token: cannot extract primary key")

    def test_cannot_extract_signature(self):
        token = tokens_v2.create_token(self.user)
        data = b64decode(token)
        for size in [4, 5, 13, 15, 20]:
            with self.subTest(size=size):
                self.assertMalformed(
                    b64encode((data * 2)[:size]), "Bad token: cannot extract signature"
                )

    @override_settings(SESAME_MAX_AGE=300)
    def test_cannot_extract_timestamp(self):
        self.assertMalformed(
            b64encode(b"\x00\x00\x00\x01\x00\x00"),
            "Bad token: cannot extract timestamp",
        )

    @override_settings(SESAME_MAX_AGE=300)
    def test_token_without_timestamp(self):
        # Created before SESAME_MAX_AGE was set: the first bytes of the
        # signature are read as a timestamp, then the signature is too short,
        # unless that timestamp is already too old.
        with override_settings(SESAME_MAX_AGE=None):
            token = tokens_v2.create_token(self.user)
        with self.assertRaises(InvalidToken) as cm:
            self.parse(token)
        self.assertIn(cm.exception.reason, {Reason.MALFORMED, Reason.EXPIRED})
        self.assertEqual(self.loaded, [])


class TestSignature(TokensV2TestCase):
    def test_tampered_signature(self):
        token = tokens_v2.create_token(self.user)
        data = bytearray(b64decode(token))
        for index in range(4, len(data)):
            tampered = data.copy()
            tampered[index] ^= 0x01
            with self.subTest(index=index):
                self.assertInvalid(b64encode(bytes(tampered)), Reason.BAD_SIGNATURE)

    def test_tampered_primary_key(self):
        other = make_user(2, username="jane")
        token = tokens_v2.create_token(self.user)
        data = b64decode(token)
        forged = b64encode(struct.pack("!l", 2) + data[4:])
        self.user = other
        self.assertInvalid(forged, Reason.BAD_SIGNATURE)
        self.assertEqual(self.loaded, [2])

    def test_unknown_user(self):
        token = tokens_v2.create_token(make_user(2))
        exc = self.assertInvalid(token, Reason.UNKNOWN_USER)
        self.assertEqual(str(exc), "Unknown or inactive user: pk = 2")

    def test_signature_is_keyed(self):
        # Without the signing key, a signature cannot be forged.
        hash_ = self.user.password.rpartition("$")[2].encode()
        forged = expected_token(b"\x00\x00\x00\x01", hash_, key=b"guess")
        self.assertInvalid(forged, Reason.BAD_SIGNATURE)

    @override_settings(SESAME_SIGNATURE_SIZE=16)
    def test_signature_size(self):
        token = tokens_v2.create_token(self.user)
        # 4 + 16 = 20 bytes = 27 Base64 characters without padding.
        self.assertEqual(len(token), 27)
        self.assertEqual(len(b64decode(token)), 20)
        self.assertValid(token)

    @override_settings(SESAME_SIGNATURE_SIZE=64)
    def test_largest_signature_size(self):
        token = tokens_v2.create_token(self.user)
        self.assertEqual(len(b64decode(token)), 68)
        self.assertValid(token)

    def test_signature_size_change(self):
        token = tokens_v2.create_token(self.user)
        with override_settings(SESAME_SIGNATURE_SIZE=16):
            self.assertInvalid(token, Reason.MALFORMED)
        self.assertValid(token)


class TestKeys(TokensV2TestCase):
    def test_secret_key_rotation(self):
        with override_settings(SECRET_KEY="old"):
            token = tokens_v2.create_token(self.user)
        with override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"]):
            self.assertValid(token)
            # New tokens are signed with the new key.
            new_token = tokens_v2.create_token(self.user)
            self.assertNotEqual(new_token, token)
        with override_settings(SECRET_KEY="new"):
            self.assertInvalid(token, Reason.BAD_SIGNATURE)
            self.assertValid(new_token)

    def test_secret_key_change(self):
        token = tokens_v2.create_token(self.user)
        with override_settings(SECRET_KEY="new"):
            self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_sesame_key_change(self):
        token = tokens_v2.create_token(self.user)
        with override_settings(SESAME_KEY="new"):
            self.assertInvalid(token, Reason.BAD_SIGNATURE)
        self.assertValid(token)

    def test_sesame_key(self):
        hash_ = self.user.password.rpartition("$")[2].encode()
        with override_settings(SESAME_KEY="extra"):
            token = tokens_v2.create_token(self.user)
        self.assertEqual(
            token,
            expected_token(b"\x00\x00\x00\x01", hash_, key=signing_key(key="extra")),
        )

    @override_settings(SESAME_PACKER="sesame_db.packers.LongPacker")
    def test_packer_change(self):
        # Same bytes, but SESAME_PACKER is mixed into the key.
        with override_settings(SESAME_PACKER=None):
            token = tokens_v2.create_token(self.user)
        self.assertInvalid(token, Reason.BAD_SIGNATURE)


class TestExpiry(TokensV2TestCase):
    @override_settings(SESAME_MAX_AGE=300)
    def test_expired_at_max_age(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(299)
            self.assertValid(token)
            traveller.shift(1)
            exc = self.assertInvalid(token, Reason.EXPIRED)
            self.assertEqual(str(exc), "Expired token: age = 300 seconds")

    @override_settings(SESAME_MAX_AGE=300)
    def test_expired_token_does_not_load_user(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(3600)
            self.assertInvalid(token, Reason.EXPIRED)
        self.assertEqual(self.loaded, [])

    @override_settings(SESAME_MAX_AGE=datetime.timedelta(minutes=5))
    def test_max_age_timedelta(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(299)
            self.assertValid(token)
            traveller.shift(1)
            self.assertInvalid(token, Reason.EXPIRED)

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_argument(self):
        for max_age in [60, 60.0, datetime.timedelta(seconds=60)]:
            with (
                self.subTest(max_age=max_age),
                time_machine.travel(NOW, tick=False) as traveller,
            ):
                token = tokens_v2.create_token(self.user)
                traveller.shift(59)
                self.assertValid(token, max_age=max_age)
                traveller.shift(1)
                self.assertInvalid(token, Reason.EXPIRED, max_age=max_age)
                # Without the argument, SESAME_MAX_AGE applies.
                self.assertValid(token)

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_argument_longer_than_setting(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(3599)
            self.assertInvalid(token, Reason.EXPIRED)
            self.assertValid(token, max_age=3600)
            self.assertValid(token, max_age=datetime.timedelta(hours=1))
            traveller.shift(1)
            self.assertInvalid(token, Reason.EXPIRED, max_age=3600)

    def test_no_expiry_without_max_age(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(datetime.timedelta(days=3650))
            self.assertValid(token)


class TestMaxAgeWarning(CaptureLogMixin, TokensV2TestCase):
    def test_max_age_argument_ignored_without_setting(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = tokens_v2.create_token(self.user)
            traveller.shift(3600)
            with self.captureLogs("WARNING"):
                self.assertValid(token, max_age=60)
        self.assertLogsContain(
            "Ignoring max_age argument; it isn't supported when SESAME_MAX_AGE = None"
        )
        self.assertEqual(len(self.logs.records), 1)
        self.assertEqual(self.logs.records[0].levelname, "WARNING")

    @override_settings(SESAME_MAX_AGE=300)
    def test_no_warning_with_setting(self):
        token = tokens_v2.create_token(self.user)
        with self.assertNoLogs("sesame_db", "WARNING"):
            self.assertValid(token, max_age=60)

    def test_no_warning_without_argument(self):
        token = tokens_v2.create_token(self.user)
        with self.assertNoLogs("sesame_db", "WARNING"):
            self.assertValid(token)


class TestInvalidation(TokensV2TestCase):
    def test_password_change(self):
        token = tokens_v2.create_token(self.user)
        self.user.set_password("changed")
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_password_hash_salt_change(self):
        # Only the hash goes into the revocation key, not the salt.
        algorithm, salt, hash_ = self.user.password.split("$")
        token = tokens_v2.create_token(self.user)
        self.user.password = f"{algorithm}$othersalt${hash_}"
        self.assertValid(token)

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False, SESAME_MAX_AGE=300)
    def test_password_change_without_invalidation(self):
        token = tokens_v2.create_token(self.user)
        self.user.set_password("changed")
        self.assertValid(token)

    def test_email_change(self):
        token = tokens_v2.create_token(self.user)
        self.user.email = "jane@example.com"
        self.assertValid(token)

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_email_change_with_invalidation(self):
        token = tokens_v2.create_token(self.user)
        self.user.email = "jane@example.com"
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    # Regression: with SESAME_INVALIDATE_ON_EMAIL_CHANGE, a user whose email
    # is None (a nullable email field) made get_revocation_key() raise
    # TypeError: a 500 instead of a token or a rejection.
    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_email_none_with_invalidation(self):
        self.user.email = None
        token = tokens_v2.create_token(self.user)
        self.assertValid(token)
        self.user.email = "john@example.com"
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_last_login_change(self):
        token = tokens_v2.create_token(self.user)
        self.user.last_login = datetime.datetime(
            2024, 1, 1, tzinfo=datetime.timezone.utc
        )
        self.assertValid(token)

    @override_settings(SESAME_ONE_TIME=True)
    def test_last_login_change_one_time(self):
        self.user.last_login = datetime.datetime(
            2024, 1, 1, tzinfo=datetime.timezone.utc
        )
        token = tokens_v2.create_token(self.user)
        self.assertValid(token)
        self.user.last_login += datetime.timedelta(microseconds=1)
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    @override_settings(SESAME_ONE_TIME=True)
    def test_first_login_one_time(self):
        token = tokens_v2.create_token(self.user)
        self.assertValid(token)
        self.user.last_login = datetime.datetime(
            2024, 1, 1, tzinfo=datetime.timezone.utc
        )
        self.assertInvalid(token, Reason.BAD_SIGNATURE)


class TestScope(TokensV2TestCase):
    def test_scoped_token(self):
        token = tokens_v2.create_token(self.user, "read")
        self.assertValid(token, scope="read")

    def test_scope_mismatch(self):
        token = tokens_v2.create_token(self.user, "read")
        for scope in ["", "write", "read ", "READ"]:
            with self.subTest(scope=scope):
                exc = self.assertInvalid(token, Reason.BAD_SIGNATURE, scope=scope)
                self.assertEqual(
                    str(exc), f"Invalid token for user pk = 1 in scope {scope!r}"
                )

    def test_default_scope_token_in_other_scope(self):
        token = tokens_v2.create_token(self.user)
        self.assertInvalid(token, Reason.BAD_SIGNATURE, scope="read")

    def test_non_ascii_scope(self):
        token = tokens_v2.create_token(self.user, "lecture:é")
        self.assertValid(token, scope="lecture:é")
        self.assertInvalid(token, Reason.BAD_SIGNATURE, scope="lecture:e")


class TestRevocationKey(SimpleTestCase):
    def test_md5(self):
        user = make_user(password="md5$salt$0123456789abcdef0123456789abcdef")
        self.assertEqual(
            tokens_v2.get_revocation_key(user), b"0123456789abcdef0123456789abcdef"
        )

    def test_md5_from_hasher(self):
        user = make_user()
        hash_ = user.password.split("$")[-1]
        self.assertEqual(len(hash_), 32)
        self.assertEqual(tokens_v2.get_revocation_key(user), hash_.encode())

    def test_pbkdf2_sha256(self):
        hash_ = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
        self.assertEqual(len(hash_), 44)
        user = make_user(password=f"pbkdf2_sha256$1000000$somesalt${hash_}")
        self.assertEqual(tokens_v2.get_revocation_key(user), hash_.encode())

    def test_pbkdf2_sha1(self):
        hash_ = base64.b64encode(hashlib.sha1(b"x").digest()).decode()
        self.assertEqual(len(hash_), 28)
        user = make_user(password=f"pbkdf2_sha1$1000000$somesalt${hash_}")
        self.assertEqual(tokens_v2.get_revocation_key(user), hash_.encode())

    def test_unknown_hasher(self):
        password = "custom$abc$def"
        user = make_user(password=password)
        self.assertEqual(tokens_v2.get_revocation_key(user), password.encode())

    def test_unusable_password(self):
        user = make_user()
        user.set_unusable_password()
        self.assertTrue(user.password.startswith("!"))
        self.assertEqual(tokens_v2.get_revocation_key(user), user.password.encode())

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_without_password(self):
        self.assertEqual(tokens_v2.get_revocation_key(make_user()), b"")

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_with_email(self):
        user = make_user(password="md5$salt$0123456789abcdef0123456789abcdef")
        self.assertEqual(
            tokens_v2.get_revocation_key(user),
            b"0123456789abcdef0123456789abcdefjohn@example.com",
        )

    @override_settings(SESAME_ONE_TIME=True)
    def test_with_last_login(self):
        user = make_user(
            password="md5$salt$0123456789abcdef0123456789abcdef",
            last_login=datetime.datetime(
                2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc
            ),
        )
        self.assertEqual(
            tokens_v2.get_revocation_key(user),
            b"0123456789abcdef0123456789abcdef2024-01-02T03:04:05.000006+00:00",
        )

    @override_settings(SESAME_ONE_TIME=True)
    def test_with_no_last_login(self):
        user = make_user(password="md5$salt$0123456789abcdef0123456789abcdef")
        self.assertEqual(
            tokens_v2.get_revocation_key(user), b"0123456789abcdef0123456789abcdef"
        )

    def test_revocation_key_not_in_token(self):
        # The revocation key is signed, not sent.
        user = make_user(password="md5$salt$0123456789abcdef0123456789abcdef")
        data = b64decode(tokens_v2.create_token(user))
        self.assertNotIn(b"0123", data)


class TestCustomPrimaryKeys(TokensV2TestCase):
    @override_settings(SESAME_PRIMARY_KEY_FIELD="username")
    def test_primary_key_field(self):
        self.user = make_user(username="john")
        token = tokens_v2.create_token(self.user)
        self.assertEqual(b64decode(token)[:5], b"\x04john")
        self.assertIs(parse_token(token, {"john": self.user}.get), self.user)

    @override_settings(AUTH_USER_MODEL="tests.UUIDUser")
    def test_uuid_primary_key(self):
        pk = uuid.UUID("12345678-1234-5678-1234-567812345678")
        self.user = make_user(pk)
        token = tokens_v2.create_token(self.user)
        # 16-byte primary key + 10-byte signature = 26 bytes = 35 characters.
        self.assertEqual(len(token), 35)
        self.assertEqual(b64decode(token)[:16], pk.bytes)
        self.assertValid(token)
        self.assertEqual(self.loaded, [pk])

    @override_settings(AUTH_USER_MODEL="tests.StrUser")
    def test_str_primary_key(self):
        self.user = make_user("user-jérôme")
        token = tokens_v2.create_token(self.user)
        packed = b"\x0duser-j\xc3\xa9r\xc3\xb4me"
        self.assertEqual(b64decode(token)[: len(packed)], packed)
        self.assertValid(token)
        self.assertEqual(self.loaded, ["user-jérôme"])

    @override_settings(AUTH_USER_MODEL="tests.BigUser")
    def test_big_primary_key(self):
        self.user = make_user(2**40)
        token = tokens_v2.create_token(self.user)
        # 8-byte primary key + 10-byte signature = 18 bytes = 24 characters.
        self.assertEqual(len(token), 24)
        self.assertEqual(b64decode(token)[:8], struct.pack("!q", 2**40))
        self.assertValid(token)

    def test_token_for_another_user_model(self):
        # The packer is mixed into the key only when set explicitly, but the
        # primary key decodes differently: the user cannot be confused.
        with override_settings(AUTH_USER_MODEL="tests.BigUser"):
            token = tokens_v2.create_token(make_user(1))
        self.assertInvalid(token, Reason.MALFORMED)

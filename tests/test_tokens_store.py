from __future__ import annotations

import base64
import datetime
import re
import struct

import time_machine
from django.contrib.auth import get_user_model
from django.test import SimpleTestCase, override_settings
from django.utils import timezone

from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens_store import (
    create_token,
    decode_token,
    detect_token,
    user_digest,
)

# Derived from the documented layout, not imported from the module under test:
# record id (8 bytes) | expiry (4) | scope tag (3) | MAC (12), Base64 URL-safe.
EPOCH = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
PAYLOAD_SIZE = 8 + 4 + 3 + 12
MAC_SIZE = 12

# An instant on a whole second, so that the expiry claim is exact.
START = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def payload(token):
    return base64.urlsafe_b64decode(token[1:])


def encode(raw):
    return "~" + base64.urlsafe_b64encode(bytes(raw)).decode()


def make_user(**kwargs):
    """An unsaved user: token functions never touch the database."""
    kwargs.setdefault("username", "john")
    kwargs.setdefault("email", "john@example.com")
    password = kwargs.pop("password", "letmein")
    user = get_user_model()(**kwargs)
    user.set_password(password)
    return user


class FormatTests(SimpleTestCase):
    def test_token_is_tilde_and_36_characters(self):
        token = create_token(42, "", None)
        self.assertEqual(len(token), 37)
        self.assertRegex(token, r"\A~[A-Za-z0-9_-]{36}\Z")
        self.assertEqual(len(payload(token)), PAYLOAD_SIZE)

    def test_token_is_url_safe_whatever_the_values(self):
        # Large ids and every kind of scope stay in the URL-safe alphabet.
        for record_id in (1, 2**32 + 1, 2**64 - 1):
            for scope in ("", "report:42", "é/?&="):
                with self.subTest(record_id=record_id, scope=scope):
                    token = create_token(record_id, scope, START)
                    self.assertRegex(token, r"\A~[A-Za-z0-9_-]{36}\Z")

    def test_payload_holds_record_id_and_expiry(self):
        expires_at = EPOCH + datetime.timedelta(days=1000)
        token = create_token(123456789, "", expires_at)
        record_id, expiry = struct.unpack("!QI", payload(token)[:12])
        self.assertEqual(record_id, 123456789)
        self.assertEqual(expiry, 1000 * 86400)

    def test_expiry_claim_is_rounded_up(self):
        # The claim must never end before the record does.
        expires_at = EPOCH + datetime.timedelta(seconds=100, microseconds=1)
        token = create_token(1, "", expires_at)
        (expiry,) = struct.unpack("!I", payload(token)[8:12])
        self.assertEqual(expiry, 101)

    def test_no_expiry_is_zero(self):
        token = create_token(1, "", None)
        (expiry,) = struct.unpack("!I", payload(token)[8:12])
        self.assertEqual(expiry, 0)

    def test_scope_tag_depends_on_scope(self):
        tags = {payload(create_token(1, scope, None))[12:15] for scope in "abcdef"}
        self.assertEqual(len(tags), 6)

    def test_detect_token(self):
        self.assertTrue(detect_token(create_token(1, "", None)))
        self.assertFalse(detect_token("AAAA"))


class DecodeTests(SimpleTestCase):
    def assertRejected(self, token, reason, token_id=None, scope="", now=None):
        with self.assertRaises(InvalidToken) as context:
            decode_token(token, scope, now or timezone.now())
        self.assertEqual(context.exception.reason, reason)
        self.assertEqual(context.exception.token_id, token_id)
        return context.exception

    def test_round_trip(self):
        now = timezone.now()
        cases = [
            (1, "", None),
            (2**31, "report:42", now + datetime.timedelta(hours=1)),
            (2**64 - 1, "x" * 255, now + datetime.timedelta(days=3650)),
        ]
        for record_id, scope, expires_at in cases:
            with self.subTest(record_id=record_id, scope=scope):
                claims = decode_token(
                    create_token(record_id, scope, expires_at), scope, now
                )
                self.assertEqual(claims.record_id, record_id)
                if expires_at is None:
                    self.assertIsNone(claims.expires_at)
                else:
                    assert claims.expires_at is not None
                    # Whole seconds, rounded up.
                    self.assertGreaterEqual(claims.expires_at, expires_at)
                    self.assertLess(
                        claims.expires_at - expires_at, datetime.timedelta(seconds=1)
                    )

    def test_any_flipped_bit_is_a_bad_signature(self):
        token = create_token(7, "scope", START + datetime.timedelta(days=3650))
        raw = payload(token)
        for index in range(len(raw)):
            for bit in (0x01, 0x80):
                with self.subTest(index=index, bit=bit):
                    forged = bytearray(raw)
                    forged[index] ^= bit
                    # A forged token doesn't reveal the record id it claims.
                    self.assertRejected(
                        encode(forged), Reason.BAD_SIGNATURE, scope="scope", now=START
                    )

    def test_truncated_mac_is_malformed(self):
        raw = payload(create_token(7, "", None))
        # 24 bytes are 32 Base64 characters: the length is checked first.
        self.assertRejected(encode(raw[:-3]), Reason.MALFORMED)

    def test_malformed(self):
        token = create_token(7, "", None)
        for bad in [
            "",
            "~",
            token[:-1],
            token + "A",
            token[:-1] + "=",
            token[:-1] + "+",
            token + "\n",
            "~" + token,
            "~" + "A" * 36 + "~",
        ]:
            with self.subTest(bad=bad):
                self.assertRejected(bad, Reason.MALFORMED)

    def test_wrong_scope_reveals_token_id(self):
        token = create_token(99, "report:1", None)
        for scope in ("", "report:2", "REPORT:1"):
            with self.subTest(scope=scope):
                self.assertRejected(token, Reason.WRONG_SCOPE, token_id=99, scope=scope)
        decode_token(token, "report:1", timezone.now())

    def test_default_scope_token_in_other_scope(self):
        token = create_token(5, "", None)
        self.assertRejected(token, Reason.WRONG_SCOPE, token_id=5, scope="report:1")

    def test_expired_claim(self):
        with time_machine.travel(START, tick=False):
            token = create_token(
                12, "", timezone.now() + datetime.timedelta(seconds=60)
            )
        with time_machine.travel(
            START + datetime.timedelta(seconds=59, microseconds=999999), tick=False
        ):
            self.assertEqual(decode_token(token, "", timezone.now()).record_id, 12)
        with time_machine.travel(START + datetime.timedelta(seconds=60), tick=False):
            self.assertRejected(token, Reason.EXPIRED, token_id=12)
        with time_machine.travel(START + datetime.timedelta(days=1), tick=False):
            self.assertRejected(token, Reason.EXPIRED, token_id=12)

    def test_bad_signature_is_checked_before_expiry_and_scope(self):
        # An expired token for another scope with a forged MAC is a forgery,
        # without a record id, rather than an expired or wrong-scope token.
        token = create_token(3, "a", START)
        raw = bytearray(payload(token))
        raw[-1] ^= 1
        self.assertRejected(
            encode(raw),
            Reason.BAD_SIGNATURE,
            scope="b",
            now=START + datetime.timedelta(days=1),
        )

    def test_message_never_contains_token(self):
        token = create_token(8, "a", START)
        for scope, now in [("b", START), ("a", START + datetime.timedelta(days=1))]:
            exc = self.assertRejected(
                token,
                Reason.WRONG_SCOPE if scope == "b" else Reason.EXPIRED,
                token_id=8,
                scope=scope,
                now=now,
            )
            self.assertNotIn(token[1:], str(exc))
            self.assertNotIn(token[1:], repr(exc.args))


@override_settings(SECRET_KEY="old-secret-key", SECRET_KEY_FALLBACKS=[])
class KeyRotationTests(SimpleTestCase):
    def test_fallback_keeps_tokens_and_user_digest_valid(self):
        user = make_user()
        token = create_token(17, "s", None)
        issued_digest = user_digest(user)
        with override_settings(
            SECRET_KEY="new-secret-key", SECRET_KEY_FALLBACKS=["old-secret-key"]
        ):
            claims = decode_token(token, "s", timezone.now())
            self.assertEqual(claims.record_id, 17)
            # The digest stored at issue time still matches...
            self.assertEqual(claims.user_digest(user), issued_digest)
            # ...while new records get a digest keyed with the new key.
            self.assertNotEqual(user_digest(user), issued_digest)
            new_token = create_token(18, "s", None)
            new_claims = decode_token(new_token, "s", timezone.now())
            self.assertEqual(new_claims.user_digest(user), user_digest(user))
            # The scope tag rotates too: the old token still reads as a
            # wrong scope, not a forgery, in another scope.
            with self.assertRaises(InvalidToken) as context:
                decode_token(token, "t", timezone.now())
            self.assertEqual(context.exception.reason, Reason.WRONG_SCOPE)

    def test_dropping_the_fallback_invalidates_tokens(self):
        token = create_token(17, "", None)
        with (
            override_settings(SECRET_KEY="new-secret-key"),
            self.assertRaises(InvalidToken) as context,
        ):
            decode_token(token, "", timezone.now())
        self.assertEqual(context.exception.reason, Reason.BAD_SIGNATURE)
        self.assertIsNone(context.exception.token_id)

    def test_sesame_key_change_invalidates_tokens(self):
        user = make_user()
        token = create_token(17, "", None)
        digest = user_digest(user)
        with override_settings(SESAME_KEY="another"):
            with self.assertRaises(InvalidToken) as context:
                decode_token(token, "", timezone.now())
            self.assertEqual(context.exception.reason, Reason.BAD_SIGNATURE)
            self.assertNotEqual(user_digest(user), digest)
            # Tokens created with the new key work.
            decode_token(create_token(17, "", None), "", timezone.now())


class UserDigestTests(SimpleTestCase):
    def test_format_fits_the_model_field(self):
        self.assertRegex(user_digest(make_user()), r"\A[0-9a-f]{32}\Z")

    def test_stable(self):
        user = make_user()
        self.assertEqual(user_digest(user), user_digest(user))

    def test_changes_with_password(self):
        user = make_user()
        before = user_digest(user)
        user.set_password("letmein")  # Same password, new salt: a new hash.
        self.assertNotEqual(user_digest(user), before)

    def test_changes_with_unusable_password(self):
        user = make_user()
        before = user_digest(user)
        user.set_unusable_password()
        self.assertNotEqual(user_digest(user), before)

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_ignores_password_when_disabled(self):
        user = make_user()
        before = user_digest(user)
        user.set_password("other")
        self.assertEqual(user_digest(user), before)

    def test_ignores_email_by_default(self):
        user = make_user()
        before = user_digest(user)
        user.email = "jane@example.com"
        self.assertEqual(user_digest(user), before)

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_changes_with_email_when_enabled(self):
        user = make_user()
        before = user_digest(user)
        user.email = "jane@example.com"
        self.assertNotEqual(user_digest(user), before)
        user.email = "john@example.com"
        self.assertEqual(user_digest(user), before)

    def test_depends_on_secret_key(self):
        user = make_user()
        with override_settings(SECRET_KEY="one"):
            one = user_digest(user)
        with override_settings(SECRET_KEY="two"):
            two = user_digest(user)
        self.assertNotEqual(one, two)

    def test_never_contains_the_password_hash(self):
        user = make_user()
        digest = user_digest(user)
        for part in re.split(r"[$]", user.password):
            if len(part) >= 8:
                self.assertNotIn(part, digest)

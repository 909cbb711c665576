from __future__ import annotations

from unittest import mock

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import SimpleTestCase, override_settings

from sesame_db import tokens_v1, tokens_v2
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens import MAX_TOKEN_LENGTH, aparse_token, create_token, parse_token

V1_FIRST = ["sesame_db.tokens_v1", "sesame_db.tokens_v2"]


def make_user(pk=1, **kwargs):
    """Make an unsaved user: token code never touches the database."""
    kwargs.setdefault("username", "john")
    kwargs.setdefault("email", "john@example.com")
    kwargs.setdefault("password", make_password("letmein"))
    return get_user_model()(pk=pk, **kwargs)


class TokensTestCase(SimpleTestCase):
    def setUp(self):
        super().setUp()
        self.user = make_user()
        self.loaded = []

    def get_user(self, user_key):
        self.loaded.append(user_key)
        return self.user if user_key == self.user.pk else None

    async def aget_user(self, user_key):
        self.loaded.append(user_key)
        return self.user if user_key == self.user.pk else None

    def assertInvalid(self, token, reason, scope="", max_age=None):
        with self.assertRaises(InvalidToken) as cm:
            parse_token(token, self.get_user, scope, max_age)
        self.assertEqual(cm.exception.reason, reason)
        return cm.exception

    async def assertInvalidAsync(self, token, reason, scope="", max_age=None):
        with self.assertRaises(InvalidToken) as cm:
            await aparse_token(token, self.aget_user, scope, max_age)
        self.assertEqual(cm.exception.reason, reason)
        return cm.exception


class TestCreateToken(TokensTestCase):
    def test_v2_by_default(self):
        token = create_token(self.user)
        self.assertNotIn(":", token)
        self.assertEqual(token, tokens_v2.create_token(self.user))

    def test_scope(self):
        self.assertEqual(
            create_token(self.user, "read"), tokens_v2.create_token(self.user, "read")
        )
        self.assertNotEqual(create_token(self.user, "read"), create_token(self.user))

    @override_settings(SESAME_TOKENS=V1_FIRST)
    def test_first_format_is_used(self):
        token = create_token(self.user)
        self.assertIn(":", token)
        self.assertEqual(token, tokens_v1.create_token(self.user))

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v2"])
    def test_only_v2(self):
        self.assertEqual(create_token(self.user), tokens_v2.create_token(self.user))


class TestDispatch(TokensTestCase):
    def test_v2_token(self):
        self.assertIs(
            parse_token(tokens_v2.create_token(self.user), self.get_user), self.user
        )

    def test_v1_token(self):
        self.assertIs(
            parse_token(tokens_v1.create_token(self.user), self.get_user), self.user
        )

    @override_settings(SESAME_TOKENS=V1_FIRST)
    def test_both_formats_in_any_order(self):
        for token in [
            tokens_v1.create_token(self.user),
            tokens_v2.create_token(self.user),
        ]:
            with self.subTest(token=token):
                self.assertIs(parse_token(token, self.get_user), self.user)

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v2"])
    def test_v1_token_when_v1_is_disabled(self):
        with override_settings(SESAME_TOKENS=V1_FIRST):
            token = create_token(self.user)
        exc = self.assertInvalid(token, Reason.MALFORMED)
        self.assertEqual(str(exc), "Bad token: doesn't match a supported format")
        self.assertEqual(self.loaded, [])

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v1"])
    def test_v2_token_when_v2_is_disabled(self):
        with override_settings(SESAME_TOKENS=["sesame_db.tokens_v2"]):
            token = create_token(self.user)
        exc = self.assertInvalid(token, Reason.MALFORMED)
        self.assertEqual(str(exc), "Bad token: doesn't match a supported format")
        self.assertEqual(self.loaded, [])

    def test_only_detected_format_decodes(self):
        token = tokens_v1.create_token(self.user)
        with mock.patch.object(tokens_v2, "decode_token") as decode_token_v2:
            self.assertIs(parse_token(token, self.get_user), self.user)
        decode_token_v2.assert_not_called()

    def test_unsupported_format(self):
        for token in ["", "abc", "not a token", "token!", "a:b", "ééééé"]:
            with self.subTest(token=token):
                exc = self.assertInvalid(token, Reason.MALFORMED)
                self.assertEqual(
                    str(exc), "Bad token: doesn't match a supported format"
                )
        self.assertEqual(self.loaded, [])


class TestTooLong(TokensTestCase):
    def test_too_long(self):
        token = "A" * (MAX_TOKEN_LENGTH + 1)
        with (
            mock.patch.object(tokens_v2, "detect_token") as detect_token_v2,
            mock.patch.object(tokens_v1, "detect_token") as detect_token_v1,
        ):
            exc = self.assertInvalid(token, Reason.MALFORMED)
        self.assertEqual(
            str(exc), f"Bad token: too long ({MAX_TOKEN_LENGTH + 1} characters)"
        )
        # Rejected before any work.
        detect_token_v2.assert_not_called()
        detect_token_v1.assert_not_called()
        self.assertEqual(self.loaded, [])

    def test_longest_accepted_length(self):
        # This token has the right format but a wrong signature size.
        exc = self.assertInvalid("A" * MAX_TOKEN_LENGTH, Reason.MALFORMED)
        self.assertNotIn("too long", str(exc))

    def test_built_in_formats_fit(self):
        # A 255-byte string primary key with the largest signature and a
        # timestamp is the longest token that the built-in formats create.
        with override_settings(
            AUTH_USER_MODEL="tests.StrUser",
            SESAME_MAX_AGE=300,
            SESAME_SIGNATURE_SIZE=64,
        ):
            user = make_user("é" * 127 + "x", password="md5$salt$" + "0" * 32)
            token = create_token(user)
            self.assertLessEqual(len(token), MAX_TOKEN_LENGTH)
            self.assertIs(parse_token(token, {user.pk: user}.get), user)

    def test_built_in_formats_fit_v1(self):
        with override_settings(
            AUTH_USER_MODEL="tests.StrUser",
            SESAME_MAX_AGE=300,
            SESAME_TOKENS=V1_FIRST,
        ):
            user = make_user("x" * 255, password="md5$salt$" + "0" * 32)
            token = create_token(user)
            self.assertLessEqual(len(token), MAX_TOKEN_LENGTH)
            self.assertIs(parse_token(token, {user.pk: user}.get), user)

    async def test_too_long_async(self):
        token = "A" * (MAX_TOKEN_LENGTH + 1)
        exc = await self.assertInvalidAsync(token, Reason.MALFORMED)
        self.assertIn("too long", str(exc))
        self.assertEqual(self.loaded, [])


class TestParseToken(TokensTestCase):
    def test_loader_receives_primary_key(self):
        token = create_token(self.user)
        self.assertIs(parse_token(token, self.get_user), self.user)
        self.assertEqual(self.loaded, [1])

    def test_unknown_user(self):
        token = create_token(make_user(2))
        exc = self.assertInvalid(token, Reason.UNKNOWN_USER)
        self.assertEqual(str(exc), "Unknown or inactive user: pk = 2")
        self.assertEqual(self.loaded, [2])

    def test_unknown_user_v1(self):
        token = tokens_v1.create_token(make_user(2))
        self.assertInvalid(token, Reason.UNKNOWN_USER)
        self.assertEqual(self.loaded, [2])

    @override_settings(SESAME_PRIMARY_KEY_FIELD="username")
    def test_unknown_user_primary_key_field(self):
        token = create_token(make_user(2, username="jane"))
        exc = self.assertInvalid(token, Reason.UNKNOWN_USER)
        self.assertEqual(str(exc), "Unknown or inactive user: username = 'jane'")

    def test_scope(self):
        token = create_token(self.user, "read")
        self.assertIs(parse_token(token, self.get_user, "read"), self.user)
        self.assertInvalid(token, Reason.BAD_SIGNATURE)

    def test_scope_keyword(self):
        token = create_token(self.user, "read")
        self.assertIs(parse_token(token, self.get_user, scope="read"), self.user)

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        token = create_token(self.user)
        self.assertIs(parse_token(token, self.get_user, max_age=60), self.user)
        self.assertInvalid(token, Reason.EXPIRED, max_age=0)

    def test_loader_errors_propagate(self):
        # A bug in the loader isn't a bad token.
        def get_user(user_key):
            raise RuntimeError("bug")

        with self.assertRaises(RuntimeError):
            parse_token(create_token(self.user), get_user)


class TestAParseToken(TokensTestCase):
    async def test_valid(self):
        token = create_token(self.user)
        self.assertIs(await aparse_token(token, self.aget_user), self.user)
        self.assertEqual(self.loaded, [1])

    async def test_valid_v1(self):
        token = tokens_v1.create_token(self.user)
        self.assertIs(await aparse_token(token, self.aget_user), self.user)

    async def test_scope(self):
        token = create_token(self.user, "read")
        self.assertIs(await aparse_token(token, self.aget_user, "read"), self.user)
        await self.assertInvalidAsync(token, Reason.BAD_SIGNATURE)

    async def test_unknown_user(self):
        token = create_token(make_user(2))
        exc = await self.assertInvalidAsync(token, Reason.UNKNOWN_USER)
        self.assertEqual(str(exc), "Unknown or inactive user: pk = 2")
        self.assertEqual(self.loaded, [2])

    async def test_bad_signature(self):
        token = create_token(self.user)
        self.user.set_password("changed")
        await self.assertInvalidAsync(token, Reason.BAD_SIGNATURE)

    async def test_malformed(self):
        await self.assertInvalidAsync("not a token", Reason.MALFORMED)
        self.assertEqual(self.loaded, [])

    @override_settings(SESAME_MAX_AGE=300)
    async def test_max_age(self):
        token = create_token(self.user)
        self.assertIs(await aparse_token(token, self.aget_user, max_age=60), self.user)
        await self.assertInvalidAsync(token, Reason.EXPIRED, max_age=0)

    async def test_v1_scope(self):
        token = tokens_v1.create_token(self.user)
        await self.assertInvalidAsync(token, Reason.WRONG_SCOPE, scope="read")

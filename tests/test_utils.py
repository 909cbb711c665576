from __future__ import annotations

import base64
import datetime
from urllib.parse import parse_qs, urlencode

import time_machine
from django.contrib.auth.signals import user_login_failed
from django.test import RequestFactory, TestCase, override_settings

from sesame_db.tokens import create_token
from sesame_db.utils import (
    aget_user,
    get_object_scope,
    get_parameters,
    get_query_string,
    get_token,
    get_user,
)

from .mixins import AsyncNumQueriesMixin, CaptureLogMixin, CreateUserMixin

BACKEND = "sesame_db.backends.ModelBackend"

# 2023-11-14T22:13:20Z
NOW = datetime.datetime.fromtimestamp(1_700_000_000, datetime.timezone.utc)

NOT_REQUESTS_OR_TOKENS = [42, b"bytes", None, {"sesame": "token"}]


def tampered(token):
    # Flip a bit in the last byte of the signature; the token stays well-formed.
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[-1] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


class UtilsTestCase(AsyncNumQueriesMixin, CaptureLogMixin, CreateUserMixin, TestCase):
    # A valid token costs:
    # 1. SELECT the user, to compute the signature from its password hash.
    NUM_QUERIES = 1

    # A valid token with update_last_login=True costs:
    # 1. SELECT the user;
    # 2. UPDATE its last login.
    NUM_QUERIES_UPDATE_LAST_LOGIN = 2

    # A one-time token costs:
    # 1. SELECT the user, to compute the signature from its password hash and
    #    its last login;
    # 2. UPDATE its last login, only if it's still the one that was signed.
    NUM_QUERIES_ONE_TIME = 2

    # A forged token whose signature is wrong costs:
    # 1. SELECT the user, to compute the expected signature.
    NUM_QUERIES_BAD_SIGNATURE = 1

    # A missing, malformed or expired token is rejected before any query.
    NUM_QUERIES_REJECTED_EARLY = 0

    def setUp(self):
        super().setUp()
        self.factory = RequestFactory()

    def get_request(self, token=None, name="sesame"):
        return self.factory.get("/", {} if token is None else {name: token})


class TestGetToken(UtilsTestCase):
    def test_get_token(self):
        token = get_token(self.user)
        self.assertEqual(get_user(token), self.user)

    def test_get_token_scope(self):
        token = get_token(self.user, "read")
        self.assertEqual(get_user(token, "read"), self.user)
        self.assertIsNone(get_user(token))

    def test_get_token_scope_keyword(self):
        token = get_token(self.user, scope="read")
        self.assertEqual(get_user(token, scope="read"), self.user)

    def test_get_token_is_create_token(self):
        self.assertEqual(get_token(self.user), create_token(self.user))

    def test_get_parameters(self):
        parameters = get_parameters(self.user)
        self.assertEqual(list(parameters), ["sesame"])
        self.assertEqual(get_user(parameters["sesame"]), self.user)

    def test_get_parameters_scope(self):
        parameters = get_parameters(self.user, "read")
        self.assertEqual(get_user(parameters["sesame"], "read"), self.user)
        self.assertIsNone(get_user(parameters["sesame"]))

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_get_parameters_token_name(self):
        parameters = get_parameters(self.user)
        self.assertEqual(list(parameters), ["login"])
        self.assertEqual(get_user(parameters["login"]), self.user)

    def test_get_parameters_extend_query_string(self):
        query_string = urlencode({"next": "/a?b=c", **get_parameters(self.user)})
        request = self.factory.get("/?" + query_string)
        self.assertEqual(get_user(request), self.user)

    def test_get_query_string(self):
        query_string = get_query_string(self.user)
        self.assertTrue(query_string.startswith("?sesame="))
        self.assertEqual(query_string, "?sesame=" + get_token(self.user))
        self.assertEqual(get_user(self.factory.get("/" + query_string)), self.user)

    def test_get_query_string_scope(self):
        query_string = get_query_string(self.user, "read")
        request = self.factory.get("/" + query_string)
        self.assertEqual(get_user(request, "read"), self.user)
        self.assertIsNone(get_user(request))

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_get_query_string_token_name(self):
        query_string = get_query_string(self.user)
        self.assertTrue(query_string.startswith("?login="))
        self.assertEqual(get_user(self.factory.get("/" + query_string)), self.user)

    @override_settings(SESAME_TOKEN_NAME="log in&")
    def test_get_query_string_is_encoded(self):
        query_string = get_query_string(self.user)
        self.assertTrue(query_string.startswith("?log+in%26="))
        self.assertEqual(
            parse_qs(query_string[1:]), {"log in&": [get_token(self.user)]}
        )

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v1", "sesame_db.tokens_v2"])
    def test_get_query_string_v1_token(self):
        # v1 tokens contain ":" which is percent-encoded in the query string.
        query_string = get_query_string(self.user)
        self.assertIn("%3A", query_string)
        self.assertEqual(get_user(self.factory.get("/" + query_string)), self.user)


class TestGetUser(UtilsTestCase):
    def test_request(self):
        request = self.get_request(get_token(self.user))
        with self.assertNumQueries(self.NUM_QUERIES):
            user = get_user(request)
        self.assertEqual(user, self.user)
        assert user is not None
        # login() needs to know which backend authenticated the user.
        self.assertEqual(user.backend, BACKEND)

    def test_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            user = get_user(get_token(self.user))
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, BACKEND)

    def test_missing_parameter(self):
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(get_user(self.get_request()))

    def test_other_parameter(self):
        request = self.get_request(get_token(self.user), name="token")
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(get_user(request))

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_token_name(self):
        token = get_token(self.user)
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(get_user(self.get_request(token)))
        self.assertEqual(get_user(self.get_request(token, name="login")), self.user)

    def test_token_in_post_data_is_ignored(self):
        request = self.factory.post("/", {"sesame": get_token(self.user)})
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(get_user(request))

    def test_empty_token(self):
        with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
            self.assertIsNone(get_user(""))
            self.assertIsNone(get_user(self.get_request("")))

    def test_malformed_token(self):
        for token in ["!!!", "not a token", "AAAAA", "A" * 2000]:
            with (
                self.subTest(token=token),
                self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY),
            ):
                self.assertIsNone(get_user(token))
                self.assertIsNone(get_user(self.get_request(token)))

    def test_forged_token(self):
        with self.assertNumQueries(self.NUM_QUERIES_BAD_SIGNATURE):
            self.assertIsNone(get_user(tampered(get_token(self.user))))

    @override_settings(SESAME_MAX_AGE=300)
    def test_expired_token(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(300)
            with self.assertNumQueries(self.NUM_QUERIES_REJECTED_EARLY):
                self.assertIsNone(get_user(token))

    def test_scope(self):
        token = get_token(self.user, "read")
        self.assertEqual(get_user(token, "read"), self.user)
        self.assertEqual(get_user(self.get_request(token), scope="read"), self.user)
        self.assertIsNone(get_user(token))
        self.assertIsNone(get_user(token, "write"))

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(120)
            self.assertEqual(get_user(token), self.user)
            self.assertIsNone(get_user(token, max_age=60))
            self.assertIsNone(get_user(token, max_age=datetime.timedelta(minutes=1)))
            self.assertEqual(get_user(token, max_age=180), self.user)

    def test_inactive_user(self):
        token = get_token(self.user)
        self.user.is_active = False
        self.user.save()
        self.assertIsNone(get_user(token))

    def test_password_change(self):
        token = get_token(self.user)
        self.user.set_password("changed")
        self.user.save()
        self.assertIsNone(get_user(token))

    def test_type_error(self):
        for value in NOT_REQUESTS_OR_TOKENS:
            with (
                self.subTest(value=value),
                self.assertNumQueries(0),
                self.assertRaises(TypeError),
            ):
                get_user(value)

    def test_type_error_message(self):
        with self.assertRaises(TypeError) as cm:
            get_user(b"bytes")
        self.assertEqual(
            str(cm.exception), "get_user() expects an HTTPRequest or a token, got bytes"
        )

    def test_failed_login_hides_token(self):
        credentials = []

        def receiver(sender, **kwargs):
            credentials.append(kwargs["credentials"])

        user_login_failed.connect(receiver, weak=False)
        self.addCleanup(user_login_failed.disconnect, receiver)
        token = tampered(get_token(self.user))
        self.assertIsNone(get_user(token, "read"))
        self.assertEqual(
            credentials,
            [
                {
                    "sesame_token": "********************",
                    "scope": "read",
                    "max_age": None,
                }
            ],
        )

    def test_logs_never_contain_token(self):
        token = tampered(get_token(self.user))
        with self.captureLogs():
            get_user(self.get_request(token))
        self.assertLogsContain("Invalid token for user")
        for line in self.logs.output:
            self.assertNotIn(token, line)


class TestUpdateLastLogin(UtilsTestCase):
    def assertLastLogin(self, expected):
        self.user.refresh_from_db()
        self.assertEqual(self.user.last_login, expected)

    def test_default(self):
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES),
        ):
            user = get_user(get_token(self.user))
        assert user is not None
        self.assertIsNone(user.last_login)
        self.assertLastLogin(None)

    def test_false(self):
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES),
        ):
            user = get_user(get_token(self.user), update_last_login=False)
        assert user is not None
        self.assertIsNone(user.last_login)
        self.assertLastLogin(None)

    def test_true(self):
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES_UPDATE_LAST_LOGIN),
        ):
            user = get_user(get_token(self.user), update_last_login=True)
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        self.assertLastLogin(NOW)

    def test_true_with_invalid_token(self):
        self.assertIsNone(get_user("not a token", update_last_login=True))
        self.assertLastLogin(None)

    def test_true_keeps_token_valid(self):
        # Without SESAME_ONE_TIME, the last login isn't signed.
        token = get_token(self.user)
        get_user(token, update_last_login=True)
        self.assertEqual(get_user(token), self.user)

    def test_positional_argument_rejected(self):
        with self.assertRaises(TypeError):
            get_user(get_token(self.user), "", None, True)  # type: ignore[call-arg]

    @override_settings(SESAME_ONE_TIME=True)
    def test_one_time_default(self):
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES_ONE_TIME),
        ):
            user = get_user(get_token(self.user))
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        self.assertLastLogin(NOW)

    @override_settings(SESAME_ONE_TIME=True)
    def test_one_time_true(self):
        # The token is consumed once; last login isn't saved a second time.
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES_ONE_TIME),
        ):
            user = get_user(get_token(self.user), update_last_login=True)
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        self.assertLastLogin(NOW)

    @override_settings(SESAME_ONE_TIME=True)
    def test_one_time_false(self):
        # One-time tokens are consumed whatever update_last_login says.
        token = get_token(self.user)
        with (
            time_machine.travel(NOW, tick=False),
            self.assertNumQueries(self.NUM_QUERIES_ONE_TIME),
        ):
            user = get_user(token, update_last_login=False)
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        self.assertLastLogin(NOW)
        self.assertIsNone(get_user(token, update_last_login=False))


@override_settings(SESAME_ONE_TIME=True)
class TestOneTime(UtilsTestCase):
    def test_token_works_once(self):
        token = get_token(self.user)
        self.assertEqual(get_user(self.get_request(token)), self.user)
        with self.assertNumQueries(self.NUM_QUERIES_BAD_SIGNATURE):
            self.assertIsNone(get_user(self.get_request(token)))

    def test_new_token_works(self):
        get_user(get_token(self.user))
        self.user.refresh_from_db()
        self.assertEqual(get_user(get_token(self.user)), self.user)

    def test_token_created_before_use_of_another(self):
        # Using any token invalidates all the other one-time tokens.
        first, second = get_token(self.user), get_token(self.user, "read")
        self.assertEqual(get_user(first), self.user)
        self.assertIsNone(get_user(second, "read"))

    async def test_token_works_once_async(self):
        token = get_token(self.user)
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_ONE_TIME):
            user = await aget_user(self.get_request(token))
        self.assertEqual(user, self.user)
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_BAD_SIGNATURE):
            user = await aget_user(self.get_request(token))
        self.assertIsNone(user)

    async def test_one_time_true_async(self):
        # The token is consumed once; last login isn't saved a second time.
        token = get_token(self.user)
        with time_machine.travel(NOW, tick=False):
            async with self.assertNumQueriesAsync(self.NUM_QUERIES_ONE_TIME):
                user = await aget_user(token, update_last_login=True)
        assert user is not None
        self.assertEqual(user.last_login, NOW)

    async def test_one_time_false_async(self):
        token = get_token(self.user)
        with time_machine.travel(NOW, tick=False):
            user = await aget_user(token, update_last_login=False)
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        await self.user.arefresh_from_db()
        self.assertEqual(self.user.last_login, NOW)


class TestAGetUser(UtilsTestCase):
    async def test_request(self):
        request = self.get_request(get_token(self.user))
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aget_user(request)
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, BACKEND)

    async def test_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aget_user(get_token(self.user))
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, BACKEND)

    async def test_missing_parameter(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_REJECTED_EARLY):
            user = await aget_user(self.get_request())
        self.assertIsNone(user)

    @override_settings(SESAME_TOKEN_NAME="login")
    async def test_token_name(self):
        token = get_token(self.user)
        self.assertIsNone(await aget_user(self.get_request(token)))
        self.assertEqual(
            await aget_user(self.get_request(token, name="login")), self.user
        )

    async def test_malformed_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_REJECTED_EARLY):
            user = await aget_user("not a token")
        self.assertIsNone(user)

    async def test_forged_token(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_BAD_SIGNATURE):
            user = await aget_user(tampered(get_token(self.user)))
        self.assertIsNone(user)

    @override_settings(SESAME_MAX_AGE=300)
    async def test_expired_token(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(300)
            async with self.assertNumQueriesAsync(self.NUM_QUERIES_REJECTED_EARLY):
                user = await aget_user(token)
        self.assertIsNone(user)

    async def test_scope(self):
        token = get_token(self.user, "read")
        self.assertEqual(await aget_user(token, "read"), self.user)
        self.assertIsNone(await aget_user(token))

    @override_settings(SESAME_MAX_AGE=300)
    async def test_max_age(self):
        with time_machine.travel(NOW, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(120)
            self.assertEqual(await aget_user(token), self.user)
            self.assertIsNone(await aget_user(token, max_age=60))

    async def test_inactive_user(self):
        token = get_token(self.user)
        self.user.is_active = False
        await self.user.asave()
        self.assertIsNone(await aget_user(token))

    async def test_type_error(self):
        for value in NOT_REQUESTS_OR_TOKENS:
            with self.subTest(value=value), self.assertRaises(TypeError):
                await aget_user(value)

    async def test_update_last_login_default(self):
        with time_machine.travel(NOW, tick=False):
            async with self.assertNumQueriesAsync(self.NUM_QUERIES):
                user = await aget_user(get_token(self.user))
        assert user is not None
        self.assertIsNone(user.last_login)

    async def test_update_last_login_false(self):
        with time_machine.travel(NOW, tick=False):
            async with self.assertNumQueriesAsync(self.NUM_QUERIES):
                user = await aget_user(get_token(self.user), update_last_login=False)
        assert user is not None
        self.assertIsNone(user.last_login)
        await self.user.arefresh_from_db()
        self.assertIsNone(self.user.last_login)

    async def test_update_last_login_true(self):
        with time_machine.travel(NOW, tick=False):
            async with self.assertNumQueriesAsync(self.NUM_QUERIES_UPDATE_LAST_LOGIN):
                user = await aget_user(get_token(self.user), update_last_login=True)
        assert user is not None
        self.assertEqual(user.last_login, NOW)
        await self.user.arefresh_from_db()
        self.assertEqual(self.user.last_login, NOW)


@override_settings(AUTH_USER_MODEL="tests.UUIDUser")
class TestUUIDUser(UtilsTestCase):
    def test_get_user(self):
        self.assertEqual(get_user(self.get_request(get_token(self.user))), self.user)

    async def test_aget_user(self):
        self.assertEqual(await aget_user(get_token(self.user)), self.user)


@override_settings(AUTH_USER_MODEL="tests.StrUser")
class TestStrUser(UtilsTestCase):
    def test_get_user(self):
        self.assertEqual(get_user(self.get_request(get_token(self.user))), self.user)


@override_settings(AUTH_USER_MODEL="tests.BigUser")
class TestBigUser(UtilsTestCase):
    def test_get_user(self):
        self.assertEqual(get_user(self.get_request(get_token(self.user))), self.user)


class TestExplicitToken(UtilsTestCase):
    """get_user(request, token=...): a token from elsewhere than the query string."""

    def test_request_and_token(self):
        token = get_token(self.user)
        with self.assertNumQueries(self.NUM_QUERIES):
            user = get_user(self.get_request(), token=token)
        self.assertEqual(user, self.user)
        assert user is not None
        self.assertEqual(user.backend, BACKEND)

    def test_query_string_is_ignored(self):
        other = self.create_user("jane", email="jane@example.com")
        request = self.get_request(get_token(other))
        self.assertEqual(get_user(request, token=get_token(self.user)), self.user)
        self.assertIsNone(get_user(request, token="not a token"))

    def test_none_request(self):
        self.assertEqual(get_user(None, token=get_token(self.user)), self.user)

    def test_scope_and_max_age(self):
        token = get_token(self.user, "read")
        self.assertEqual(get_user(self.get_request(), "read", token=token), self.user)
        self.assertIsNone(get_user(self.get_request(), token=token))

    def test_request_is_passed_to_the_backend(self):
        request = self.get_request()
        seen = []

        def receiver(sender, credentials, request, **kwargs):
            seen.append((credentials, request))

        user_login_failed.connect(receiver)
        self.addCleanup(user_login_failed.disconnect, receiver)
        self.assertIsNone(get_user(request, token="not a token"))
        [(credentials, seen_request)] = seen
        self.assertIs(seen_request, request)
        # The token is masked in failed login signals.
        self.assertNotIn("not a token", str(credentials))

    def test_type_errors(self):
        token = get_token(self.user)
        for value in ["a token", 42, {"sesame": token}]:
            with self.subTest(value=value), self.assertRaises(TypeError) as cm:
                get_user(value, token=token)
        self.assertEqual(
            str(cm.exception),
            "get_user(..., token=...) expects an HttpRequest or None, got dict",
        )
        with self.assertRaises(TypeError) as cm:
            get_user(self.get_request(), token=token.encode())  # type: ignore[arg-type]
        self.assertEqual(str(cm.exception), "token must be a string, got bytes")

    async def test_async(self):
        token = get_token(self.user)
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            user = await aget_user(self.get_request(), token=token)
        self.assertEqual(user, self.user)
        self.assertEqual(await aget_user(None, token=token), self.user)
        self.assertIsNone(await aget_user(self.get_request(), token="not a token"))
        with self.assertRaises(TypeError):
            await aget_user("a token", token=token)


class TestGetObjectScope(CreateUserMixin, TestCase):
    def test_instance(self):
        self.assertEqual(get_object_scope(self.user), f"auth.user:{self.user.pk}")

    def test_model_and_primary_key(self):
        User = type(self.user)
        self.assertEqual(get_object_scope(User, 42), "auth.user:42")
        self.assertEqual(get_object_scope(User, "{pk}"), "auth.user:{pk}")
        self.assertEqual(
            get_object_scope(User, "{pk}").format(pk=self.user.pk),
            get_object_scope(self.user),
        )

    def test_action(self):
        self.assertEqual(
            get_object_scope(self.user, action="edit"), f"edit:auth.user:{self.user.pk}"
        )
        self.assertEqual(
            get_object_scope(type(self.user), 7, action="Read-only_2"),
            "Read-only_2:auth.user:7",
        )

    def test_bad_action(self):
        for action in ["a:b", "a.b", "a b", "é"]:
            with self.subTest(action=action), self.assertRaises(ValueError) as cm:
                get_object_scope(self.user, action=action)
        self.assertEqual(
            str(cm.exception),
            "action may contain only letters, digits, '_' and '-', not 'é'",
        )

    def test_unsaved_instance(self):
        with self.assertRaisesMessage(
            ValueError, "auth.User instance has no primary key: save it first"
        ):
            get_object_scope(type(self.user)(username="new"))

    def test_model_without_primary_key(self):
        with self.assertRaisesMessage(
            ValueError, "get_object_scope(model) requires a primary key"
        ):
            get_object_scope(type(self.user))

    def test_instance_and_primary_key(self):
        with self.assertRaises(TypeError):
            get_object_scope(self.user, 42)

    def test_token_for_one_object(self):
        other = self.create_user("jane", email="jane@example.com")
        token = get_token(self.user, get_object_scope(other))
        self.assertEqual(get_user(token, get_object_scope(other)), self.user)
        self.assertIsNone(get_user(token, get_object_scope(self.user)))
        self.assertIsNone(get_user(token, get_object_scope(other, action="edit")))

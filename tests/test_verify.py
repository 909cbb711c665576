"""
The verification home: one format dispatcher, rejections raised to the entry points.

"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from django.contrib.auth import authenticate
from django.core.cache import caches
from django.test import RequestFactory, TestCase, override_settings

from sesame_db import ratelimit, tokens_store, tokens_v1, tokens_v2, utils, verify
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.tokens import decode_token
from sesame_db.utils import acheck_user, check_user, get_token, get_user, issue_token

from .mixins import CreateUserMixin

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "sesame-db-verify-tests",
    },
}
LIMIT = {"failures": 1, "period": 60}

PACKAGE = Path(verify.__file__).parent


class DispatcherTests(CreateUserMixin, TestCase):
    def test_stored_token(self):
        token, record = issue_token(self.user, scope="a")
        claims = decode_token(token, scope="a", stored=True)
        self.assertIsInstance(claims, tokens_store.StoredClaims)
        assert isinstance(claims, tokens_store.StoredClaims)
        self.assertEqual(claims.record_id, record.pk)

    def test_stored_token_checks_its_scope_claim(self):
        token, record = issue_token(self.user, scope="a")
        with self.assertRaises(InvalidToken) as ctx:
            decode_token(token, scope="b", stored=True)
        self.assertEqual(
            (ctx.exception.reason, ctx.exception.token_id),
            (Reason.WRONG_SCOPE, record.pk),
        )

    def test_stored_token_without_stored(self):
        # parse_token() takes stateless tokens only, as before.
        token, _ = issue_token(self.user)
        with self.assertRaises(InvalidToken) as ctx:
            decode_token(token)
        self.assertEqual(ctx.exception.reason, Reason.MALFORMED)

    @override_settings(SESAME_TOKENS=["sesame_db.tokens_v2", "sesame_db.tokens_v1"])
    def test_stateless_tokens(self):
        for module in [tokens_v2, tokens_v1]:
            with self.subTest(module=module.__name__):
                decoded = decode_token(module.create_token(self.user), stored=True)
                self.assertIsInstance(decoded, module.DecodedToken)

    def test_one_dispatcher(self):
        # Only tokens.py tells formats apart: no other module calls a
        # format's detect_token().
        callers = set()
        for path in PACKAGE.rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "detect_token"
                    and isinstance(node.ctx, ast.Load)
                ):
                    callers.add(path.relative_to(PACKAGE).as_posix())
        self.assertEqual(callers, {"tokens.py"})


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT=LIMIT)
class RejectionTests(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        caches["default"].clear()
        self.factory = RequestFactory()

    def request(self):
        return self.factory.get("/", REMOTE_ADDR="192.0.2.1")

    def test_capture(self):
        with verify.capture() as rejections:
            self.assertIsNone(authenticate(self.request(), sesame_token="junk"))
        self.assertEqual([exc.reason for exc in rejections], [Reason.MALFORMED])

    def test_capture_outside_a_block(self):
        # django-sesame's get_user() calls authenticate() directly: the
        # rejection isn't kept anywhere.
        self.assertIsNone(authenticate(self.request(), sesame_token="junk"))
        with verify.capture() as rejections:
            pass
        self.assertEqual(rejections, [])

    def test_check_user_raises_the_rejection(self):
        with self.assertRaises(InvalidToken) as ctx:
            check_user(self.request(), token="junk")
        self.assertEqual(ctx.exception.reason, Reason.MALFORMED)

    def test_check_user_raises_rate_limiting(self):
        self.assertIsNone(get_user(self.request(), token="junk"))
        request = self.request()
        before = set(vars(request))
        with self.assertRaises(InvalidToken) as ctx:
            check_user(request, token=get_token(self.user))
        self.assertEqual(ctx.exception.reason, Reason.RATE_LIMITED)
        # Carried by the exception, not by an attribute of the request; the
        # helper for views still tells.
        self.assertEqual(set(vars(request)), before)
        self.assertTrue(ratelimit.is_rate_limited(request))
        self.assertFalse(ratelimit.is_rate_limited(self.request()))

    async def test_acheck_user_raises_rate_limiting(self):
        self.assertIsNone(await utils.aget_user(self.request(), token="junk"))
        with self.assertRaises(InvalidToken) as ctx:
            await acheck_user(self.request(), token=get_token(self.user))
        self.assertEqual(ctx.exception.reason, Reason.RATE_LIMITED)

    def test_check_user_without_token(self):
        self.assertIsNone(check_user(self.request()))

    def test_check_user_valid_token(self):
        self.assertEqual(check_user(get_token(self.user)), self.user)

    @override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]
    )
    def test_no_backend_checks_tokens(self):
        with self.assertRaises(InvalidToken) as ctx:
            check_user(self.request(), token=get_token(self.user))
        self.assertEqual(ctx.exception.reason, Reason.MALFORMED)


class UpdateLastLoginTests(CreateUserMixin, TestCase):
    def test_none_is_false(self):
        # django-sesame's default is accepted; without SESAME_ONE_TIME, it
        # doesn't write the last login date, like False.
        for value in [None, False]:
            with self.subTest(update_last_login=value), self.assertNumQueries(1):
                user = get_user(get_token(self.user), update_last_login=value)
            self.assertEqual(user, self.user)

    def test_signature(self):
        parameter = inspect.signature(get_user).parameters["update_last_login"]
        self.assertIs(parameter.kind, inspect.Parameter.KEYWORD_ONLY)
        self.assertIs(parameter.default, False)


class LayoutTests(TestCase):
    def test_views_use_no_private_helper_of_decorators(self):
        tree = ast.parse((PACKAGE / "views.py").read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "decorators"
            for alias in node.names
        }
        self.assertEqual(imported, {"decorate"})

    def test_entry_points_do_not_read_the_compatible_helper(self):
        # They get the rate-limit outcome from the exception.
        for name in [
            "decorators.py",
            "views.py",
            "middleware.py",
            "contrib/rest_framework.py",
            "contrib/channels.py",
        ]:
            with self.subTest(module=name):
                source = (PACKAGE / name).read_text()
                self.assertNotIn("ratelimit import is_rate_limited", source)
                self.assertNotIn("get_user(", source.replace("check_user(", ""))


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT=LIMIT)
class CompatibleHelperTests(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        caches["default"].clear()

    def test_view_after_an_optional_token(self):
        # A view that runs after a rejected token can still tell rate
        # limiting apart, as before.
        from sesame_db.decorators import authenticate as authenticate_view

        seen = []

        @authenticate_view(required=False)
        def view(request):
            seen.append(ratelimit.is_rate_limited(request))
            return None

        factory = RequestFactory()
        token = get_token(self.user)
        view(factory.get("/", {"sesame": "junk"}, REMOTE_ADDR="192.0.2.1"))
        view(factory.get("/", {"sesame": token}, REMOTE_ADDR="192.0.2.1"))
        view(factory.get("/", {"sesame": token}, REMOTE_ADDR="192.0.2.2"))
        self.assertEqual(seen, [False, True, False])

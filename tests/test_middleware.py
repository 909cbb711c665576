from __future__ import annotations

from collections.abc import Awaitable
from typing import cast
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory, TestCase, override_settings

from sesame_db.middleware import AuthenticationMiddleware
from sesame_db.utils import get_query_string, get_token

from . import views
from .mixins import (
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    capture_login_failed,
    tamper,
)

SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESAME_MIDDLEWARE = "sesame_db.middleware.AuthenticationMiddleware"

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"

# Browsers where a redirect right after login triggers ITP.
SAFARI_USER_AGENTS = {
    "Safari on iPhone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Safari on macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Chrome on iPhone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
}

OTHER_USER_AGENTS = {
    "Chrome on macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Chrome on Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Firefox on Linux": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "no user agent": "",
}


class MiddlewareTestCase(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.token = get_token(self.user)
        self.qs = get_query_string(self.user)

    def assertUser(self, response, content):
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content.decode(), content)

    def assertRedirectsTo(self, response, url):
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response["Location"], url)

    async def acreate_user(self, username):
        return await sync_to_async(self.create_user)(username)

    def logged_in_user_pk(self):
        return self.client.session.get(SESSION_KEY)

    async def alogged_in_user_pk(self):
        session = await self.async_client.asession()
        return await session.aget(SESSION_KEY)


@override_settings(MIDDLEWARE=[SESSION_MIDDLEWARE, AUTH_MIDDLEWARE, SESAME_MIDDLEWARE])
class TestMiddleware(CaptureLogMixin, MiddlewareTestCase):
    # A request without a token costs only Django's queries.
    # For an anonymous user: none.
    NUM_QUERIES_ANONYMOUS = 0
    # For a logged-in user:
    # 1. SELECT the session.
    # 2. SELECT the user of the session.
    NUM_QUERIES_LOGGED_IN = 2

    # A request with a valid token, with sessions in signed cookies:
    # 1. SELECT the user: the signature covers their password hash.
    # 2. UPDATE last_login: login() does it (and the middleware doesn't).
    NUM_QUERIES_LOGIN = 2

    # GET: log in, then redirect without the token

    def test_login_and_redirect(self):
        response = self.client.get("/user/" + self.qs)
        self.assertRedirectsTo(response, "/user/")
        self.assertEqual(self.logged_in_user_pk(), str(self.user.pk))
        self.assertUser(self.client.get("/user/"), "john")

    async def test_login_and_redirect_async(self):
        response = await self.async_client.get("/auser/" + self.qs)
        self.assertRedirectsTo(response, "/auser/")
        self.assertEqual(await self.alogged_in_user_pk(), str(self.user.pk))
        self.assertUser(await self.async_client.get("/auser/"), "john")

    def test_redirect_keeps_other_parameters(self):
        query = urlencode(
            [("a", "1"), ("sesame", self.token), ("a", "2"), ("b", "x y")]
        )
        response = self.client.get("/user/?" + query)
        self.assertRedirectsTo(response, "/user/?a=1&a=2&b=x+y")

    async def test_redirect_keeps_other_parameters_async(self):
        query = urlencode(
            [("a", "1"), ("sesame", self.token), ("a", "2"), ("b", "x y")]
        )
        response = await self.async_client.get("/auser/?" + query)
        self.assertRedirectsTo(response, "/auser/?a=1&a=2&b=x+y")

    def test_redirect_removes_repeated_token(self):
        query = urlencode([("sesame", "first"), ("a", "1"), ("sesame", self.token)])
        response = self.client.get("/user/?" + query)
        self.assertRedirectsTo(response, "/user/?a=1")

    async def test_redirect_removes_repeated_token_async(self):
        query = urlencode([("sesame", "first"), ("a", "1"), ("sesame", self.token)])
        response = await self.async_client.get("/auser/?" + query)
        self.assertRedirectsTo(response, "/auser/?a=1")

    def test_redirect_keeps_non_ascii_path(self):
        response = self.client.get("/user/caf%C3%A9/" + self.qs)
        self.assertRedirectsTo(response, "/user/caf%C3%A9/")

    # No async twin: Django 5.2's AsyncClient puts the path into the ASGI
    # scope decoded as ISO-8859-1, where ASGI expects UTF-8, so the view would
    # see /auser/cafÃ©/ whatever the middleware does.

    def test_redirect_keeps_escaped_path(self):
        # Regression: get_redirect() built the URL from request.path, which is
        # percent-decoded: /user/a%3Fb/ redirects to /user/a?b/, another URL
        # (path /user/a, query b/). It escapes the path, like
        # HttpRequest.get_full_path() does with escape_uri_path().
        response = self.client.get("/user/a%3Fb/" + self.qs)
        self.assertRedirectsTo(response, "/user/a%3Fb/")

    @override_settings(SESAME_TOKEN_NAME="magic")
    def test_redirect_with_custom_token_name(self):
        query = urlencode([("magic", get_token(self.user)), ("sesame", "kept")])
        response = self.client.get("/user/?" + query)
        self.assertRedirectsTo(response, "/user/?sesame=kept")
        self.assertEqual(self.logged_in_user_pk(), str(self.user.pk))

    @override_settings(SESAME_TOKEN_NAME="magic")
    async def test_redirect_with_custom_token_name_async(self):
        query = urlencode([("magic", get_token(self.user)), ("sesame", "kept")])
        response = await self.async_client.get("/auser/?" + query)
        self.assertRedirectsTo(response, "/auser/?sesame=kept")
        self.assertEqual(await self.alogged_in_user_pk(), str(self.user.pk))

    def test_token_replaces_logged_in_user(self):
        self.client.force_login(self.create_user("jane"))
        response = self.client.get("/user/" + self.qs)
        self.assertRedirectsTo(response, "/user/")
        self.assertUser(self.client.get("/user/"), "john")

    async def test_token_replaces_logged_in_user_async(self):
        await self.async_client.aforce_login(await self.acreate_user("jane"))
        response = await self.async_client.get("/auser/" + self.qs)
        self.assertRedirectsTo(response, "/auser/")
        self.assertUser(await self.async_client.get("/auser/"), "john")

    @override_settings(SESSION_ENGINE=SIGNED_COOKIES)
    def test_login_queries(self):
        with self.assertNumQueries(self.NUM_QUERIES_LOGIN):
            response = self.client.get("/user/" + self.qs)
        self.assertRedirectsTo(response, "/user/")
        self.user.refresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    @override_settings(SESSION_ENGINE=SIGNED_COOKIES)
    async def test_login_queries_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_LOGIN):
            response = await self.async_client.get("/auser/" + self.qs)
        self.assertRedirectsTo(response, "/auser/")
        await self.user.arefresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    # POST: log in, no redirect

    def test_post_logs_in_without_redirect(self):
        response = self.client.post("/user/" + self.qs)
        self.assertUser(response, "john")
        self.assertEqual(self.logged_in_user_pk(), str(self.user.pk))

    async def test_post_logs_in_without_redirect_async(self):
        response = await self.async_client.post("/auser/" + self.qs)
        self.assertUser(response, "john")
        self.assertEqual(await self.alogged_in_user_pk(), str(self.user.pk))

    # Safari and iOS: log in, no redirect

    def test_safari_logs_in_without_redirect(self):
        for name, user_agent in SAFARI_USER_AGENTS.items():
            with self.subTest(name):
                client = self.client_class()
                response = client.get(
                    "/user/" + self.qs, headers={"user-agent": user_agent}
                )
                self.assertUser(response, "john")
                self.assertEqual(client.session[SESSION_KEY], str(self.user.pk))

    async def test_safari_logs_in_without_redirect_async(self):
        for name, user_agent in SAFARI_USER_AGENTS.items():
            with self.subTest(name):
                client = self.async_client_class()
                response = await client.get(
                    "/auser/" + self.qs, headers={"user-agent": user_agent}
                )
                self.assertUser(response, "john")
                session = await client.asession()
                self.assertEqual(await session.aget(SESSION_KEY), str(self.user.pk))

    def test_other_browsers_redirect(self):
        for name, user_agent in OTHER_USER_AGENTS.items():
            with self.subTest(name):
                client = self.client_class()
                response = client.get(
                    "/user/" + self.qs, headers={"user-agent": user_agent}
                )
                self.assertRedirectsTo(response, "/user/")

    async def test_other_browsers_redirect_async(self):
        for name, user_agent in OTHER_USER_AGENTS.items():
            with self.subTest(name):
                client = self.async_client_class()
                response = await client.get(
                    "/auser/" + self.qs, headers={"user-agent": user_agent}
                )
                self.assertRedirectsTo(response, "/auser/")

    # Invalid token: no login, the request goes on anonymously

    def test_invalid_token(self):
        for token in [tamper(self.token), "not a token", ""]:
            with self.subTest(token=token):
                response = self.client.get("/user/?" + urlencode({"sesame": token}))
                self.assertUser(response, "anonymous")
                self.assertIsNone(self.logged_in_user_pk())

    async def test_invalid_token_async(self):
        for token in [tamper(self.token), "not a token", ""]:
            with self.subTest(token=token):
                response = await self.async_client.get(
                    "/auser/?" + urlencode({"sesame": token})
                )
                self.assertUser(response, "anonymous")
                self.assertIsNone(await self.alogged_in_user_pk())

    def test_invalid_token_keeps_logged_in_user(self):
        self.client.force_login(self.user)
        token = tamper(get_token(self.create_user("jane")))
        response = self.client.get("/user/?" + urlencode({"sesame": token}))
        self.assertUser(response, "john")

    async def test_invalid_token_keeps_logged_in_user_async(self):
        await self.async_client.aforce_login(self.user)
        token = tamper(get_token(await self.acreate_user("jane")))
        response = await self.async_client.get(
            "/auser/?" + urlencode({"sesame": token})
        )
        self.assertUser(response, "john")

    def test_rejected_token_isnt_sent_to_login_failed_receivers(self):
        token = tamper(self.token)
        with capture_login_failed() as failed, self.captureLogs():
            response = self.client.get("/user/?" + urlencode({"sesame": token}))
        self.assertUser(response, "anonymous")
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["sesame_token"], "********************")
        self.assertNotIn(token, repr(failed))
        self.assertLogsContain("Invalid token for user pk = ")
        self.assertNotIn(token, "\n".join(self.logs.output))

    async def test_rejected_token_isnt_sent_to_login_failed_receivers_async(self):
        token = tamper(self.token)
        with capture_login_failed() as failed, self.captureLogs():
            response = await self.async_client.get(
                "/auser/?" + urlencode({"sesame": token})
            )
        self.assertUser(response, "anonymous")
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["sesame_token"], "********************")
        self.assertNotIn(token, repr(failed))
        self.assertLogsContain("Invalid token for user pk = ")
        self.assertNotIn(token, "\n".join(self.logs.output))

    # No token: no extra queries

    def test_no_token_anonymous_queries(self):
        with self.assertNumQueries(self.NUM_QUERIES_ANONYMOUS):
            response = self.client.get("/user/?a=1")
        self.assertUser(response, "anonymous")

    async def test_no_token_anonymous_queries_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_ANONYMOUS):
            response = await self.async_client.get("/auser/?a=1")
        self.assertUser(response, "anonymous")

    def test_no_token_logged_in_queries(self):
        self.client.force_login(self.user)
        with self.assertNumQueries(self.NUM_QUERIES_LOGGED_IN):
            response = self.client.get("/user/?a=1")
        self.assertUser(response, "john")

    async def test_no_token_logged_in_queries_async(self):
        await self.async_client.aforce_login(self.user)
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_LOGGED_IN):
            response = await self.async_client.get("/auser/?a=1")
        self.assertUser(response, "john")


@override_settings(MIDDLEWARE=[SESAME_MIDDLEWARE])
class TestMiddlewareWithoutSessions(MiddlewareTestCase):
    # A request with a valid token:
    # 1. SELECT the user: the signature covers their password hash.
    # Nothing else: there's no login(), so last_login doesn't change.
    NUM_QUERIES = 1

    def test_valid_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            response = self.client.get("/user/" + self.qs)
        self.assertUser(response, "john")
        self.user.refresh_from_db()
        self.assertIsNone(self.user.last_login)

    async def test_valid_token_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            response = await self.async_client.get("/auser/" + self.qs)
        self.assertUser(response, "john")
        await self.user.arefresh_from_db()
        self.assertIsNone(self.user.last_login)

    def test_user_for_this_request_only(self):
        self.client.get("/user/" + self.qs)
        self.assertUser(self.client.get("/user/"), "anonymous")

    async def test_user_for_this_request_only_async(self):
        await self.async_client.get("/auser/" + self.qs)
        self.assertUser(await self.async_client.get("/auser/"), "anonymous")

    def test_invalid_token(self):
        response = self.client.get("/user/?" + urlencode({"sesame": "not a token"}))
        self.assertUser(response, "anonymous")

    async def test_invalid_token_async(self):
        response = await self.async_client.get(
            "/auser/?" + urlencode({"sesame": "not a token"})
        )
        self.assertUser(response, "anonymous")

    def test_no_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/user/")
        self.assertUser(response, "anonymous")

    # Another middleware may set request.user without sessions. Redirecting
    # would drop the token with nothing to remember the user.

    def test_no_redirect_when_request_user_is_set(self):
        middleware = AuthenticationMiddleware(views.show_user)
        request = RequestFactory().get("/user/" + self.qs)
        request.user = AnonymousUser()
        response = cast(HttpResponse, middleware(request))
        self.assertEqual(response.status_code, 200)

    async def test_no_redirect_when_request_user_is_set_async(self):
        middleware = AuthenticationMiddleware(views.ashow_user)
        request = AsyncRequestFactory().get("/auser/" + self.qs)
        request.user = AnonymousUser()
        response = await cast(Awaitable[HttpResponse], middleware(request))
        self.assertEqual(response.status_code, 200)

    async def test_no_token_async(self):
        async with self.assertNumQueriesAsync(0):
            response = await self.async_client.get("/auser/")
        self.assertUser(response, "anonymous")


@override_settings(MIDDLEWARE=[SESSION_MIDDLEWARE, SESAME_MIDDLEWARE])
class TestMiddlewareWithoutAuthMiddleware(MiddlewareTestCase):
    """With sessions but without Django's middleware, log in and set request.user."""

    def test_valid_token(self):
        response = self.client.get("/user/" + self.qs)
        # Nothing would set request.user on the next request: no redirect.
        self.assertUser(response, "john")
        self.assertEqual(self.logged_in_user_pk(), str(self.user.pk))

    async def test_valid_token_async(self):
        response = await self.async_client.get("/auser/" + self.qs)
        self.assertUser(response, "john")
        self.assertEqual(await self.alogged_in_user_pk(), str(self.user.pk))

    def test_invalid_token(self):
        response = self.client.get("/user/?" + urlencode({"sesame": "not a token"}))
        self.assertUser(response, "anonymous")
        self.assertIsNone(self.logged_in_user_pk())

    async def test_invalid_token_async(self):
        response = await self.async_client.get(
            "/auser/?" + urlencode({"sesame": "not a token"})
        )
        self.assertUser(response, "anonymous")
        self.assertIsNone(await self.alogged_in_user_pk())

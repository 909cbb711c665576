from __future__ import annotations

import datetime
from urllib.parse import urlencode

import time_machine
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection
from django.test import (
    Client,
    RequestFactory,
    TestCase,
    TransactionTestCase,
    override_settings,
)

from sesame_db.models import TokenEvent
from sesame_db.utils import get_object_scope, get_query_string, get_token, issue_token
from sesame_db.views import LoginView

from .mixins import (
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    capture_login_failed,
    last_login_updates,
    tamper,
)

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


class TestLoginView(
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    TestCase,
):
    # A login, with sessions in signed cookies:
    # 1. SELECT the user: the signature covers their password hash.
    # 2. UPDATE last_login: login() does it (and get_user() doesn't).
    NUM_QUERIES = 2

    def setUp(self):
        super().setUp()
        self.token = get_token(self.user)
        self.qs = get_query_string(self.user)

    def login_url(self, path="/login/", **params):
        return path + "?" + urlencode({"sesame": self.token, **params})

    def assertRedirectsTo(self, response, url):
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response["Location"], url)

    def assertLoggedIn(self):
        self.assertEqual(self.client.session.get(SESSION_KEY), str(self.user.pk))

    def assertNotLoggedIn(self):
        self.assertIsNone(self.client.session.get(SESSION_KEY))

    # Valid token

    def test_login(self):
        response = self.client.get("/login/" + self.qs)
        self.assertRedirectsTo(response, "/")
        self.assertLoggedIn()
        self.assertEqual(self.client.get("/user/").content, b"john")

    async def test_login_async(self):
        response = await self.async_client.get("/login/" + self.qs)
        self.assertRedirectsTo(response, "/")
        session = await self.async_client.asession()
        self.assertEqual(await session.aget(SESSION_KEY), str(self.user.pk))
        self.assertEqual((await self.async_client.get("/auser/")).content, b"john")

    @override_settings(SESSION_ENGINE=SIGNED_COOKIES)
    def test_login_updates_last_login_once(self):
        with self.assertNumQueries(self.NUM_QUERIES) as queries:
            response = self.client.get("/login/" + self.qs)
        self.assertRedirectsTo(response, "/")
        self.assertEqual(len(last_login_updates(queries)), 1)
        self.user.refresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    @override_settings(SESSION_ENGINE=SIGNED_COOKIES)
    async def test_login_updates_last_login_once_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES) as queries:
            response = await self.async_client.get("/login/" + self.qs)
        self.assertRedirectsTo(response, "/")
        self.assertEqual(len(last_login_updates(queries)), 1)
        await self.user.arefresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    def test_login_replaces_logged_in_user(self):
        self.client.force_login(self.create_user("jane"))
        self.assertRedirectsTo(self.client.get("/login/" + self.qs), "/")
        self.assertLoggedIn()

    # Where to redirect

    @override_settings(LOGIN_REDIRECT_URL="/dashboard/")
    def test_login_redirect_url_read_at_request_time(self):
        self.assertRedirectsTo(self.client.get("/login/" + self.qs), "/dashboard/")

    @override_settings(LOGIN_REDIRECT_URL="welcome")
    def test_login_redirect_url_name(self):
        self.assertRedirectsTo(self.client.get("/login/" + self.qs), "/welcome/")

    def test_next_page(self):
        response = self.client.get("/login/welcome/" + self.qs)
        self.assertRedirectsTo(response, "/welcome/")

    def test_next_page_none(self):
        response = self.client.get("/login/no-redirect/" + self.qs)
        self.assertEqual(response.status_code, 204)
        self.assertEqual(response.content, b"")
        self.assertLoggedIn()

    def test_next_same_host(self):
        for next_url in ["/welcome/?a=1&b=2", "http://testserver/welcome/"]:
            with self.subTest(next=next_url):
                response = self.client.get(self.login_url(next=next_url))
                self.assertRedirectsTo(response, next_url)

    def test_next_overrides_next_page(self):
        response = self.client.get(self.login_url("/login/welcome/", next="/user/"))
        self.assertRedirectsTo(response, "/user/")

    def test_next_other_host_ignored(self):
        # No open redirect: fall back to the default.
        for next_url in [
            "https://evil.example/",
            "//evil.example/",
            "https:///evil.example/",
            "///evil.example/",
            "/\\evil.example/",
            "\\\\evil.example/",
            "/\t/evil.example/",
            "javascript:alert(1)",
        ]:
            with self.subTest(next=next_url):
                response = self.client.get(self.login_url(next=next_url))
                self.assertRedirectsTo(response, "/")
                response = self.client.get(
                    self.login_url("/login/welcome/", next=next_url)
                )
                self.assertRedirectsTo(response, "/welcome/")

    def test_next_allowed_host(self):
        next_url = "https://other.example/landing/"
        response = self.client.get(
            self.login_url("/login/allowed-hosts/", next=next_url)
        )
        self.assertRedirectsTo(response, next_url)
        # Other hosts are still rejected.
        response = self.client.get(
            self.login_url("/login/allowed-hosts/", next="https://evil.example/")
        )
        self.assertRedirectsTo(response, "/")
        # success_url_allowed_hosts applies only to the view that sets it.
        response = self.client.get(self.login_url(next=next_url))
        self.assertRedirectsTo(response, "/")

    # Missing or invalid token

    def test_missing_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/login/")
        self.assertEqual(response.status_code, 403)
        self.assertNotLoggedIn()

    async def test_missing_token_async(self):
        async with self.assertNumQueriesAsync(0):
            response = await self.async_client.get("/login/")
        self.assertEqual(response.status_code, 403)

    def test_malformed_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/login/?sesame=not+a+token")
        self.assertEqual(response.status_code, 403)
        self.assertNotLoggedIn()

    def test_bad_signature(self):
        token = tamper(self.token)
        response = self.client.get("/login/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)
        self.assertNotLoggedIn()

    async def test_bad_signature_async(self):
        token = tamper(self.token)
        response = await self.async_client.get(
            "/login/?" + urlencode({"sesame": token})
        )
        self.assertEqual(response.status_code, 403)
        session = await self.async_client.asession()
        self.assertIsNone(await session.aget(SESSION_KEY))

    def test_bad_token_with_next(self):
        response = self.client.get(
            "/login/?" + urlencode({"sesame": tamper(self.token), "next": "/user/"})
        )
        self.assertEqual(response.status_code, 403)

    def test_bad_token_keeps_logged_in_user(self):
        jane = self.create_user("jane")
        self.client.force_login(jane)
        response = self.client.get(
            "/login/?" + urlencode({"sesame": tamper(self.token)})
        )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.client.session[SESSION_KEY], str(jane.pk))

    def test_password_change_invalidates_token(self):
        self.user.set_password("changed")
        self.user.save()
        self.assertEqual(self.client.get("/login/" + self.qs).status_code, 403)
        self.assertNotLoggedIn()

    @override_settings(SESAME_MAX_AGE=300)
    def test_expired_token(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(299)
            self.assertRedirectsTo(self.client.get("/login/" + qs), "/")
            self.client.logout()
            traveller.shift(1)
            self.assertEqual(self.client.get("/login/" + qs).status_code, 403)
            self.assertNotLoggedIn()

    def test_rejected_token_isnt_sent_to_login_failed_receivers(self):
        token = tamper(self.token)
        with capture_login_failed() as failed, self.captureLogs():
            response = self.client.get("/login/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["sesame_token"], "********************")
        self.assertNotIn(token, repr(failed))
        self.assertLogsContain("Invalid token for user pk = ")
        self.assertNotIn(token, "\n".join(self.logs.output))

    async def test_rejected_token_isnt_sent_to_login_failed_receivers_async(self):
        token = tamper(self.token)
        with capture_login_failed() as failed, self.captureLogs():
            response = await self.async_client.get(
                "/login/?" + urlencode({"sesame": token})
            )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(len(failed), 1)
        self.assertNotIn(token, repr(failed))
        self.assertNotIn(token, "\n".join(self.logs.output))

    # HTTP methods

    def test_post_not_allowed(self):
        response = self.client.post("/login/" + self.qs)
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response["Allow"], "GET, HEAD, OPTIONS")
        self.assertNotLoggedIn()

    async def test_post_not_allowed_async(self):
        response = await self.async_client.post("/login/" + self.qs)
        self.assertEqual(response.status_code, 405)
        session = await self.async_client.asession()
        self.assertIsNone(await session.aget(SESSION_KEY))

    # scope

    def test_scoped_view_accepts_scoped_token(self):
        qs = get_query_string(self.user, scope="login")
        self.assertRedirectsTo(self.client.get("/login/scoped/" + qs), "/")
        self.assertLoggedIn()

    def test_scoped_view_rejects_unscoped_token(self):
        self.assertEqual(self.client.get("/login/scoped/" + self.qs).status_code, 403)
        self.assertNotLoggedIn()

    def test_scoped_view_rejects_other_scope(self):
        qs = get_query_string(self.user, scope="other")
        self.assertEqual(self.client.get("/login/scoped/" + qs).status_code, 403)

    def test_unscoped_view_rejects_scoped_token(self):
        qs = get_query_string(self.user, scope="login")
        self.assertEqual(self.client.get("/login/" + qs).status_code, 403)
        self.assertNotLoggedIn()

    # max_age

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(59)
            self.assertRedirectsTo(self.client.get("/login/max-age/" + qs), "/")
            self.client.logout()
            traveller.shift(1)
            self.assertEqual(self.client.get("/login/max-age/" + qs).status_code, 403)
            self.assertNotLoggedIn()
            # Views without max_age follow SESAME_MAX_AGE.
            self.assertRedirectsTo(self.client.get("/login/" + qs), "/")

    # Configuration

    @override_settings(MIDDLEWARE=[])
    def test_requires_auth(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, "LoginView requires django.contrib.auth"
        ):
            self.client.get("/login/" + self.qs)

    def test_requires_sessions(self):
        request = RequestFactory().get("/login/" + self.qs)
        request.user = AnonymousUser()
        with self.assertRaisesMessage(
            ImproperlyConfigured, "LoginView requires django.contrib.sessions"
        ):
            LoginView.as_view()(request)


@override_settings(ROOT_URLCONF="tests.cbv_urls")
class TestTokenAuthenticationMixin(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    # A valid stateless token: 1. SELECT the user. The same as the decorator.
    NUM_QUERIES = 1

    def get(self, path, token=None, **kwargs):
        return self.client.get(
            path, {} if token is None else {"sesame": token}, **kwargs
        )

    def test_valid_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            response = self.get("/user/", get_token(self.user))
        self.assertContains(response, "john []")
        # The user isn't logged in.
        self.assertNotIn(SESSION_KEY, self.client.session)

    def test_missing_or_invalid_token(self):
        self.assertEqual(self.get("/user/").status_code, 403)
        with self.assertNumQueries(0):
            self.assertEqual(self.get("/user/", "junk").status_code, 403)

    async def test_async_view(self):
        response = await self.async_client.get(
            "/auser/", {"sesame": get_token(self.user)}
        )
        self.assertContains(response, "john")
        response = await self.async_client.get("/auser/", {"sesame": "junk"})
        self.assertEqual(response.status_code, 403)

    def test_not_required(self):
        self.assertContains(self.get("/optional/", "junk"), "anonymous")
        self.assertContains(self.get("/optional/", get_token(self.user)), "john")

    def test_permanent(self):
        self.assertContains(self.get("/permanent/", get_token(self.user)), "john")
        self.assertEqual(self.client.session[SESSION_KEY], str(self.user.pk))

    def test_no_override(self):
        other = self.create_user("jane", email="jane@example.com")
        self.client.force_login(other)
        self.assertContains(self.get("/no-override/", get_token(self.user)), "jane")
        self.assertContains(self.get("/user/", get_token(self.user)), "john")

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(START, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(120)
            self.assertEqual(self.get("/user/", token).status_code, 200)
            self.assertEqual(self.get("/max-age/", token).status_code, 403)

    def test_scope_format(self):
        token = get_token(self.user, "report:42")
        self.assertContains(self.get("/report/42/", token), "john [('pk', 42)]")
        self.assertEqual(self.get("/report/43/", token).status_code, 403)
        self.assertEqual(self.get("/user/", token).status_code, 403)

    def test_object_scope(self):
        other = self.create_user("jane", email="jane@example.com")
        token = get_token(self.user, get_object_scope(other))
        self.assertContains(self.get(f"/users/{other.pk}/", token), "jane seen by john")
        self.assertEqual(self.get(f"/users/{self.user.pk}/", token).status_code, 403)
        # Not a link to edit it.
        self.assertEqual(self.get(f"/users/{other.pk}/edit/", token).status_code, 403)

    def test_get_scope(self):
        edit = get_token(self.user, get_object_scope(self.user, action="edit"))
        self.assertEqual(
            self.get(f"/users/{self.user.pk}/edit/", edit).status_code, 200
        )
        self.assertEqual(self.get(f"/users/{self.user.pk}/", edit).status_code, 403)

    def test_disallowed_method_does_not_use_the_token(self):
        token, record = issue_token(self.user, max_uses=1)
        response = self.client.post("/user/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 405)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertContains(self.get("/user/", token), "john")

    def test_stored_token_is_audited(self):
        token, record = issue_token(self.user, "report:7", max_uses=1)
        self.assertEqual(
            self.get("/report/7/", token, REMOTE_ADDR="192.0.2.5").status_code, 200
        )
        event = TokenEvent.objects.get(token=record, kind="used")
        self.assertEqual(
            (event.ip, event.path, event.scope), ("192.0.2.5", "/report/7/", "report:7")
        )
        self.assertEqual(self.get("/report/7/", token).status_code, 403)
        rejected = TokenEvent.objects.get(token=record, kind="rejected")
        self.assertEqual(rejected.reason, "used_up")

    def test_confirm(self):
        client = Client(enforce_csrf_checks=True)
        token, record = issue_token(self.user, max_uses=1)
        page = client.get("/confirmed/", {"sesame": token})
        self.assertContains(page, 'method="post"')
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        response = client.post(
            "/confirmed/?" + urlencode({"sesame": token}),
            {"csrfmiddlewaretoken": page.context["csrf_token"]},
        )
        self.assertContains(response, "confirmed john")
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    @override_settings(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "sesame-db-mixin-tests",
            }
        },
        SESAME_RATE_LIMIT={"failures": 1, "period": 60},
    )
    def test_rate_limited(self):
        from django.core.cache import caches

        caches["default"].clear()
        self.assertEqual(self.get("/user/", "junk").status_code, 403)
        self.assertEqual(self.get("/user/", get_token(self.user)).status_code, 429)


@override_settings(ROOT_URLCONF="tests.cbv_urls")
class TestTokenAuthenticationMixinAtomicRequests(CreateUserMixin, TransactionTestCase):
    def test_failure_keeps_the_use(self):
        connection.settings_dict["ATOMIC_REQUESTS"] = True
        self.addCleanup(connection.settings_dict.__setitem__, "ATOMIC_REQUESTS", False)
        client = Client(raise_request_exception=False)
        token, record = issue_token(self.user, max_uses=1)
        self.assertEqual(client.get("/fails/", {"sesame": token}).status_code, 500)
        # The view's change was rolled back, the use of the link wasn't.
        self.assertFalse(
            get_user_model().objects.filter(username="created-by-view").exists()
        )
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)


class RefusalLogTests(TestCase):
    """A refused token is logged as Django logs any 403, without the token's rejection chained to it."""

    def test_403_log_has_no_chained_rejection(self):
        for path in ["/login/", "/decorated/", "/adecorated/", "/report/1/"]:
            with self.subTest(path=path):
                with self.assertLogs("django.request", "WARNING") as logs:
                    response = self.client.get(path, {"sesame": "not a token"})
                self.assertEqual(response.status_code, 403)
                [record] = logs.records
                assert record.exc_info is not None
                exc = record.exc_info[1]
                assert isinstance(exc, PermissionDenied)
                # What the traceback prints: no "During handling of the
                # above exception" with the InvalidToken.
                self.assertTrue(exc.__suppress_context__ or exc.__context__ is None)

from __future__ import annotations

import datetime
from urllib.parse import urlencode

import time_machine
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncRequestFactory, RequestFactory, TestCase, override_settings

from sesame_db.utils import get_query_string, get_token

from . import views
from .mixins import (
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    capture_login_failed,
    last_login_updates,
    tamper,
)

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


class TestAuthenticate(
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    TestCase,
):
    # A valid token costs one query:
    # 1. SELECT the user: the signature covers their password hash.
    NUM_QUERIES = 1

    # A well-formed token with a bad signature costs the same query: the
    # signature can only be checked once the user is loaded.
    NUM_QUERIES_BAD_SIGNATURE = 1

    # Following a token with permanent=True, with sessions in signed cookies:
    # 1. SELECT the user: the signature covers their password hash.
    # 2. UPDATE last_login: login() does it (and the decorator doesn't).
    NUM_QUERIES_PERMANENT = 2

    # Skipping the token with override=False when a user is logged in; only
    # Django's AuthenticationMiddleware queries the database:
    # 1. SELECT the session.
    # 2. SELECT the user of the session.
    NUM_QUERIES_LOGGED_IN = 2

    def setUp(self):
        super().setUp()
        self.qs = get_query_string(self.user)

    def assertUser(self, response, content):
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content.decode(), content)

    async def acreate_user(self, username):
        return await sync_to_async(self.create_user)(username)

    async def alogged_in_user_pk(self):
        session = await self.async_client.asession()
        return await session.aget(SESSION_KEY)

    # Sync and async views

    def test_decorator_keeps_view_kind(self):
        self.assertFalse(iscoroutinefunction(views.decorated))
        self.assertTrue(iscoroutinefunction(views.adecorated))
        self.assertEqual(views.decorated.__name__, "decorated")
        self.assertEqual(views.adecorated.__name__, "adecorated")

    # Valid token

    def test_valid_token(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            response = self.client.get("/decorated/" + self.qs)
        self.assertUser(response, "john")

    async def test_valid_token_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            response = await self.async_client.get("/adecorated/" + self.qs)
        self.assertUser(response, "john")

    def test_valid_token_doesnt_log_in(self):
        self.client.get("/decorated/" + self.qs)
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.assertUser(self.client.get("/user/"), "anonymous")
        self.user.refresh_from_db()
        self.assertIsNone(self.user.last_login)

    async def test_valid_token_doesnt_log_in_async(self):
        await self.async_client.get("/adecorated/" + self.qs)
        self.assertIsNone(await self.alogged_in_user_pk())
        self.assertUser(await self.async_client.get("/auser/"), "anonymous")
        await self.user.arefresh_from_db()
        self.assertIsNone(self.user.last_login)

    def test_token_overrides_logged_in_user(self):
        self.client.force_login(self.create_user("jane"))
        self.assertUser(self.client.get("/decorated/" + self.qs), "john")

    async def test_token_overrides_logged_in_user_async(self):
        await self.async_client.aforce_login(await self.acreate_user("jane"))
        self.assertUser(await self.async_client.get("/adecorated/" + self.qs), "john")

    def test_valid_token_seen_by_auser_async(self):
        # Regression: the async decorator once set request.user but not request.auser,
        # so an async view (or Django's @login_required under @authenticate)
        # that calls request.auser(), Django's async API, sees the anonymous
        # session user instead of the token's user.
        response = async_to_sync(self.async_client.get)("/aauser/" + self.qs)
        self.assertUser(response, "john")

    # Missing or invalid token

    def test_missing_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/decorated/")
        self.assertEqual(response.status_code, 403)

    async def test_missing_token_async(self):
        async with self.assertNumQueriesAsync(0):
            response = await self.async_client.get("/adecorated/")
        self.assertEqual(response.status_code, 403)

    def test_malformed_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/decorated/?sesame=not+a+token")
        self.assertEqual(response.status_code, 403)

    async def test_malformed_token_async(self):
        async with self.assertNumQueriesAsync(0):
            response = await self.async_client.get("/adecorated/?sesame=not+a+token")
        self.assertEqual(response.status_code, 403)

    def test_bad_signature(self):
        token = tamper(get_token(self.user))
        with self.assertNumQueries(self.NUM_QUERIES_BAD_SIGNATURE):
            response = self.client.get("/decorated/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)

    async def test_bad_signature_async(self):
        token = tamper(get_token(self.user))
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_BAD_SIGNATURE):
            response = await self.async_client.get(
                "/adecorated/?" + urlencode({"sesame": token})
            )
        self.assertEqual(response.status_code, 403)

    def test_inactive_user(self):
        self.user.is_active = False
        self.user.save()
        self.assertEqual(self.client.get("/decorated/" + self.qs).status_code, 403)

    async def test_inactive_user_async(self):
        self.user.is_active = False
        await self.user.asave()
        response = await self.async_client.get("/adecorated/" + self.qs)
        self.assertEqual(response.status_code, 403)

    def test_rejected_token_isnt_sent_to_login_failed_receivers(self):
        token = tamper(get_token(self.user))
        with capture_login_failed() as failed, self.captureLogs():
            response = self.client.get("/decorated/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["sesame_token"], "********************")
        self.assertNotIn(token, repr(failed))
        self.assertLogsContain("Invalid token for user pk = ")
        self.assertNotIn(token, "\n".join(self.logs.output))

    async def test_rejected_token_isnt_sent_to_login_failed_receivers_async(self):
        token = tamper(get_token(self.user))
        with capture_login_failed() as failed, self.captureLogs():
            response = await self.async_client.get(
                "/adecorated/?" + urlencode({"sesame": token})
            )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["sesame_token"], "********************")
        self.assertNotIn(token, repr(failed))
        self.assertLogsContain("Invalid token for user pk = ")
        self.assertNotIn(token, "\n".join(self.logs.output))

    # scope

    def test_scope_formatted_with_url_kwargs(self):
        qs = get_query_string(self.user, scope="report:42")
        with self.assertNumQueries(self.NUM_QUERIES):
            response = self.client.get("/report/42/" + qs)
        self.assertUser(response, "report 42 for john")
        self.assertEqual(self.client.get("/report/43/" + qs).status_code, 403)

    async def test_scope_formatted_with_url_kwargs_async(self):
        qs = get_query_string(self.user, scope="report:42")
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            response = await self.async_client.get("/areport/42/" + qs)
        self.assertUser(response, "report 42 for john")
        response = await self.async_client.get("/areport/43/" + qs)
        self.assertEqual(response.status_code, 403)

    def test_scoped_view_rejects_unscoped_token(self):
        self.assertEqual(self.client.get("/report/42/" + self.qs).status_code, 403)

    async def test_scoped_view_rejects_unscoped_token_async(self):
        response = await self.async_client.get("/areport/42/" + self.qs)
        self.assertEqual(response.status_code, 403)

    def test_unscoped_view_rejects_scoped_token(self):
        qs = get_query_string(self.user, scope="report:42")
        self.assertEqual(self.client.get("/decorated/" + qs).status_code, 403)

    async def test_unscoped_view_rejects_scoped_token_async(self):
        qs = get_query_string(self.user, scope="report:42")
        response = await self.async_client.get("/adecorated/" + qs)
        self.assertEqual(response.status_code, 403)

    # required=False

    def test_not_required_valid_token(self):
        self.assertUser(self.client.get("/optional/" + self.qs), "john")

    async def test_not_required_valid_token_async(self):
        self.assertUser(await self.async_client.get("/aoptional/" + self.qs), "john")

    def test_not_required_missing_token(self):
        with self.assertNumQueries(0):
            response = self.client.get("/optional/")
        self.assertUser(response, "anonymous")

    async def test_not_required_missing_token_async(self):
        async with self.assertNumQueriesAsync(0):
            response = await self.async_client.get("/aoptional/")
        self.assertUser(response, "anonymous")

    def test_not_required_invalid_token(self):
        token = tamper(get_token(self.user))
        response = self.client.get("/optional/?" + urlencode({"sesame": token}))
        self.assertUser(response, "anonymous")

    async def test_not_required_invalid_token_async(self):
        token = tamper(get_token(self.user))
        response = await self.async_client.get(
            "/aoptional/?" + urlencode({"sesame": token})
        )
        self.assertUser(response, "anonymous")

    # permanent=True

    def test_permanent_logs_in(self):
        self.assertUser(self.client.get("/permanent/" + self.qs), "john")
        self.assertEqual(self.client.session[SESSION_KEY], str(self.user.pk))
        self.assertUser(self.client.get("/user/"), "john")

    async def test_permanent_logs_in_async(self):
        self.assertUser(await self.async_client.get("/apermanent/" + self.qs), "john")
        self.assertEqual(await self.alogged_in_user_pk(), str(self.user.pk))
        self.assertUser(await self.async_client.get("/auser/"), "john")

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
    def test_permanent_updates_last_login_once(self):
        with self.assertNumQueries(self.NUM_QUERIES_PERMANENT) as queries:
            response = self.client.get("/permanent/" + self.qs)
        self.assertUser(response, "john")
        self.assertEqual(len(last_login_updates(queries)), 1)
        self.user.refresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
    async def test_permanent_updates_last_login_once_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_PERMANENT) as queries:
            response = await self.async_client.get("/apermanent/" + self.qs)
        self.assertUser(response, "john")
        self.assertEqual(len(last_login_updates(queries)), 1)
        await self.user.arefresh_from_db()
        self.assertIsNotNone(self.user.last_login)

    def test_permanent_invalid_token(self):
        token = tamper(get_token(self.user))
        response = self.client.get("/permanent/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)
        self.assertNotIn(SESSION_KEY, self.client.session)

    async def test_permanent_invalid_token_async(self):
        token = tamper(get_token(self.user))
        response = await self.async_client.get(
            "/apermanent/?" + urlencode({"sesame": token})
        )
        self.assertEqual(response.status_code, 403)
        self.assertIsNone(await self.alogged_in_user_pk())

    PERMANENT_WITHOUT_SESSIONS = (
        "authenticate(permanent=True) requires django.contrib.sessions"
    )

    @override_settings(MIDDLEWARE=[])
    def test_permanent_requires_sessions(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, self.PERMANENT_WITHOUT_SESSIONS
        ):
            self.client.get("/permanent/" + self.qs)

    @override_settings(MIDDLEWARE=[])
    async def test_permanent_requires_sessions_async(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, self.PERMANENT_WITHOUT_SESSIONS
        ):
            await self.async_client.get("/apermanent/" + self.qs)

    def test_permanent_requires_sessions_request_factory(self):
        request = RequestFactory().get("/permanent/" + self.qs)
        with self.assertRaisesMessage(
            ImproperlyConfigured, self.PERMANENT_WITHOUT_SESSIONS
        ):
            views.permanent(request)

    async def test_permanent_requires_sessions_request_factory_async(self):
        request = AsyncRequestFactory().get("/apermanent/" + self.qs)
        with self.assertRaisesMessage(
            ImproperlyConfigured, self.PERMANENT_WITHOUT_SESSIONS
        ):
            await views.apermanent(request)

    def test_without_sessions(self):
        request = RequestFactory().get("/decorated/" + self.qs)
        response = views.decorated(request)
        self.assertUser(response, "john")
        self.assertEqual(request.user, self.user)

    async def test_without_sessions_async(self):
        request = AsyncRequestFactory().get("/adecorated/" + self.qs)
        response = await views.adecorated(request)
        self.assertUser(response, "john")
        self.assertEqual(request.user, self.user)

    # A logged-in user without a token (docs/quickstart.rst).

    def test_logged_in_user_without_token_is_forbidden(self):
        self.client.force_login(self.user)
        response = self.client.get("/decorated/")
        self.assertEqual(response.status_code, 403)

    def test_no_override_lets_logged_in_user_in_without_token(self):
        self.client.force_login(self.user)
        response = self.client.get("/no-override/")
        self.assertUser(response, "john")

    # override=False

    def test_no_override_keeps_logged_in_user(self):
        self.client.force_login(self.user)
        qs = get_query_string(self.create_user("jane"))
        with self.assertNumQueries(self.NUM_QUERIES_LOGGED_IN):
            response = self.client.get("/no-override/" + qs)
        self.assertUser(response, "john")

    async def test_no_override_keeps_logged_in_user_async(self):
        await self.async_client.aforce_login(self.user)
        qs = get_query_string(await self.acreate_user("jane"))
        async with self.assertNumQueriesAsync(self.NUM_QUERIES_LOGGED_IN):
            response = await self.async_client.get("/ano-override/" + qs)
        self.assertUser(response, "john")

    def test_no_override_keeps_logged_in_user_as_request_user_async(self):
        # Regression: when a user is logged in, the async decorator called
        # request.auser() but left request.user to Django's lazy object.
        # Evaluating it in the async view, as the decorator documents, queries
        # the database synchronously and raises SynchronousOnlyOperation.
        self.client.force_login(self.user)
        self.async_client.cookies = self.client.cookies
        qs = get_query_string(self.create_user("jane"))
        response = async_to_sync(self.async_client.get)("/ano-override-user/" + qs)
        self.assertUser(response, "john")

    def test_no_override_anonymous_user(self):
        with self.assertNumQueries(self.NUM_QUERIES):
            response = self.client.get("/no-override/" + self.qs)
        self.assertUser(response, "john")

    async def test_no_override_anonymous_user_async(self):
        async with self.assertNumQueriesAsync(self.NUM_QUERIES):
            response = await self.async_client.get("/ano-override-user/" + self.qs)
        self.assertUser(response, "john")

    def test_no_override_anonymous_user_invalid_token(self):
        token = tamper(get_token(self.user))
        response = self.client.get("/no-override/?" + urlencode({"sesame": token}))
        self.assertEqual(response.status_code, 403)

    async def test_no_override_anonymous_user_invalid_token_async(self):
        token = tamper(get_token(self.user))
        response = await self.async_client.get(
            "/ano-override/?" + urlencode({"sesame": token})
        )
        self.assertEqual(response.status_code, 403)

    # max_age

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(59)
            self.assertUser(self.client.get("/max-age/" + qs), "john")
            traveller.shift(1)
            self.assertEqual(self.client.get("/max-age/" + qs).status_code, 403)
            # Views without max_age follow SESAME_MAX_AGE.
            self.assertUser(self.client.get("/decorated/" + qs), "john")

    @override_settings(SESAME_MAX_AGE=300)
    async def test_max_age_async(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(59)
            self.assertUser(await self.async_client.get("/amax-age/" + qs), "john")
            traveller.shift(1)
            response = await self.async_client.get("/amax-age/" + qs)
            self.assertEqual(response.status_code, 403)
            # Views without max_age follow SESAME_MAX_AGE.
            self.assertUser(await self.async_client.get("/adecorated/" + qs), "john")

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_setting_still_applies(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(300)
            self.assertEqual(self.client.get("/decorated/" + qs).status_code, 403)

    @override_settings(SESAME_MAX_AGE=300)
    async def test_max_age_setting_still_applies_async(self):
        with time_machine.travel(START, tick=False) as traveller:
            qs = get_query_string(self.user)
            traveller.shift(300)
            response = await self.async_client.get("/adecorated/" + qs)
            self.assertEqual(response.status_code, 403)

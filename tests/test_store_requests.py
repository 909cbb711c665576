from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, TestCase, TransactionTestCase, override_settings

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import aget_user, get_token, get_user, issue_token

from .mixins import CreateUserMixin


@override_settings(ROOT_URLCONF="tests.store_urls")
class AtomicRequestsTests(CreateUserMixin, TransactionTestCase):
    """
    With ATOMIC_REQUESTS, a view that fails after authentication rolls back its
    own changes, but the use of the link and its audit event stay committed.
    """

    def setUp(self):
        super().setUp()
        connection.settings_dict["ATOMIC_REQUESTS"] = True
        self.addCleanup(connection.settings_dict.__setitem__, "ATOMIC_REQUESTS", False)
        self.client = Client(raise_request_exception=False)

    def test_decorated_view_failure_keeps_the_use(self):
        token, record = issue_token(self.user, max_uses=1)
        response = self.client.get("/fails/", {"sesame": token})
        self.assertEqual(response.status_code, 500)
        # The view's own change was rolled back...
        self.assertFalse(
            get_user_model().objects.filter(username="created-by-view").exists()
        )
        # ...but not the use of the one-time link, nor its audit event.
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        self.assertTrue(TokenEvent.objects.filter(token=record, kind="used").exists())
        response = self.client.get("/fails/", {"sesame": token})
        self.assertEqual(response.status_code, 403)
        self.assertTrue(
            TokenEvent.objects.filter(
                token=record, kind="rejected", reason="used_up"
            ).exists()
        )

    def test_login_view_failure_keeps_the_use(self):
        token, record = issue_token(self.user, max_uses=1)
        response = self.client.get("/login/fails/", {"sesame": token})
        self.assertEqual(response.status_code, 500)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(self.client.get("/login/", {"sesame": token}).status_code, 403)


@override_settings(DATABASE_ROUTERS=["tests.routers.ReadsElsewhereRouter"])
class RoutingTests(CreateUserMixin, TestCase):
    """Verification reads and writes the token table through db_for_write."""

    databases = {"default", "other"}

    def test_reads_go_to_the_write_database(self):
        token, record = issue_token(self.user)
        # A read through the router would miss the row: "other" doesn't have it.
        self.assertFalse(IssuedToken.objects.filter(pk=record.pk).exists())
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(
            IssuedToken.objects.using("default").get(pk=record.pk).use_count, 1
        )

    def test_revocation_is_seen_at_once(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.using("default").filter(pk=record.pk).revoke()
        self.assertIsNone(get_user(token))
        self.assertEqual(
            TokenEvent.objects.using("default")
            .filter(token_id=record.pk, reason="revoked")
            .count(),
            1,
        )

    def _stale_copy_on_the_read_database(self):
        # The read database still shows the user active, as a lagging
        # replica would after a deactivation on the primary.
        User = get_user_model()
        User.objects.using("other").create(
            pk=self.user.pk, username=self.user.username, last_login=None
        )
        User.objects.using("default").filter(pk=self.user.pk).update(is_active=False)

    def test_stateless_token_user_is_read_from_the_write_database(self):
        token = get_token(self.user)
        self.assertEqual(get_user(token), self.user)
        self._stale_copy_on_the_read_database()
        # Read through db_for_read, the stale copy would let the user in.
        self.assertIsNone(get_user(token))

    async def test_stateless_token_user_is_read_from_the_write_database_async(self):
        token = await sync_to_async(get_token)(self.user)
        self.assertEqual(await aget_user(token), self.user)
        await sync_to_async(self._stale_copy_on_the_read_database)()
        self.assertIsNone(await aget_user(token))


@override_settings(ROOT_URLCONF="tests.store_urls")
class ScopeTests(CreateUserMixin, TestCase):
    def test_link_for_one_report_opens_only_that_report(self):
        token, record = issue_token(self.user, scope="report:42")
        self.assertEqual(
            self.client.get("/report/42/", {"sesame": token}).status_code, 200
        )
        self.assertEqual(
            self.client.get("/report/43/", {"sesame": token}).status_code, 403
        )
        self.assertEqual(self.client.get("/login/", {"sesame": token}).status_code, 403)
        rejected = TokenEvent.objects.filter(token=record, kind="rejected").values_list(
            "reason", "scope"
        )
        self.assertEqual(
            sorted(rejected), [("wrong_scope", ""), ("wrong_scope", "report:43")]
        )


@override_settings(ROOT_URLCONF="tests.store_urls")
class ConfirmTests(CreateUserMixin, TestCase):
    """Scanner-safe links: GET and HEAD show a page, only a POST with CSRF uses the link."""

    def test_get_and_head_do_not_use_the_link(self):
        token, record = issue_token(self.user, max_uses=1)
        for method in (self.client.get, self.client.head):
            response = method("/confirmed/", {"sesame": token})
            self.assertEqual(response.status_code, 200)
            self.assertIn("no-store", response["Cache-Control"])
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertFalse(TokenEvent.objects.filter(kind="used").exists())

    def test_post_with_csrf_uses_the_link(self):
        client = Client(enforce_csrf_checks=True)
        token, record = issue_token(self.user, max_uses=1)
        page = client.get("/confirmed/", {"sesame": token})
        self.assertContains(page, 'method="post"')
        csrf = page.context["csrf_token"]
        response = client.post(
            f"/confirmed/?sesame={token}", {"csrfmiddlewaretoken": str(csrf)}
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content.decode(), "hello john (POST)")
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    def test_post_without_csrf_is_refused_and_does_not_use_the_link(self):
        client = Client(enforce_csrf_checks=True)
        token, record = issue_token(self.user, max_uses=1)
        response = client.post(f"/confirmed/?sesame={token}")
        self.assertEqual(response.status_code, 403)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)

    def test_login_view_confirmation(self):
        client = Client(enforce_csrf_checks=True)
        token, record = issue_token(self.user, max_uses=1)
        page = client.get("/login/confirm/", {"sesame": token})
        self.assertEqual(page.status_code, 200)
        response = client.post(
            f"/login/confirm/?sesame={token}",
            {"csrfmiddlewaretoken": str(page.context["csrf_token"])},
        )
        self.assertRedirects(response, "/done/", fetch_redirect_response=False)
        self.assertEqual(client.session["_auth_user_id"], str(self.user.pk))

    @override_settings(SESAME_CONFIRM=True)
    def test_setting_enables_confirmation(self):
        token, record = issue_token(self.user)
        self.assertEqual(self.client.get("/login/", {"sesame": token}).status_code, 200)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)

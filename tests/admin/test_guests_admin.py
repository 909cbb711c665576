"""
Guest links in the admin: the changelist, its filter and search, the events,
and the "Issue a link" page.

"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from django.db import connection
from django.test.utils import CaptureQueriesContext

from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import check_link, issue_guest_token
from tests.admin.base import CHANGELIST, EVENTS, ISSUE, REVOKE, AdminTestCase, url

GUEST = "guest@example.com"


class GuestChangelistTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        _, self.user_link = self.issue(scope="report:1")
        self.token, self.guest_link = issue_guest_token(
            GUEST, "report:1", issued_by=self.superuser
        )

    def pks(self, response):
        return {obj.pk for obj in response.context["cl"].result_list}

    def test_column_shows_guest_and_sharer(self):
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, f"Guest: {GUEST}")
        self.assertContains(response, "shared by root")
        self.assertContains(response, "john")

    def test_same_queries_for_1_and_25_guest_links(self):
        with CaptureQueriesContext(connection) as few:
            self.client.get(url(CHANGELIST))
        for index in range(25):
            issue_guest_token(f"g{index}@example.com", "report:1", issued_by=self.user)
        with CaptureQueriesContext(connection) as many:
            response = self.client.get(url(CHANGELIST))
        self.assertEqual(len(response.context["cl"].result_list), 27)
        self.assertEqual(len(many), len(few))

    def test_filter(self):
        response = self.client.get(url(CHANGELIST) + "?for=guest")
        self.assertEqual(self.pks(response), {self.guest_link.pk})
        response = self.client.get(url(CHANGELIST) + "?for=user")
        self.assertEqual(self.pks(response), {self.user_link.pk})

    def test_search_by_recipient(self):
        response = self.client.get(url(CHANGELIST) + "?q=guest@example")
        self.assertEqual(self.pks(response), {self.guest_link.pk})

    def test_revoke_selected(self):
        response = self.action([self.guest_link.pk], post="yes")
        self.assertEqual(response.status_code, 302)
        self.guest_link.refresh_from_db()
        self.assertIsNotNone(self.guest_link.revoked_at)

    def test_revoked_guest_links_are_refused_and_audited(self):
        # The changelist's action and the link's own revoke page.
        _, other = issue_guest_token(GUEST, "report:1")
        self.action([self.guest_link.pk], post="yes", reason="project over")
        self.client.post(url(REVOKE, other.pk), {"reason": "project over"})
        with self.assertRaises(InvalidToken) as cm:
            check_link(self.token, "report:1", guests=True)
        self.assertEqual(cm.exception.reason, Reason.REVOKED)
        for link in [self.guest_link, other]:
            link.refresh_from_db()
            self.assertIsNotNone(link.revoked_at)
            self.assertEqual(link.revoked_by, self.superuser)
            event = TokenEvent.objects.get(token=link, kind=TokenEvent.Kind.REVOKED)
            self.assertEqual(
                (event.recipient, event.actor_id, event.detail),
                (GUEST, self.superuser.pk, "project over"),
            )
        self.assertTrue(
            TokenEvent.objects.filter(
                token=self.guest_link, reason=Reason.REVOKED, recipient=GUEST
            ).exists()
        )

    def test_change_page(self):
        response = self.client.get(
            url("admin:sesame_db_issuedtoken_change", self.guest_link.pk)
        )
        self.assertContains(response, GUEST)
        self.assertNotContains(response, self.token)

    def test_events_name_the_guest(self):
        check_link(self.token, "report:1", guests=True)
        response = self.client.get(url(EVENTS) + "?q=guest@example.com")
        self.assertContains(response, f"Guest: {GUEST}")
        self.assertEqual(len(response.context["cl"].result_list), 2)


class GuestIssueViewTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)

    def post(self, **data):
        data.setdefault("user", self.user.pk)
        data.setdefault("target", "/")
        return self.client.post(url(ISSUE), data)

    def issued_link(self, response):
        match = re.search(
            r'<input type="text" readonly id="issued-link"[^>]* value="([^"]*)"',
            response.content.decode(),
        )
        assert match is not None, "no issued link on the page"
        return match.group(1).replace("&amp;", "&")

    def token_of(self, link):
        return parse_qs(urlsplit(link).query)["sesame"][0]

    def test_issue_guest_link(self):
        response = self.post(
            user="",
            recipient=GUEST,
            scope="report:1",
            bind_to_browser="on",
            target="/shared/1/",
        )
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, f"shared with <strong>{GUEST}</strong>")
        token = self.token_of(self.issued_link(response))
        record = IssuedToken.objects.get()
        self.assertIsNone(record.user)
        self.assertEqual(record.recipient, GUEST)
        self.assertTrue(record.bind_to_browser)
        self.assertEqual(record.issued_by, self.superuser)
        self.assertEqual(check_link(token, "report:1", guests=True)[1], record)

    def test_guest_link_errors(self):
        cases = [
            ({"user": ""}, "Choose a user, or enter a guest"),
            ({"recipient": GUEST, "scope": "report:1"}, "not both"),
            ({"user": "", "recipient": GUEST}, "A guest link needs a scope"),
            ({"bind_to_browser": "on"}, "Only guest links can be bound"),
        ]
        for data, error in cases:
            with self.subTest(data=data):
                response = self.post(**data)
                self.assertContains(response, error)
        self.assertFalse(IssuedToken.objects.exists())

    def test_form_has_guest_fields(self):
        response = self.client.get(url(ISSUE))
        self.assertContains(response, 'name="recipient"')
        self.assertContains(response, 'name="bind_to_browser"')

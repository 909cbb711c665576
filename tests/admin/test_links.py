"""Tests of :mod:`sesame_db.admin.links`: permissions, revocation, the change page."""

from __future__ import annotations

import datetime
import re

import time_machine
from django.contrib.auth.models import User
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import strip_tags

from sesame_db.admin import IssuedTokenAdmin
from sesame_db.admin.links import can_revoke
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user
from tests import admin_site
from tests.admin.base import (
    CHANGE,
    CHANGELIST,
    EVENTS,
    HOUR,
    ISSUE,
    REVOKE,
    AdminTestCase,
    url,
)


class PermissionTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.token, self.record = self.issue(label="Q3 report")

    def assertCanRevoke(self, user):
        self.login(user)
        response = self.client.get(url(CHANGELIST))
        self.assertEqual(response.status_code, 200)
        self.assertIn("revoke_selected", self.action_names(response))
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertContains(response, f'href="{url(REVOKE, self.record.pk)}"')
        self.assertEqual(self.client.get(url(REVOKE, self.record.pk)).status_code, 200)
        response = self.client.post(url(REVOKE, self.record.pk), {"reason": "r"})
        self.assertRedirects(response, url(CHANGE, self.record.pk))
        self.record.refresh_from_db()
        self.assertEqual(self.record.revoked_by, user)

    def assertCannotRevoke(self, user):
        self.login(user)
        response = self.client.get(url(CHANGELIST))
        self.assertEqual(response.status_code, 200)
        self.assertNotIn("revoke_selected", self.action_names(response))
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, url(REVOKE, self.record.pk))
        self.assertNotContains(response, 'name="expires_at_0"')
        self.assertEqual(self.client.get(url(REVOKE, self.record.pk)).status_code, 403)
        response = self.client.post(url(REVOKE, self.record.pk), {"reason": "r"})
        self.assertEqual(response.status_code, 403)
        # The action can't be run by posting its name either.
        self.action([self.record.pk], post="yes")
        self.record.refresh_from_db()
        self.assertIsNone(self.record.revoked_at)

    def test_superuser_can_do_everything(self):
        self.assertCanRevoke(self.superuser)
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "Issue a link")
        self.assertEqual(self.client.get(url(ISSUE)).status_code, 200)

    def test_viewer_sees_everything_and_changes_nothing(self):
        self.assertCannotRevoke(self.viewer)
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "Q3 report")
        self.assertNotContains(response, "Issue a link")
        self.assertEqual(self.action_names(response), [])
        self.assertEqual(self.client.get(url(ISSUE)).status_code, 403)
        response = self.client.post(url(ISSUE), {"user": self.user.pk, "target": "/"})
        self.assertEqual(response.status_code, 403)
        # Posting the change form is refused.
        later = timezone.now() + HOUR
        response = self.client.post(
            url(CHANGE, self.record.pk),
            {"expires_at_0": later.date(), "expires_at_1": "00:00:00"},
        )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.client.get(url(EVENTS)).status_code, 200)

    def test_revoke_permission(self):
        self.assertCanRevoke(self.revoker)
        response = self.client.get(url(CHANGELIST))
        self.assertNotContains(response, "Issue a link")
        self.assertNotIn("delete_selected", self.action_names(response))
        self.assertEqual(self.client.get(url(ISSUE)).status_code, 403)

    def test_change_permission(self):
        self.assertCanRevoke(self.changer)
        self.assertEqual(self.client.get(url(ISSUE)).status_code, 403)

    def test_add_permission_issues_links(self):
        self.assertCannotRevoke(self.adder)
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "Issue a link")
        self.assertContains(response, f'href="{url(ISSUE)}"')
        self.assertEqual(self.client.get(url(ISSUE)).status_code, 200)
        response = self.client.post(url(ISSUE), {"user": self.user.pk, "target": "/"})
        self.assertContains(response, 'id="issued-link"')
        self.assertEqual(IssuedToken.objects.filter(issued_by=self.adder).count(), 1)

    def test_issued_page_shows_expiry_and_uses(self):
        def issued_text(data):
            response = self.client.post(
                url(ISSUE), {"user": self.user.pk, "target": "/", **data}
            )
            # The page's words, as a reader sees them.
            return re.sub(r"\s+", " ", strip_tags(response.content.decode()))

        self.login(self.adder)
        # An afternoon: in English, the date ends with "p.m.".
        afternoon = timezone.make_aware(datetime.datetime(2026, 12, 5, 15, 0))
        with time_machine.travel(afternoon, tick=False):
            text = issued_text({"expires_in": 30, "max_uses": 3})
        record = IssuedToken.objects.get(issued_by=self.adder)
        shown = date_format(timezone.localtime(record.expires_at), "DATETIME_FORMAT")
        self.assertTrue(shown.endswith("p.m."), shown)
        self.assertIn(f"Expires: {shown} Uses: Up to 3 times", text)
        self.assertNotIn("..", text)
        self.assertIn(f"See Link #{record.pk} for john", text)
        self.assertIn("Expires: Never Uses: Unlimited", issued_text({}))
        self.assertIn("Uses: Once", issued_text({"max_uses": 1}))

    def test_no_permission(self):
        self.login(self.nobody)
        for name, args in [
            (CHANGELIST, ()),
            (CHANGE, (self.record.pk,)),
            (REVOKE, (self.record.pk,)),
            (ISSUE, ()),
            (EVENTS, ()),
        ]:
            with self.subTest(name=name):
                self.assertEqual(self.client.get(url(name, *args)).status_code, 403)
        self.assertEqual(self.client.post(url(REVOKE, self.record.pk)).status_code, 403)
        self.record.refresh_from_db()
        self.assertIsNone(self.record.revoked_at)

    def test_not_staff(self):
        self.login(self.user)
        response = self.client.get(url(REVOKE, self.record.pk))
        self.assertRedirects(
            response,
            reverse("admin:login") + "?next=" + url(REVOKE, self.record.pk),
            fetch_redirect_response=False,
        )

    def test_no_bulk_delete_without_delete_permission(self):
        for user in [self.viewer, self.revoker, self.changer]:
            with self.subTest(user=user.username):
                self.login(user)
                response = self.client.get(url(CHANGELIST))
                self.assertNotIn("delete_selected", self.action_names(response))
                self.action([self.record.pk], "delete_selected", post="yes")
                self.assertTrue(IssuedToken.objects.filter(pk=self.record.pk).exists())

    def test_bulk_delete_with_delete_permission(self):
        self.login(self.deleter)
        response = self.client.get(url(CHANGELIST))
        self.assertIn("delete_selected", self.action_names(response))
        self.action([self.record.pk], "delete_selected", post="yes")
        self.assertFalse(IssuedToken.objects.filter(pk=self.record.pk).exists())
        # A deleted link stops working; its events stay.
        self.assertIsNone(get_user(self.token))
        self.assertTrue(TokenEvent.objects.filter(token_id=self.record.pk).exists())

    def test_add_url_leads_to_the_issue_page(self):
        self.login(self.adder)
        response = self.client.get(reverse("admin:sesame_db_issuedtoken_add"))
        self.assertRedirects(response, url(ISSUE))
        self.login(self.viewer)
        response = self.client.get(reverse("admin:sesame_db_issuedtoken_add"))
        self.assertEqual(response.status_code, 403)

    def test_events_are_read_only(self):
        self.login(self.superuser)
        event = TokenEvent.objects.get(token=self.record)
        response = self.client.get(url(EVENTS))
        self.assertEqual(self.action_names(response), [])
        self.assertNotContains(response, reverse("admin:sesame_db_tokenevent_add"))
        response = self.client.get(
            reverse("admin:sesame_db_tokenevent_change", args=[event.pk])
        )
        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, 'name="_save"')
        response = self.client.post(
            reverse("admin:sesame_db_tokenevent_change", args=[event.pk]),
            {"kind": "used"},
        )
        self.assertEqual(response.status_code, 403)
        response = self.client.post(
            reverse("admin:sesame_db_tokenevent_delete", args=[event.pk]),
            {"post": "yes"},
        )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(
            self.client.get(reverse("admin:sesame_db_tokenevent_add")).status_code, 403
        )
        event.refresh_from_db()
        self.assertEqual(event.kind, TokenEvent.Kind.ISSUED)

    @override_settings(SESAME_ADMIN_EVENTS_DELETABLE=True)
    def test_superusers_delete_events_when_allowed(self):
        event = TokenEvent.objects.get(token=self.record)
        delete_url = reverse("admin:sesame_db_tokenevent_delete", args=[event.pk])
        # Not even staff with every permission on events.
        staff = self.create_staff(
            "events", "view_tokenevent", "change_tokenevent", "delete_tokenevent"
        )
        self.login(staff)
        self.assertEqual(self.client.post(delete_url, {"post": "yes"}).status_code, 403)
        self.login(self.superuser)
        response = self.client.get(url(EVENTS))
        self.assertEqual(self.action_names(response), ["delete_selected"])
        self.client.post(delete_url, {"post": "yes"})
        self.assertFalse(TokenEvent.objects.filter(pk=event.pk).exists())


class RevokeActionTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.tokens = {}
        self.records = {}
        for name in ["a", "b", "c"]:
            self.tokens[name], self.records[name] = self.issue(
                scope=f"report:{name}", label=f"link {name}"
            )

    def test_confirmation_page(self):
        pks = [self.records["a"].pk, self.records["b"].pk]
        response = self.action(pks)
        self.assertTemplateUsed(response, "sesame_db/admin/revoke_confirmation.html")
        self.assertContains(response, '<textarea name="reason"')
        self.assertContains(response, '<input type="submit" value="Revoke"')
        self.assertContains(response, "Revoke 2 selected links, of which 2 aren")
        self.assertContains(response, "link a")
        self.assertNotContains(response, "link c")
        for pk in pks:
            self.assertContains(
                response,
                f'<input type="hidden" name="_selected_action" value="{pk}">',
                html=True,
            )
        self.assertContains(
            response,
            '<input type="hidden" name="action" value="revoke_selected">',
            html=True,
        )
        # Nothing is revoked yet.
        self.assertFalse(IssuedToken.objects.revoked().exists())

    def test_revoke(self):
        pks = [self.records["a"].pk, self.records["b"].pk]
        response = self.action(
            pks,
            post="yes",
            reason="forwarded to the wrong person",
            REMOTE_ADDR="192.0.2.7",
        )
        self.assertRedirects(response, url(CHANGELIST), fetch_redirect_response=False)
        self.assertEqual(self.messages(response), ["Revoked 2 links."])
        for name in ["a", "b"]:
            record = self.records[name]
            record.refresh_from_db()
            self.assertIsNotNone(record.revoked_at)
            self.assertEqual(record.revoked_by, self.superuser)
            self.assertEqual(record.revoke_reason, "forwarded to the wrong person")
            event = TokenEvent.objects.get(token=record, kind=TokenEvent.Kind.REVOKED)
            self.assertEqual(event.actor, self.superuser)
            self.assertEqual(event.user, self.user)
            self.assertEqual(event.detail, "forwarded to the wrong person")
            self.assertEqual(event.path, url(CHANGELIST))
            self.assertEqual(event.method, "POST")
            # The links stop working at once.
            self.assertIsNone(get_user(self.tokens[name], f"report:{name}"))
        self.assertEqual(get_user(self.tokens["c"], "report:c"), self.user)

    def action(self, pks, action="revoke_selected", path=None, **data):
        extra = {key: data.pop(key) for key in list(data) if key.isupper()}
        return self.client.post(
            path or url(CHANGELIST),
            {"action": action, "_selected_action": [str(pk) for pk in pks], **data},
            **extra,
        )

    def test_one_link_message(self):
        response = self.action([self.records["a"].pk], post="yes")
        self.assertEqual(self.messages(response), ["Revoked 1 link."])
        self.records["a"].refresh_from_db()
        self.assertEqual(self.records["a"].revoke_reason, "")

    def test_already_revoked(self):
        self.records["a"].revoke()
        response = self.action([self.records["a"].pk], post="yes", reason="again")
        self.assertEqual(
            self.messages(response),
            ["No link was revoked: they were already revoked."],
        )
        self.records["a"].refresh_from_db()
        self.assertEqual(self.records["a"].revoke_reason, "")

    def test_select_across_follows_the_filters(self):
        # The confirmation posts back the selection and select_across, to
        # the changelist URL with its filters.
        path = url(CHANGELIST) + "?q=link+b"
        response = self.action([self.records["b"].pk], path=path, select_across="1")
        self.assertContains(
            response, '<input type="hidden" name="select_across" value="1">', html=True
        )
        self.assertContains(response, "Revoke 1 selected link")
        response = self.action(
            [self.records["b"].pk], path=path, select_across="1", post="yes"
        )
        self.assertEqual(self.messages(response), ["Revoked 1 link."])
        self.assertEqual(
            set(IssuedToken.objects.revoked().values_list("pk", flat=True)),
            {self.records["b"].pk},
        )

    def test_select_across_everything(self):
        response = self.action(
            [self.records["a"].pk], select_across="1", post="yes", reason="leak"
        )
        self.assertEqual(self.messages(response), ["Revoked 3 links."])
        self.assertEqual(IssuedToken.objects.active().count(), 0)

    def test_reason_too_long(self):
        response = self.action([self.records["a"].pk], post="yes", reason="x" * 256)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Ensure this value has at most 255 characters")
        self.assertFalse(IssuedToken.objects.revoked().exists())


class RevokeViewTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.token, self.record = self.issue(scope="report:q3", label="Q3 report")

    def test_button_on_change_page(self):
        response = self.client.get(url(CHANGE, self.record.pk))
        revoke_url = url(REVOKE, self.record.pk)
        self.assertEqual(
            revoke_url, f"/admin/sesame_db/issuedtoken/{self.record.pk}/revoke/"
        )
        self.assertContains(
            response,
            f'<a href="{revoke_url}" class="sesame-db-revoke-link">Revoke</a>',
            html=True,
        )

    def test_get_shows_confirmation(self):
        response = self.client.get(url(REVOKE, self.record.pk))
        self.assertTemplateUsed(response, "sesame_db/admin/revoke_confirmation.html")
        self.assertContains(response, '<textarea name="reason"')
        self.assertContains(response, '<input type="submit" value="Revoke"')
        self.assertContains(response, "Q3 report")
        self.record.refresh_from_db()
        self.assertIsNone(self.record.revoked_at)

    def test_post_revokes(self):
        self.assertEqual(get_user(self.token, "report:q3"), self.user)
        response = self.client.post(
            url(REVOKE, self.record.pk),
            {"reason": "forwarded"},
            REMOTE_ADDR="198.51.100.4",
            HTTP_USER_AGENT="staff-browser",
        )
        self.assertRedirects(response, url(CHANGE, self.record.pk))
        self.assertEqual(self.messages(response), ["Revoked 1 link."])
        self.record.refresh_from_db()
        self.assertEqual(self.record.status, IssuedToken.Status.REVOKED)
        self.assertEqual(self.record.revoked_by, self.superuser)
        self.assertEqual(self.record.revoke_reason, "forwarded")
        event = TokenEvent.objects.get(token=self.record, kind="revoked")
        self.assertEqual(
            (event.actor, event.detail, event.ip, event.user_agent, event.path),
            (
                self.superuser,
                "forwarded",
                "198.51.100.4",
                "staff-browser",
                url(REVOKE, self.record.pk),
            ),
        )
        self.assertIsNone(get_user(self.token, "report:q3"))
        # A revoked link has no Revoke button, and shows who revoked it, why.
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertNotContains(response, "sesame-db-revoke-link")
        self.assertContains(response, "forwarded")

    def test_post_already_revoked(self):
        self.record.revoke(reason="first")
        response = self.client.get(url(REVOKE, self.record.pk))
        self.assertContains(response, "This link is already revoked.")
        response = self.client.post(url(REVOKE, self.record.pk), {"reason": "second"})
        self.assertEqual(
            self.messages(response),
            ["No link was revoked: they were already revoked."],
        )
        self.record.refresh_from_db()
        self.assertEqual(self.record.revoke_reason, "first")

    def test_unknown_link(self):
        self.assertEqual(self.client.get(url(REVOKE, 999999)).status_code, 404)
        self.assertEqual(self.client.get(url(REVOKE, "nope")).status_code, 404)


class ChangePageTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.token, self.record = self.issue(
            label="Q3 report", issued_by=self.superuser
        )

    def test_facts(self):
        response = self.client.get(url(CHANGE, self.record.pk))
        for text in ["Q3 report", "root", ">active</span>", "0 / ∞"]:
            self.assertContains(response, text)

    def test_events_newest_first(self):
        get_user(self.token, "wrong")
        get_user(self.token)
        self.record.revoke(by=self.superuser, reason="forwarded")
        TokenEvent.objects.filter(token=self.record).update(
            ip="203.0.113.9", user_agent="agent/1.0", method="GET", path="/report/"
        )
        response = self.client.get(url(CHANGE, self.record.pk))
        table = re.search(
            r'<table id="link-events">.*?</table>', response.content.decode(), re.S
        )
        assert table is not None
        rows = re.findall(r"<tr class=\"sesame-db-event-(\w+)\">", table.group(0))
        self.assertEqual(rows, ["revoked", "used", "rejected", "issued"])
        for text in [
            "wrong scope",
            "forwarded",
            "root",
            "203.0.113.9",
            "agent/1.0",
            "GET /report/",
        ]:
            self.assertIn(text, table.group(0))
        events_url = url(EVENTS) + f"?token__id__exact={self.record.pk}"
        self.assertContains(
            response, f'<a href="{events_url}">All 4 events</a>', html=True
        )
        response = self.client.get(events_url)
        self.assertEqual(len(response.context["cl"].result_list), 4)

    def test_events_capped(self):
        TokenEvent.objects.bulk_create(
            [
                TokenEvent(
                    token=self.record,
                    kind="used",
                    path=f"/{i}/",
                    created_at=timezone.now() + datetime.timedelta(seconds=i),
                )
                for i in range(60)
            ]
        )
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertEqual(len(response.context["link_events"]), 50)
        self.assertContains(response, "/59/")
        self.assertNotContains(response, "GET /9/<")
        self.assertContains(response, "All 61 events")

    def test_events_link_needs_permission(self):
        self.login(self.revoker)
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertContains(response, 'id="link-events"')
        self.assertContains(response, "1 event")
        self.assertNotContains(response, url(EVENTS))

    def test_deleted_actor(self):
        staff = self.create_staff("gone")
        self.record.revoke(by=staff)
        staff_pk = staff.pk
        IssuedToken.objects.filter(pk=self.record.pk).update(revoked_by=None)
        staff.delete()
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertContains(response, f"<td>#{staff_pk}</td>", html=True)


class CanRevokeTests(AdminTestCase):
    """The revoke permission is decided in one place, for every admin that revokes."""

    def test_one_answer_for_every_admin(self):
        link_admin = IssuedTokenAdmin(IssuedToken, admin_site.site)
        user_admin = admin_site.UserAdmin(User, admin_site.site)
        expected = {
            self.superuser: True,
            self.revoker: True,
            self.changer: True,
            self.viewer: False,
            self.adder: False,
            self.deleter: False,
            self.nobody: False,
        }
        for user, allowed in expected.items():
            with self.subTest(user=user.username):
                request = RequestFactory().get("/")
                request.user = user
                self.assertIs(can_revoke(request), allowed)
                self.assertIs(link_admin.has_revoke_permission(request), allowed)
                self.assertIs(link_admin.has_change_permission(request), allowed)
                self.assertIs(user_admin.has_revoke_links_permission(request), allowed)

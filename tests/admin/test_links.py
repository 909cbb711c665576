from __future__ import annotations

import datetime
import logging
import re
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models import Count
from django.test import RequestFactory, TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sesame_db.admin import (
    EstimatedCountPaginator,
    IssuedTokenAdmin,
    IssuedTokenChangeForm,
    estimated_count,
)
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token
from tests import admin_site
from tests.mixins import CreateUserMixin

HOUR = datetime.timedelta(hours=1)
POSTGRESQL = connection.vendor == "postgresql"

CHANGELIST = "admin:sesame_db_issuedtoken_changelist"
CHANGE = "admin:sesame_db_issuedtoken_change"
REVOKE = "admin:sesame_db_issuedtoken_revoke"
ISSUE = "admin:sesame_db_issuedtoken_issue"
EVENTS = "admin:sesame_db_tokenevent_changelist"


def url(name, *args):
    return reverse(name, args=args)


class AdminTestCase(CreateUserMixin, TestCase):
    """Staff users with each set of permissions, and helpers."""

    def setUp(self):
        super().setUp()
        self.superuser = User.objects.create_superuser(
            "root", "root@example.com", "letmein"
        )
        self.viewer = self.create_staff("viewer", "view_issuedtoken", "view_tokenevent")
        self.revoker = self.create_staff(
            "revoker", "view_issuedtoken", "revoke_issuedtoken"
        )
        self.changer = self.create_staff(
            "changer", "view_issuedtoken", "change_issuedtoken"
        )
        self.adder = self.create_staff("adder", "view_issuedtoken", "add_issuedtoken")
        self.deleter = self.create_staff(
            "deleter", "view_issuedtoken", "delete_issuedtoken"
        )
        self.nobody = self.create_staff("nobody")

    def create_staff(self, username, *codenames):
        user = self.create_user(username, email=f"{username}@example.com")
        user.is_staff = True
        user.save()
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="sesame_db", codename__in=codenames
            )
        )
        return user

    def login(self, user):
        self.client.force_login(user)

    def issue(self, user=None, scope="", **kwargs):
        token, record = issue_token(user or self.user, scope, **kwargs)
        return token, record

    def set_state(self, record, **fields):
        IssuedToken.objects.filter(pk=record.pk).update(**fields)
        record.refresh_from_db()
        return record

    def messages(self, response):
        return [str(message) for message in get_messages(response.wsgi_request)]

    def action(self, pks, action="revoke_selected", path=None, **data):
        return self.client.post(
            path or url(CHANGELIST),
            {"action": action, "_selected_action": [str(pk) for pk in pks], **data},
        )

    def action_names(self, response):
        form = response.context["action_form"]
        if form is None:
            return []
        return [name for name, _ in form.fields["action"].choices if name]


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


class ShortenExpiryTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.expires_at = (timezone.now() + 2 * HOUR).replace(microsecond=123456)
        self.token, self.record = self.issue()
        self.set_state(self.record, expires_at=self.expires_at)

    def post(self, when, record=None):
        record = record or self.record
        data: dict[str, Any] = {"expires_at_0": "", "expires_at_1": ""}
        if when is not None:
            data = {
                "expires_at_0": when.strftime("%Y-%m-%d"),
                "expires_at_1": when.strftime("%H:%M:%S"),
            }
        return self.client.post(url(CHANGE, record.pk), data)

    def test_field_and_help_text(self):
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertContains(response, 'name="expires_at_0"')
        self.assertContains(response, "Shorten the expiry")
        self.assertContains(response, "can’t be extended")
        # Nothing else is editable.
        form = response.context["adminform"].form
        self.assertEqual(list(form.fields), ["expires_at"])

    def test_shorten(self):
        earlier = timezone.now() + HOUR
        response = self.post(earlier)
        self.assertRedirects(response, url(CHANGELIST))
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, earlier.replace(microsecond=0))
        self.assertEqual(get_user(self.token), self.user)
        change = LogEntry.objects.get()
        self.assertEqual(change.user, self.superuser)
        self.assertEqual(
            change.object_repr,
            f"Link #{self.record.pk} for {self.user.get_username()}"
            + (f" ({self.record.scope})" if self.record.scope else ""),
        )
        self.assertIn("Expires at", change.change_message)

    def test_shorten_to_the_past_ends_the_link(self):
        response = self.post(timezone.now() - HOUR)
        self.assertEqual(response.status_code, 302)
        self.record.refresh_from_db()
        self.assertEqual(self.record.status, IssuedToken.Status.EXPIRED)
        self.assertIsNone(get_user(self.token))

    def test_extend_is_refused(self):
        response = self.post(self.expires_at + HOUR)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "The expiry can only be shortened")
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_removing_the_expiry_is_refused(self):
        response = self.post(None)
        self.assertContains(response, "The expiry can only be shortened")
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_resubmitting_unchanged(self):
        # The form shows whole seconds.
        response = self.post(self.expires_at)
        self.assertEqual(response.status_code, 302)
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_link_without_expiry(self):
        _, record = self.issue()
        self.assertIsNone(record.expires_at)
        later = timezone.now() + 1000 * HOUR
        self.assertEqual(self.post(later, record).status_code, 302)
        record.refresh_from_db()
        self.assertEqual(record.expires_at, later.replace(microsecond=0))

    def test_link_without_expiry_stays_without(self):
        _, record = self.issue()
        self.assertEqual(self.post(None, record).status_code, 302)
        record.refresh_from_db()
        self.assertIsNone(record.expires_at)

    def test_revoke_permission_shortens(self):
        self.login(self.revoker)
        self.assertEqual(self.post(timezone.now() + HOUR).status_code, 302)
        self.record.refresh_from_db()
        self.assertLess(self.record.expires_at, self.expires_at)

    def test_inactive_links_are_read_only(self):
        now = timezone.now()
        states: list[dict[str, Any]] = [
            {"revoked_at": now},
            {"expires_at": now - HOUR},
            {"max_uses": 1, "use_count": 1},
        ]
        for fields in states:
            with self.subTest(fields=fields):
                _, record = self.issue()
                self.set_state(record, **fields)
                response = self.client.get(url(CHANGE, record.pk))
                self.assertNotContains(response, 'name="expires_at_0"')
                self.assertNotContains(response, 'name="_save"')

    def test_conditional_update_never_extends(self):
        # The row was shortened by someone else after this form loaded it.
        model_admin = IssuedTokenAdmin(IssuedToken, admin_site.site)
        stale = IssuedToken.objects.get(pk=self.record.pk)
        sooner = timezone.now() + 10 * datetime.timedelta(minutes=1)
        self.set_state(self.record, expires_at=sooner, use_count=1)
        form = IssuedTokenChangeForm(
            {"expires_at": timezone.now() + HOUR}, instance=stale
        )
        self.assertTrue(form.is_valid(), form.errors)
        request = RequestFactory().post("/")
        request.session = self.client.session
        storage = FallbackStorage(request)
        setattr(request, "_messages", storage)  # noqa: B010 - as MessageMiddleware does
        model_admin.save_model(request, form.instance, form, change=True)
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, sooner)
        # Nor does it overwrite the use counted meanwhile.
        self.assertEqual(self.record.use_count, 1)
        self.assertEqual(
            [str(m) for m in storage],
            ["The expiry wasn't changed: it was already earlier."],
        )


class IssueViewTests(AdminTestCase):
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
        self.assertIsNotNone(match, "no issued link on the page")
        assert match is not None
        return match.group(1).replace("&amp;", "&")

    def token_of(self, link):
        return parse_qs(urlsplit(link).query)["sesame"][0]

    def test_url(self):
        self.assertEqual(url(ISSUE), "/admin/sesame_db/issuedtoken/issue/")

    @override_settings(SESAME_ADMIN_SCOPES=["login", "report:q3"])
    def test_form(self):
        response = self.client.get(url(ISSUE))
        for name in ["user", "scope", "expires_in", "max_uses", "label", "target"]:
            self.assertContains(response, f'name="{name}"')
        self.assertContains(response, '<input type="submit" value="Issue link"')
        self.assertContains(response, 'list="sesame-db-scopes"')
        self.assertContains(response, '<option value="report:q3"></option>', html=True)
        self.assertContains(response, 'name="target" value="/"')
        # The user is picked by id, with a lookup link to the user admin.
        self.assertContains(response, 'class="vForeignKeyRawIdAdminField"')
        self.assertContains(response, reverse("admin:auth_user_changelist"))
        self.assertIsNone(response.context["form"]["expires_in"].initial)

    @override_settings(SESAME_MAX_AGE=3600)
    def test_expires_in_defaults_to_max_age(self):
        response = self.client.get(url(ISSUE))
        self.assertContains(response, 'name="expires_in" value="60"')

    def test_initial_values_from_query_string(self):
        response = self.client.get(url(ISSUE) + f"?user={self.user.pk}&scope=s&label=L")
        self.assertContains(response, f'name="user" value="{self.user.pk}"')
        self.assertContains(response, 'name="scope" value="s"')

    def test_issue(self):
        before = timezone.now()
        response = self.post(
            scope="report:q3",
            expires_in="90",
            max_uses="3",
            label="Q3 report for the board",
            target="/report/3/?tab=summary#top",
        )
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/admin/issued.html")
        link = self.issued_link(response)
        parts = urlsplit(link)
        self.assertEqual(
            (parts.scheme, parts.netloc, parts.path),
            ("http", "testserver", "/report/3/"),
        )
        self.assertEqual(parts.fragment, "top")
        self.assertEqual(parse_qs(parts.query)["tab"], ["summary"])
        token = self.token_of(link)
        record = IssuedToken.objects.get()
        self.assertEqual(record.issued_by, self.superuser)
        self.assertEqual(record.user, self.user)
        self.assertEqual(record.scope, "report:q3")
        self.assertEqual(record.label, "Q3 report for the board")
        self.assertEqual(record.max_uses, 3)
        assert record.expires_at is not None
        self.assertAlmostEqual(
            record.expires_at,
            before + datetime.timedelta(minutes=90),
            delta=datetime.timedelta(seconds=10),
        )
        event = TokenEvent.objects.get(token=record)
        self.assertEqual(
            (event.kind, event.actor, event.path),
            ("issued", self.superuser, url(ISSUE)),
        )
        self.assertContains(response, f'href="{url(CHANGE, record.pk)}"')
        # The link works.
        request = RequestFactory().get(parts.path, {"sesame": token})
        self.assertEqual(get_user(request, "report:q3"), self.user)
        self.assertIsNone(get_user(token))

    def test_link_shown_once_and_not_cached(self):
        response = self.post()
        link = self.issued_link(response)
        token = self.token_of(link)
        content = response.content.decode()
        self.assertEqual(content.count(token), 1)
        self.assertEqual(content.count('id="issued-link"'), 1)
        self.assertIn("no-store", response["Cache-Control"])
        self.assertContains(response, ">Copy</button>")
        self.assertContains(response, "sesame_db/admin/copy_link.js")
        self.assertTrue(link.startswith("http://testserver/?sesame=~"))

    def test_default_target_and_expiry(self):
        response = self.post(target="")
        self.assertContains(response, "This field is required")
        response = self.post()
        self.assertTrue(
            self.issued_link(response).startswith("http://testserver/?sesame=")
        )
        self.assertIsNone(IssuedToken.objects.get().expires_at)

    @override_settings(SESAME_MAX_AGE=600)
    def test_empty_expiry_uses_max_age(self):
        before = timezone.now()
        self.post(expires_in="")
        expires_at = IssuedToken.objects.get().expires_at
        assert expires_at is not None
        self.assertAlmostEqual(
            expires_at,
            before + datetime.timedelta(seconds=600),
            delta=datetime.timedelta(seconds=10),
        )

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_token_name(self):
        link = self.issued_link(self.post(target="/r/?a=1"))
        self.assertRegex(link, r"^http://testserver/r/\?a=1&login=~")

    def test_same_host_absolute_target(self):
        link = self.issued_link(self.post(target="http://testserver/r/"))
        self.assertTrue(link.startswith("http://testserver/r/?sesame="))

    def test_external_targets_are_refused(self):
        for target in [
            "https://evil.example/",
            "//evil.example/path",
            "http://testserver.evil.example/",
            "javascript:alert(1)",
            "/\\evil.example",
            "relative/path",
            "ftp://testserver/",
        ]:
            with self.subTest(target=target):
                response = self.post(target=target)
                self.assertEqual(response.status_code, 200)
                self.assertContains(response, "Enter a path on this site")
                self.assertNotContains(response, 'id="issued-link"')
        self.assertFalse(IssuedToken.objects.exists())

    def test_target_with_token_parameter_is_refused(self):
        response = self.post(target="/?sesame=x")
        self.assertContains(response, "Remove the sesame parameter")
        self.assertFalse(IssuedToken.objects.exists())

    def test_invalid_values(self):
        for data, error in [
            ({"user": "999999"}, "Select a valid choice"),
            ({"user": "abc"}, "Select a valid choice"),
            ({"max_uses": "0"}, "greater than or equal to 1"),
            ({"expires_in": "0"}, "greater than or equal to 1"),
            ({"expires_in": "99999999"}, "less than or equal to"),
            ({"scope": "x" * 256}, "at most 255 characters"),
        ]:
            with self.subTest(data=data):
                response = self.post(**data)
                self.assertContains(response, error)
        self.assertFalse(IssuedToken.objects.exists())

    def test_inactive_user_is_refused(self):
        self.user.is_active = False
        self.user.save()
        response = self.post()
        self.assertContains(response, "This user is inactive")
        self.assertFalse(IssuedToken.objects.exists())

    def dump_database(self):
        """Every value of every row of every table, sessions decoded."""
        chunks = []
        for model in apps.get_models(include_auto_created=True):
            for row in model._base_manager.values_list():
                chunks.append(repr(row))
        for session in Session.objects.all():
            chunks.append(repr(session.get_decoded()))
        return "\n".join(chunks)

    def test_token_is_neither_stored_nor_logged(self):
        records = []

        class Handler(logging.Handler):
            def emit(self, record):
                records.append(self.format(record))

        handler = Handler(level=logging.DEBUG)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        loggers = [logging.getLogger(name) for name in ("django", "sesame_db")]
        old_levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
        try:
            with CaptureQueriesContext(connection) as queries:
                response = self.post(scope="s", label="L", target="/r/")
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            for logger, level in zip(loggers, old_levels, strict=True):
                logger.setLevel(level)
        token = self.token_of(self.issued_link(response))
        # Queries were logged: the capture works.
        self.assertTrue(any("INSERT" in line for line in records))
        forms = [token, token[1:], token[-16:]]
        for secret in forms:
            self.assertFalse([line for line in records if secret in line])
            self.assertFalse(
                [q["sql"] for q in queries.captured_queries if secret in q["sql"]]
            )
            self.assertNotIn(secret, self.dump_database())
            for morsel in response.cookies.values():
                self.assertNotIn(secret, morsel.value)
        # The admin's history records the link, not its token.
        entry = LogEntry.objects.get()
        record = IssuedToken.objects.get()
        self.assertEqual(entry.object_id, str(record.pk))
        # Named so that a person recognizes it.
        self.assertEqual(entry.object_repr, f"Link #{record.pk} for john (s)")


class ChangelistTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.other = self.create_user("jane", email="jane@example.org")
        now = timezone.now()
        self.records = {}
        states: dict[str, dict[str, Any]] = {
            "active": {},
            "limited": {"max_uses": 3, "use_count": 1},
            "expired": {"expires_at": now - HOUR},
            "revoked": {"revoked_at": now - HOUR},
            "used_up": {"max_uses": 1, "use_count": 1},
        }
        for name, fields in states.items():
            _, record = self.issue(scope=f"scope-{name}", label=f"label-{name}")
            self.records[name] = self.set_state(record, **fields)
        _, self.janes = self.issue(self.other, scope="login", label="Jane's")

    def pks(self, response):
        return {obj.pk for obj in response.context["cl"].result_list}

    def named(self, *names):
        return {self.records[name].pk for name in names}

    def test_columns(self):
        response = self.client.get(url(CHANGELIST))
        self.assertContains(
            response,
            '<span class="sesame-db-status sesame-db-status-revoked" '
            'style="background: #b02a37; color: #fff; padding: 1px 7px; '
            'border-radius: 8px; white-space: nowrap">revoked</span>',
            html=True,
        )
        self.assertContains(response, ">used up</span>")
        self.assertContains(response, '<td class="field-uses">1 / 3</td>', html=True)
        self.assertContains(response, '<td class="field-uses">0 / ∞</td>', html=True)
        # Few columns, to fit 1280 px (tests/browser/test_admin_layout.py).
        self.assertEqual(
            [str(h["text"]) for h in response.context["result_headers"]][1:],
            ["user", "scope and label", "status", "uses", "expires at", "created"],
        )
        # The label under the scope; "default scope" for none.
        self.assertContains(
            response,
            '<span class="sesame-db-scope">scope-limited</span><br>'
            '<span class="sesame-db-label">label-limited</span>',
            html=True,
        )
        # The short format, which wraps in two lines.
        self.assertRegex(
            response.content.decode(),
            r'<td class="field-issued">\d\d/\d\d/\d{4} \d',
        )

    def test_no_facets(self):
        # Counting the rows of each filter choice would read the whole table.
        for name in [CHANGELIST, EVENTS]:
            with self.subTest(page=name):
                response = self.client.get(url(name), {"_facets": "1"})
                self.assertNotContains(response, "Show counts")
                self.assertFalse(response.context["cl"].add_facets)

    def test_newest_first(self):
        response = self.client.get(url(CHANGELIST))
        pks = [obj.pk for obj in response.context["cl"].result_list]
        self.assertEqual(pks, sorted(pks, reverse=True))

    def test_status_filter(self):
        expected = {
            "active": self.named("active", "limited") | {self.janes.pk},
            "expired": self.named("expired"),
            "revoked": self.named("revoked"),
            "used_up": self.named("used_up"),
        }
        for status, pks in expected.items():
            with self.subTest(status=status):
                response = self.client.get(url(CHANGELIST), {"status": status})
                self.assertEqual(self.pks(response), pks)
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "?status=used_up")

    def test_scope_filter_lists_no_scopes_by_default(self):
        response = self.client.get(url(CHANGELIST))
        titles = [
            spec.title
            for spec in response.context["cl"].filter_specs
            if spec.has_output()
        ]
        self.assertEqual(titles, ["status", "created"])

    @override_settings(SESAME_ADMIN_SCOPES=["", "login", "report:unused"])
    def test_scope_filter_lists_known_scopes(self):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url(CHANGELIST))
        [spec] = [
            spec
            for spec in response.context["cl"].filter_specs
            if spec.title == "scope"
        ]
        self.assertEqual(
            spec.lookup_choices,
            [
                ("", "default scope"),
                ("login", "login"),
                ("report:unused", "report:unused"),
            ],
        )
        self.assertNotContains(response, "?scope=scope-active")
        self.assertFalse(
            [
                q
                for q in queries.captured_queries
                if "DISTINCT" in q["sql"].upper() and "scope" in q["sql"]
            ]
        )
        response = self.client.get(url(CHANGELIST), {"scope": "login"})
        self.assertEqual(self.pks(response), {self.janes.pk})

    def test_search(self):
        for term, expected in [
            ("jane", {self.janes.pk}),
            ("example.org", {self.janes.pk}),
            ("label-expired", self.named("expired")),
            ("scope-revoked", self.named("revoked")),
            ("login", {self.janes.pk}),
        ]:
            with self.subTest(term=term):
                response = self.client.get(url(CHANGELIST), {"q": term})
                self.assertEqual(self.pks(response), expected)

    def test_token_is_not_searchable(self):
        token, record = self.issue(label="secret")
        for term in [token, token[1:10], token[-12:]]:
            with self.subTest(term=term):
                response = self.client.get(url(CHANGELIST), {"q": term})
                self.assertEqual(self.pks(response), set())
        response = self.client.get(url(CHANGE, record.pk))
        self.assertNotContains(response, token[1:])
        self.assertNotContains(response, record.user_digest)

    def test_search_fields_follow_the_user_model(self):
        model_admin = IssuedTokenAdmin(IssuedToken, admin_site.site)
        request = RequestFactory().get("/")
        self.assertEqual(
            model_admin.get_search_fields(request),
            ["user__username", "user__email", "scope", "label"],
        )
        # Read when the page is built, not when the module is imported.
        with mock.patch.object(User, "EMAIL_FIELD", "missing", create=True):
            self.assertEqual(
                model_admin.get_search_fields(request),
                ["user__username", "scope", "label"],
            )
        with mock.patch.object(User, "USERNAME_FIELD", "email"):
            self.assertEqual(
                model_admin.get_search_fields(request),
                ["user__email", "scope", "label"],
            )

    def test_date_filter(self):
        old = self.records["active"]
        self.set_state(old, created=timezone.now() - datetime.timedelta(days=40))
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "Past 7 days")
        [spec] = [
            spec
            for spec in response.context["cl"].filter_specs
            if spec.title == "created"
        ]
        [choice] = [
            choice
            for choice in spec.choices(response.context["cl"])
            if choice["display"] == "Past 7 days"
        ]
        response = self.client.get(url(CHANGELIST) + choice["query_string"])
        self.assertNotIn(old.pk, self.pks(response))
        self.assertEqual(len(self.pks(response)), 5)
        today = timezone.localdate()
        response = self.client.get(
            url(CHANGELIST),
            {
                "created__year": str(today.year),
                "created__month": str(today.month),
                "created__day": str(today.day),
            },
        )
        self.assertEqual(len(self.pks(response)), 5)


class DateHierarchyTests(AdminTestCase):
    """The date drill-down lists the dates between the first and the last row, without SELECT DISTINCT."""

    def setUp(self):
        super().setUp()
        self.login(self.superuser)

    def create(self, *dates):
        for date in dates:
            _, record = self.issue()
            self.set_state(record, created=date)

    def choices(self, **params):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url(CHANGELIST), params)
        self.assertFalse(
            [q for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
        )
        # Django 6.1 labels the nav with a "Filter by ..." span.
        nav = re.search(
            r'<nav class="toplinks"[^>]*>(?:\s*<span id="date-hierarchy-label">.*?</span>)?(.*?)</nav>',
            response.content.decode(),
            re.S,
        )
        if nav is None:
            return None
        return (
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", nav.group(1)))
            .strip()
            .replace("&lsaquo;", "<")
        )

    def utc(self, year, month, day, hour=0):
        return datetime.datetime(year, month, day, hour, tzinfo=datetime.timezone.utc)

    def test_years_months_days(self):
        self.create(
            self.utc(2024, 3, 10, 12), self.utc(2024, 5, 2, 8), self.utc(2026, 1, 7)
        )
        # 2025 has no link, but it's between the first and the last.
        self.assertEqual(self.choices(), "2024 2025 2026")
        self.assertEqual(
            self.choices(created__year="2024"),
            "< All dates March 2024 April 2024 May 2024 June 2024 July 2024 "
            "August 2024 September 2024 October 2024 November 2024 December 2024",
        )
        self.assertEqual(self.choices(created__year="2026"), "< All dates January 2026")
        self.assertEqual(
            self.choices(created__year="2024", created__month="3"),
            "< 2024 " + " ".join(f"March {day}" for day in range(10, 32)),
        )
        self.assertEqual(
            self.choices(created__year="2026", created__month="1"),
            "< 2026 " + " ".join(f"January {day}" for day in range(1, 8)),
        )
        self.assertEqual(
            self.choices(created__year="2024", created__month="3", created__day="10"),
            "< March 2024 March 10",
        )
        # Outside of the table's dates, there's nothing to choose.
        self.assertEqual(self.choices(created__year="2023"), "< All dates")

    def test_starts_at_the_narrowest_level(self):
        self.create(self.utc(2024, 3, 10), self.utc(2024, 3, 12))
        self.assertEqual(self.choices(), "< 2024 March 10 March 11 March 12")
        self.create(self.utc(2024, 4, 1))
        self.assertEqual(self.choices(), "< All dates March 2024 April 2024")

    def test_filters_and_search_keep_the_table_bounds(self):
        # Bounds of the filtered rows would need a scan of all of them.
        self.create(self.utc(2024, 3, 10), self.utc(2025, 3, 12))
        _, record = self.issue(label="needle")
        self.set_state(record, created=self.utc(2025, 1, 1))
        with CaptureQueriesContext(connection) as unfiltered:
            self.assertEqual(self.choices(), "2024 2025")
        with CaptureQueriesContext(connection) as searched:
            self.assertEqual(self.choices(q="needle"), "2024 2025")
        [bounds] = [
            q["sql"] for q in searched.captured_queries if "MIN(" in q["sql"].upper()
        ]
        self.assertNotIn("WHERE", bounds.upper())
        self.assertNotIn("JOIN", bounds.upper())
        # As many queries; on PostgreSQL, the unfiltered list also reads
        # the table's estimated size.
        self.assertEqual(len(searched), len(unfiltered) - POSTGRESQL)

    def test_links_filter_the_list(self):
        self.create(self.utc(2024, 3, 10), self.utc(2025, 3, 12))
        response = self.client.get(url(CHANGELIST), {"created__year": "2025"})
        self.assertEqual(len(response.context["cl"].result_list), 1)
        self.assertContains(response, "?created__month=3&amp;created__year=2025")

    @override_settings(TIME_ZONE="America/New_York")
    def test_local_time(self):
        # 2 a.m. UTC on January 1st is still December 31st in New York.
        self.create(self.utc(2025, 1, 1, 2), self.utc(2024, 12, 30, 12))
        self.assertEqual(self.choices(), "< 2024 December 30 December 31")

    def test_no_rows(self):
        self.assertEqual(self.choices(), "")
        self.assertEqual(self.choices(created__year="2024"), "< All dates")
        self.assertEqual(
            self.choices(created__year="2024", created__month="2"), "< 2024"
        )

    def test_events(self):
        _, record = self.issue()
        TokenEvent.objects.filter(token=record).update(created_at=self.utc(2023, 6, 1))
        self.issue()
        response = self.client.get(url(EVENTS))
        self.assertContains(response, "?created_at__year=2023")
        self.assertContains(response, f"?created_at__year={timezone.now().year}")


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


class TokenEventAdminTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.token, self.record = self.issue(scope="report:q3")
        request = RequestFactory().get(
            "/report/", {"sesame": self.token}, REMOTE_ADDR="203.0.113.5"
        )
        get_user(request, "report:q3")
        get_user(RequestFactory().get("/", REMOTE_ADDR="198.51.100.1"), "report:q3")

    def pks(self, response):
        return {obj.pk for obj in response.context["cl"].result_list}

    def test_changelist(self):
        response = self.client.get(url(EVENTS))
        self.assertContains(
            response,
            f'<a href="{url(CHANGE, self.record.pk)}">#{self.record.pk}</a>',
            html=True,
        )
        self.assertContains(response, "203.0.113.5")
        self.assertContains(response, "/report/")

    def test_deleted_link_and_user(self):
        pk = self.record.pk
        self.record.delete()
        response = self.client.get(url(EVENTS))
        self.assertContains(response, f"#{pk} (deleted)")

    def test_filters(self):
        response = self.client.get(url(EVENTS), {"kind__exact": "used"})
        self.assertEqual(
            self.pks(response),
            set(TokenEvent.objects.filter(kind="used").values_list("pk", flat=True)),
        )

    def test_search(self):
        used = TokenEvent.objects.get(kind="used").pk
        issued = TokenEvent.objects.get(kind="issued").pk
        for term, expected in [
            ("203.0.113.5", {used}),
            ("203.0.113.50", set()),
            ("john", {used, issued}),
            ("report:q3", {used, issued}),
            ("nobody", set()),
        ]:
            with self.subTest(term=term):
                response = self.client.get(url(EVENTS), {"q": term})
                self.assertEqual(self.pks(response), expected)

    def test_search_by_ip_uses_equality(self):
        with CaptureQueriesContext(connection) as queries:
            self.client.get(url(EVENTS), {"q": " 2001:DB8::1 "})
        [query] = [
            q["sql"]
            for q in queries.captured_queries
            if "LIMIT" in q["sql"] or "ORDER BY" in q["sql"]
        ][-1:]
        self.assertIn("2001:db8::1", query)
        self.assertNotIn("LIKE", query.upper())


class PaginatorTests(AdminTestCase):
    def test_real_count_on_small_tables(self):
        for _ in range(3):
            self.issue()
        paginator = EstimatedCountPaginator(IssuedToken.objects.order_by("pk"), 2)
        self.assertEqual(paginator.count, 3)
        self.assertFalse(paginator.is_estimate)

    def test_no_estimate_on_other_databases(self):
        self.issue()
        with (
            mock.patch.object(connection, "vendor", "sqlite"),
            mock.patch.object(EstimatedCountPaginator, "estimate_threshold", 0),
            CaptureQueriesContext(connection) as queries,
        ):
            paginator = EstimatedCountPaginator(IssuedToken.objects.order_by("pk"), 2)
            self.assertEqual(paginator.count, 1)
            self.assertFalse(paginator.is_estimate)
            self.assertIsNone(estimated_count(IssuedToken.objects.all()))
        self.assertFalse(
            [q for q in queries.captured_queries if "pg_class" in q["sql"]]
        )

    def test_no_estimate_without_a_query_set(self):
        self.assertIsNone(estimated_count([1, 2]))
        self.assertEqual(EstimatedCountPaginator([1, 2, 3], 2).count, 3)


@pytest.mark.postgresql
class PostgreSQLPaginatorTests(AdminTestCase):
    def fill(self, count):
        # A bulk insert, then ANALYZE: pg_class holds the estimate.
        _, record = self.issue()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sesame_db_issuedtoken (created, modified, user_id, scope, label, "
                "use_count, revoke_reason, user_digest) "
                "SELECT now(), now(), %s, 'bulk', '', 0, '', '' FROM generate_series(2, %s)",
                [self.user.pk, count],
            )
            cursor.execute("ANALYZE sesame_db_issuedtoken")
        return record

    def test_estimate(self):
        self.fill(300)
        queryset = IssuedToken.objects.select_related("user").order_by("-created")
        self.assertEqual(estimated_count(queryset), 300)
        # Only without a WHERE clause.
        unfiltered = IssuedToken.objects.all()
        for filtered in [
            unfiltered.filter(scope="x"),
            unfiltered.active(),
            unfiltered.distinct(),
            unfiltered[:5],
            unfiltered.filter(pk__gt=0),
            unfiltered.values("scope").annotate(n=Count("pk")),
        ]:
            with self.subTest(query=str(filtered.query)):
                self.assertIsNone(estimated_count(filtered))
        paginator = EstimatedCountPaginator(queryset, 100)
        paginator.estimate_threshold = 100
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(paginator.count, 300)
        self.assertTrue(paginator.is_estimate)
        self.assertFalse(
            [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        )
        # Below the threshold, a real count.
        paginator = EstimatedCountPaginator(queryset, 100)
        self.assertEqual(paginator.count, 300)
        self.assertFalse(paginator.is_estimate)

    def test_changelist_shows_estimate(self):
        self.fill(300)
        self.login(self.superuser)
        with mock.patch.object(EstimatedCountPaginator, "estimate_threshold", 100):
            response = self.client.get(url(CHANGELIST))
            self.assertTrue(response.context["cl"].paginator.is_estimate)
            self.assertContains(response, "PostgreSQL’s estimate")
            # A filter or a search counts rows.
            response = self.client.get(url(CHANGELIST), {"q": "bulk"})
            self.assertFalse(response.context["cl"].paginator.is_estimate)
            self.assertNotContains(response, "PostgreSQL’s estimate")


class QueryBudgetTests(AdminTestCase):
    """The pages cost the same number of queries for 1 row and for 100 rows."""

    # IssuedToken changelist, for a superuser:
    # 1. the session
    # 2. the user
    # 3. (PostgreSQL only) the table's estimated size, in pg_class
    # 4. COUNT of the rows, as the table is small
    # 5. the rows of the page, joined to user and issued_by
    # 6. MIN and MAX of created, for the date hierarchy
    CHANGELIST_QUERIES = 5 + POSTGRESQL
    # TokenEvent changelist, for a superuser: the same, with the rows joined
    # to user, actor and token.
    EVENTS_QUERIES = 5 + POSTGRESQL
    # IssuedToken change page, for a superuser:
    # 1. the session
    # 2. the user
    # 3. the link, joined to user, issued_by and revoked_by
    # 4. the 50 newest events joined to their actor, with their total count
    CHANGE_QUERIES = 4

    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        # The change page needs the content type of IssuedToken, which
        # Django caches for the process: load it, so that the counts don't
        # depend on the order of the tests.
        ContentType.objects.get_for_model(IssuedToken)

    def fill(self, count):
        for i in range(count):
            self.users = getattr(self, "users", 0) + 1
            _, record = self.issue(
                self.create_user(f"user{self.users}") if i % 10 == 0 else None,
                scope=f"s{i}",
                label=f"label {i}",
                issued_by=self.superuser,
                max_uses=3,
            )
            TokenEvent.objects.create(
                token=record, user=record.user, actor=self.superuser, kind="revoked"
            )
        return record

    def count(self, path, **params):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(path, params)
        self.assertEqual(response.status_code, 200)
        return len(queries), response

    def test_changelist(self):
        self.fill(1)
        one, response = self.count(url(CHANGELIST))
        self.assertEqual(len(response.context["cl"].result_list), 1)
        self.fill(99)
        hundred, response = self.count(url(CHANGELIST))
        self.assertEqual(len(response.context["cl"].result_list), 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.CHANGELIST_QUERIES)

    def test_events_changelist(self):
        self.fill(1)
        one, response = self.count(url(EVENTS))
        self.assertEqual(len(response.context["cl"].result_list), 2)
        self.fill(49)
        hundred, response = self.count(url(EVENTS))
        self.assertEqual(len(response.context["cl"].result_list), 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.EVENTS_QUERIES)

    def test_change_page(self):
        record = self.fill(1)
        one, response = self.count(url(CHANGE, record.pk))
        self.assertEqual(len(response.context["link_events"]), 2)
        TokenEvent.objects.bulk_create(
            [
                TokenEvent(
                    token=record, user=self.user, actor=self.superuser, kind="used"
                )
                for _ in range(98)
            ]
        )
        hundred, response = self.count(url(CHANGE, record.pk))
        self.assertEqual(len(response.context["link_events"]), 50)
        self.assertEqual(response.context["link_events_total"], 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.CHANGE_QUERIES)


class UserAdminMixinTests(AdminTestCase):
    """The mixin, on a user admin registered on a site of the tests (tests/admin_site.py)."""

    USERS = "test_admin:auth_user_changelist"

    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.other = self.create_user("jane", email="jane@example.org")
        self.tokens = [self.issue(self.user, scope=f"s{i}") for i in range(3)]
        self.janes = self.issue(self.other)

    def post(self, pks, **data):
        return self.client.post(
            reverse(self.USERS),
            {
                "action": "revoke_issued_links",
                "_selected_action": [str(pk) for pk in pks],
                **data,
            },
        )

    def test_inline_shows_newest_links(self):
        for i in range(25):
            self.issue(self.user, label=f"many {i}")
        response = self.client.get(
            reverse("test_admin:auth_user_change", args=[self.user.pk])
        )
        [formset] = response.context["inline_admin_formsets"]
        forms = list(formset)
        self.assertEqual(len(forms), 20)
        self.assertContains(response, "many 24")
        self.assertNotContains(response, "many 4<")
        self.assertNotContains(response, "Jane")
        link = reverse(
            "test_admin:sesame_db_issuedtoken_change",
            args=[IssuedToken.objects.latest("pk").pk],
        )
        self.assertContains(response, f'href="{link}"')
        self.assertNotContains(response, 'name="sesame_tokens-0-DELETE"')
        # Not on the add page.
        response = self.client.get(reverse("test_admin:auth_user_add"))
        self.assertEqual(response.context["inline_admin_formsets"], [])

    def test_inline_costs_the_same_for_3_and_20_links(self):
        # Each row shows its link's str(), which names the user: the inline
        # must not load the user once per row.
        change = reverse("test_admin:auth_user_change", args=[self.user.pk])
        # Fill the caches of the process (content types, permissions) first,
        # so that the counts don't depend on the order of the tests.
        self.client.get(change)
        with CaptureQueriesContext(connection) as three:
            response = self.client.get(change)
        self.assertContains(response, f"Link #{self.tokens[0][1].pk} for john (s0)")
        for i in range(17):
            self.issue(self.user, label=f"many {i}")
        with CaptureQueriesContext(connection) as twenty:
            response = self.client.get(change)
        self.assertEqual(len(list(response.context["inline_admin_formsets"][0])), 20)
        self.assertEqual(len(twenty), len(three))

    def test_default_site_is_untouched(self):
        response = self.client.get(
            reverse("admin:auth_user_change", args=[self.user.pk])
        )
        self.assertEqual(response.context["inline_admin_formsets"], [])
        response = self.client.get(reverse("admin:auth_user_changelist"))
        self.assertNotIn("revoke_issued_links", self.action_names(response))

    def test_action(self):
        response = self.client.get(reverse(self.USERS))
        self.assertIn("revoke_issued_links", self.action_names(response))
        self.assertIn(
            "Revoke all links of the selected users", response.content.decode()
        )
        response = self.post([self.user.pk])
        self.assertTemplateUsed(response, "sesame_db/admin/revoke_confirmation.html")
        self.assertContains(response, "Revoke the 3 active links of 1 selected user?")
        self.assertContains(response, '<input type="submit" value="Revoke"')
        self.assertFalse(IssuedToken.objects.revoked().exists())
        response = self.post([self.user.pk], post="yes", reason="account compromised")
        self.assertEqual(self.messages(response), ["Revoked 3 links."])
        for token, record in self.tokens:
            record.refresh_from_db()
            self.assertEqual(
                (record.revoked_by, record.revoke_reason),
                (self.superuser, "account compromised"),
            )
            self.assertIsNone(get_user(token, record.scope))
        self.assertEqual(get_user(self.janes[0]), self.other)
        self.assertEqual(TokenEvent.objects.filter(kind="revoked").count(), 3)

    def test_action_needs_revoke_permission(self):
        staff = self.create_staff("staff")
        staff.user_permissions.add(
            *Permission.objects.filter(codename__in=["view_user", "change_user"])
        )
        self.login(staff)
        response = self.client.get(reverse(self.USERS))
        self.assertNotIn("revoke_issued_links", self.action_names(response))
        self.post([self.user.pk], post="yes")
        self.assertFalse(IssuedToken.objects.revoked().exists())
        staff.user_permissions.add(
            Permission.objects.get(codename="revoke_issuedtoken")
        )
        staff = User.objects.get(pk=staff.pk)
        self.login(staff)
        response = self.post([self.user.pk], post="yes")
        self.assertEqual(self.messages(response), ["Revoked 3 links."])

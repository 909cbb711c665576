"""Tests of :mod:`sesame_db.admin.users`."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user
from tests.admin.base import (
    AdminTestCase,
)


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

"""The staff users, URLs and helpers shared by the tests of the admin."""

from __future__ import annotations

import datetime

from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import TestCase
from django.urls import reverse

from sesame_db.models import IssuedToken
from sesame_db.utils import issue_token
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

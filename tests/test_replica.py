"""
A real streaming replica that lags: sesame_db never misses a change made on the primary.

tests/replica.py starts a primary and a hot standby of it; the router of
docs/scale.rst sends reads to the standby. With its replay paused, the
standby still shows a link unused, unrevoked, and its user active, while the
primary has changed them: every entry point must refuse at once. The admin
pages keep working, showing what the replica shows.

These tests start their own two servers, so they run in the PostgreSQL run
of the suite only.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import SimpleTestCase, override_settings
from django.urls import reverse

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import aget_user, get_token, get_user, issue_token

from .replica import Pair, Unavailable, add_database, remove_database, start_pair

PRIMARY, REPLICA = "scale_primary", "scale_replica"

pytestmark = pytest.mark.postgresql


@override_settings(
    DATABASE_ROUTERS=["tests.routers.ScalePrimaryReplicaRouter"],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "sesame_db.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
)
class LaggingReplicaTests(SimpleTestCase):
    databases = {PRIMARY, REPLICA}
    pair: Pair

    @classmethod
    def setUpClass(cls):
        try:
            cls.pair = start_pair()
        except Unavailable as exc:
            raise pytest.skip.Exception(str(exc)) from None
        add_database(PRIMARY, cls.pair.settings(cls.pair.primary))
        add_database(REPLICA, cls.pair.settings(cls.pair.replica))
        super().setUpClass()
        call_command("migrate", database=PRIMARY, verbosity=0)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        remove_database(PRIMARY)
        remove_database(REPLICA)

    def setUp(self):
        super().setUp()
        User = get_user_model()
        User.objects.using(PRIMARY).all().delete()
        self.user = User.objects.create_user(username="john", password="x")
        self.admin = User.objects.create_superuser(username="admin", password="x")

    def lag(self):
        """Let the replica catch up with what was set up, then freeze it."""
        self.pair.catch_up(PRIMARY, REPLICA)
        self.pair.pause(REPLICA)
        self.addCleanup(self.pair.resume, REPLICA)

    def assert_refused_everywhere(self, token):
        self.assertIsNone(get_user(token))
        from asgiref.sync import async_to_sync

        self.assertIsNone(async_to_sync(aget_user)(token))
        for path in ["/login/", "/decorated/", "/adecorated/"]:
            with self.subTest(path=path):
                response = self.client.get(path, {"sesame": token})
                self.assertEqual(response.status_code, 403)
        # The middleware goes on anonymously.
        response = self.client.get("/user/", {"sesame": token})
        self.assertEqual(response.content, b"anonymous")

    def test_used_up_link(self):
        token, record = issue_token(self.user, max_uses=1)
        self.lag()
        self.assertEqual(self.client.get("/login/", {"sesame": token}).status_code, 302)
        self.client.logout()
        # The replica still shows the link unused...
        self.assertEqual(
            IssuedToken.objects.using(REPLICA).get(pk=record.pk).use_count, 0
        )
        # ...and the primary refuses it.
        self.assert_refused_everywhere(token)
        self.assertEqual(
            IssuedToken.objects.using(PRIMARY).get(pk=record.pk).use_count, 1
        )
        self.assertTrue(
            TokenEvent.objects.using(PRIMARY)
            .filter(token_id=record.pk, kind="rejected", reason="used_up")
            .exists()
        )

    def test_revoked_link(self):
        token, record = issue_token(self.user)
        self.lag()
        IssuedToken.objects.filter(pk=record.pk).revoke()
        self.assertIsNone(
            IssuedToken.objects.using(REPLICA).get(pk=record.pk).revoked_at
        )
        self.assert_refused_everywhere(token)
        self.assertTrue(
            TokenEvent.objects.using(PRIMARY)
            .filter(token_id=record.pk, kind="rejected", reason="revoked")
            .exists()
        )

    def test_deactivated_user(self):
        stateless = get_token(self.user)
        stored, _ = issue_token(self.user)
        self.lag()
        get_user_model().objects.filter(pk=self.user.pk).update(is_active=False)
        self.assertTrue(
            get_user_model().objects.using(REPLICA).get(pk=self.user.pk).is_active
        )
        self.assert_refused_everywhere(stateless)
        self.assert_refused_everywhere(stored)

    def test_changed_password(self):
        stateless = get_token(self.user)
        stored, _ = issue_token(self.user)
        self.lag()
        user = get_user_model().objects.using(PRIMARY).get(pk=self.user.pk)
        user.set_password("changed")
        user.save(using=PRIMARY)
        self.assertNotEqual(
            get_user_model().objects.using(REPLICA).get(pk=self.user.pk).password,
            user.password,
        )
        self.assert_refused_everywhere(stateless)
        self.assert_refused_everywhere(stored)

    def test_admin_pages(self):
        token, record = issue_token(self.user)
        self.lag()
        self.client.force_login(self.admin)
        changelist = reverse("admin:sesame_db_issuedtoken_changelist")
        self.assertEqual(self.client.get(changelist).status_code, 200)
        change = reverse("admin:sesame_db_issuedtoken_change", args=[record.pk])
        self.assertEqual(self.client.get(change).status_code, 200)
        # Revoking from the admin writes to the primary, and the link is
        # refused at once, while the replica lags.
        response = self.client.post(
            changelist,
            {
                "action": "revoke_selected",
                "_selected_action": [record.pk],
                "post": "yes",
                "reason": "lost laptop",
            },
        )
        self.assertEqual(response.status_code, 302)
        self.assertIsNotNone(
            IssuedToken.objects.using(PRIMARY).get(pk=record.pk).revoked_at
        )
        self.client.logout()
        self.assertIsNone(get_user(token))

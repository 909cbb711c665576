"""
Migration 0003_guest_links, forward and backward, on a table that holds links.

"""

from __future__ import annotations

from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor
from django.test import TransactionTestCase
from django.utils import timezone

BEFORE = [("sesame_db", "0002_tokenevent_reason_rate_limited")]
AFTER = [("sesame_db", "0003_guest_links")]


class GuestLinksMigrationTests(TransactionTestCase):
    def migrate(self, targets):
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)
        executor.loader.build_graph()
        return executor.loader.project_state(targets).apps

    def setUp(self):
        # Leave the schema complete for the next tests, even if one fails.
        self.addCleanup(call_command, "migrate", "sesame_db", verbosity=0)
        apps = self.migrate(BEFORE)
        User = apps.get_model("auth", "User")
        IssuedToken = apps.get_model("sesame_db", "IssuedToken")
        self.user = User.objects.create(username="alice")
        now = timezone.now()
        self.link = IssuedToken.objects.create(
            user_id=self.user.pk,
            scope="report:1",
            user_digest="x" * 32,
            created=now,
            modified=now,
        )

    def test_forward_keeps_links_and_enforces_invariant(self):
        apps = self.migrate(AFTER)
        IssuedToken = apps.get_model("sesame_db", "IssuedToken")
        link = IssuedToken.objects.get(pk=self.link.pk)
        self.assertEqual(link.user_id, self.user.pk)
        self.assertEqual(link.recipient, "")
        self.assertFalse(link.bind_to_browser)
        now = timezone.now()
        fields = {"user_digest": "", "created": now, "modified": now}
        guest = IssuedToken.objects.create(
            recipient="bob@example.com", scope="report:1", **fields
        )
        self.assertIsNone(guest.user_id)
        # Neither a user nor a recipient: refused by the database.
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.create(scope="report:1", **fields)
        # A guest link without a scope: refused too.
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.create(recipient="bob@example.com", **fields)
        # The previous version's INSERT, during a rolling deployment, still
        # makes a user link: the new columns have database defaults.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sesame_db_issuedtoken (created, modified, user_id, scope, "
                "label, use_count, revoke_reason, user_digest) "
                "VALUES (%s, %s, %s, 's', '', 0, '', '')",
                [now, now, self.user.pk],
            )
        old = IssuedToken.objects.get(scope="s")
        self.assertEqual((old.recipient, old.bind_to_browser), ("", False))

    def test_backward_refused_with_guest_links(self):
        apps = self.migrate(AFTER)
        IssuedToken = apps.get_model("sesame_db", "IssuedToken")
        now = timezone.now()
        guest = IssuedToken.objects.create(
            recipient="bob@example.com",
            scope="report:1",
            user_digest="",
            created=now,
            modified=now,
        )
        with self.assertRaisesMessage(IrreversibleError, "1 guest link(s) exist"):
            self.migrate(BEFORE)
        # Nothing was undone: the guest link is still there.
        apps = self.migrate(AFTER)
        IssuedToken = apps.get_model("sesame_db", "IssuedToken")
        self.assertTrue(IssuedToken.objects.filter(pk=guest.pk).exists())
        IssuedToken.objects.filter(pk=guest.pk).delete()
        # Without guest links, it's reversible, and the user links remain.
        apps = self.migrate(BEFORE)
        IssuedToken = apps.get_model("sesame_db", "IssuedToken")
        self.assertEqual(
            list(IssuedToken.objects.values_list("pk", "user_id")),
            [(self.link.pk, self.user.pk)],
        )
        with connection.cursor() as cursor:
            columns = {
                c.name
                for c in connection.introspection.get_table_description(
                    cursor, "sesame_db_issuedtoken"
                )
            }
        self.assertNotIn("recipient", columns)
        self.assertNotIn("bind_to_browser", columns)
        # The user is required again.
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.create(
                scope="x", user_digest="", created=now, modified=now
            )

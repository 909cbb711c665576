from __future__ import annotations

from io import StringIO
from unittest import mock

from django.core.management import CommandError, call_command
from django.db import connections
from django.test import TestCase

from sesame_db.management.commands.sesame_db_revoke import Command
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token
from tests.mixins import CreateUserMixin


class RevokeCommandTests(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.jane = self.create_user("jane", email="jane@example.com")
        self.admin = self.create_user("admin", email="admin@example.com")
        self.john_a = issue_token(self.user, "a", issued_by=self.admin)
        self.john_b = issue_token(self.user, "b")
        self.jane_a = issue_token(self.jane, "a", issued_by=self.admin)
        self.jane_default = issue_token(self.jane)

    def revoke(self, *args, **kwargs):
        stdout = StringIO()
        call_command("sesame_db_revoke", *args, stdout=stdout, **kwargs)
        return stdout.getvalue().strip()

    def revoked(self):
        return set(
            IssuedToken.objects.filter(revoked_at__isnull=False).values_list(
                "pk", flat=True
            )
        )

    def pks(self, *issued):
        return {record.pk for _, record in issued}

    def test_by_id(self):
        token, record = self.john_a
        self.assertEqual(self.revoke("--id", str(record.pk)), "Revoked 1 link.")
        self.assertEqual(self.revoked(), {record.pk})
        self.assertIsNone(get_user(token, "a"))

    def test_by_ids(self):
        ids = [str(pk) for pk in self.pks(self.john_a, self.jane_a)]
        self.assertEqual(self.revoke("--id", *ids), "Revoked 2 links.")
        self.assertEqual(self.revoked(), self.pks(self.john_a, self.jane_a))

    def test_repeated_id_option(self):
        (_, a), (_, b) = self.john_a, self.jane_a
        self.revoke("--id", str(a.pk), "--id", str(b.pk))
        self.assertEqual(self.revoked(), {a.pk, b.pk})

    def test_by_user(self):
        self.assertEqual(self.revoke("--user", "john"), "Revoked 2 links.")
        self.assertEqual(self.revoked(), self.pks(self.john_a, self.john_b))

    def test_by_user_primary_key(self):
        self.revoke("--user", str(self.jane.pk))
        self.assertEqual(self.revoked(), self.pks(self.jane_a, self.jane_default))

    def test_by_scope(self):
        self.revoke("--scope", "a")
        self.assertEqual(self.revoked(), self.pks(self.john_a, self.jane_a))

    def test_by_empty_scope(self):
        self.revoke("--scope", "")
        self.assertEqual(self.revoked(), self.pks(self.jane_default))

    def test_by_issuer(self):
        self.revoke("--issued-by", "admin")
        self.assertEqual(self.revoked(), self.pks(self.john_a, self.jane_a))

    def test_filters_combine(self):
        self.revoke("--user", "john", "--scope", "a")
        self.assertEqual(self.revoked(), self.pks(self.john_a))

    def test_reason_and_audit(self):
        _, record = self.john_a
        self.revoke("--id", str(record.pk), "--reason", "sent to the wrong person")
        record.refresh_from_db()
        self.assertEqual(record.revoke_reason, "sent to the wrong person")
        self.assertIsNone(record.revoked_by)
        event = TokenEvent.objects.get(kind="revoked")
        self.assertEqual(
            (event.token_id, event.actor_id, event.detail),
            (record.pk, None, "sent to the wrong person"),
        )

    def test_revocation_events_record_the_scope_of_their_link(self):
        _, scoped = issue_token(self.user, scope="report:42")
        self.revoke("--scope", "report:42")
        self.revoke("--id", str(self.john_a[1].pk))
        events = TokenEvent.objects.filter(kind="revoked")
        self.assertEqual(
            {(e.token_id, e.scope) for e in events},
            {(scoped.pk, "report:42"), (self.john_a[1].pk, self.john_a[1].scope)},
        )
        # Filtering the audit by scope finds the revocation with the issue.
        self.assertEqual(
            sorted(
                TokenEvent.objects.filter(scope="report:42").values_list(
                    "kind", flat=True
                )
            ),
            ["issued", "revoked"],
        )

    def test_already_revoked(self):
        _, record = self.john_a
        record.revoke(reason="first")
        self.assertEqual(self.revoke("--user", "john"), "Revoked 1 link.")
        record.refresh_from_db()
        self.assertEqual(record.revoke_reason, "first")

    def test_nothing_to_revoke(self):
        self.assertEqual(self.revoke("--scope", "none"), "Revoked 0 links.")

    def test_dry_run(self):
        self.assertEqual(
            self.revoke("--user", "john", "--dry-run"), "Would revoke 2 links."
        )
        self.assertEqual(self.revoked(), set())
        self.assertFalse(TokenEvent.objects.filter(kind="revoked").exists())

    def test_keyword_arguments(self):
        _, record = self.john_a
        self.revoke(ids=[str(record.pk)], reason="why")
        self.assertEqual(self.revoked(), {record.pk})
        self.revoke(user="jane", dry_run=True)
        self.assertEqual(self.revoked(), {record.pk})

    # Errors: nothing is revoked.

    def assertError(self, message, *args, **kwargs):
        with self.assertRaisesMessage(CommandError, message):
            self.revoke(*args, **kwargs)
        self.assertEqual(self.revoked(), set())
        self.assertFalse(TokenEvent.objects.filter(kind="revoked").exists())

    def test_no_filter(self):
        message = "Choose the links to revoke with --id, --user, --recipient, --scope or --issued-by"
        self.assertError(message)
        self.assertError(message, "--reason", "all")
        self.assertError(message, ids=[])

    def test_unknown_user(self):
        self.assertError(
            "--user: no user has the username or primary key 'bob'", "--user", "bob"
        )

    def test_unknown_issuer(self):
        self.assertError(
            "--issued-by: no user has the username or primary key 'bob'",
            "--issued-by",
            "bob",
        )

    def test_unknown_id(self):
        _, record = self.john_a
        self.assertError(
            "No link with id 999998, 999999; nothing was revoked",
            "--id",
            str(record.pk),
            "999999",
            "999998",
        )

    def test_bad_id(self):
        self.assertError("--id expects link ids, got 'x'", ids=["x"])
        with self.assertRaises(CommandError):
            self.revoke("--id", "x")

    def test_too_long_reason(self):
        self.assertError(
            "--reason is limited to 255 characters",
            "--user",
            "john",
            "--reason",
            "x" * 256,
        )

    def test_exit_status(self):
        stderr = StringIO()
        # run_from_argv() closes database connections, which ends the test's
        # transaction on PostgreSQL.
        with (
            mock.patch.object(connections, "close_all"),
            self.assertRaises(SystemExit) as cm,
        ):
            Command(stderr=stderr).run_from_argv(["manage.py", "sesame_db_revoke"])
        self.assertEqual(cm.exception.code, 1)
        self.assertIn("CommandError: Choose the links to revoke", stderr.getvalue())

    # --user john, two links:
    # 1. SELECT the user by username ("john" isn't an integer primary key).
    # 2. SAVEPOINT: the batch is atomic, nested in the test's transaction.
    # 3. SELECT the ids of the links to revoke, FOR UPDATE.
    # 4. UPDATE them.
    # 5. INSERT the "revoked" events.
    # 6. RELEASE SAVEPOINT.
    REVOKE_BY_USER_QUERIES = 6

    def test_queries(self):
        with self.assertNumQueries(self.REVOKE_BY_USER_QUERIES):
            self.revoke("--user", "john")

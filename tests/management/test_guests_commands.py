"""
sesame_db_issue --guest and sesame_db_revoke --recipient.

"""

from __future__ import annotations

import io

from django.core.management import CommandError, call_command
from django.test import TestCase

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import check_link, issue_guest_token, issue_token
from tests.mixins import CreateUserMixin

GUEST = "guest@example.com"


def run(*args, **kwargs):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, **kwargs)
    return stdout.getvalue().strip(), stderr.getvalue().strip()


class IssueGuestTests(CreateUserMixin, TestCase):
    def test_issue_guest_link(self):
        out, err = run(
            "sesame_db_issue",
            "--guest",
            GUEST,
            "--scope",
            "report:1",
            "--max-uses",
            "2",
            "--bind-to-browser",
            "--url",
            "/shared/1/",
        )
        record = IssuedToken.objects.get()
        self.assertIsNone(record.user)
        self.assertEqual(record.recipient, GUEST)
        self.assertEqual(record.max_uses, 2)
        self.assertTrue(record.bind_to_browser)
        self.assertTrue(out.startswith("/shared/1/?sesame=~"))
        self.assertIn(f"Issued guest link #{record.pk} for {GUEST!r}", err)
        self.assertIn("bound to the first browser", err)
        token = out.split("sesame=")[1]
        self.assertEqual(check_link(token, "report:1", guests=True)[1], record)

    def test_errors(self):
        cases = [
            (["--guest", GUEST], "--guest requires --scope"),
            (["john", "--guest", GUEST, "--scope", "s"], "not both"),
            (["--guest", " ", "--scope", "s"], "1 to 254 characters"),
            ([], "Give the user the link logs in, or --guest RECIPIENT"),
            (["john", "--bind-to-browser"], "guest links only"),
        ]
        for args, message in cases:
            with (
                self.subTest(args=args),
                self.assertRaisesMessage(CommandError, message),
            ):
                run("sesame_db_issue", *args)
        self.assertFalse(IssuedToken.objects.exists())


class RevokeRecipientTests(CreateUserMixin, TestCase):
    def test_revoke_recipient(self):
        _, shared = issue_guest_token(GUEST, "report:1")
        _, other = issue_guest_token("other@example.com", "report:1")
        _, user_link = issue_token(self.user, "report:1")
        out, _ = run(
            "sesame_db_revoke", "--recipient", "Guest@Example.com", "--dry-run"
        )
        self.assertEqual(out, "Would revoke 1 link.")
        out, _ = run("sesame_db_revoke", "--recipient", GUEST, "--reason", "left")
        self.assertEqual(out, "Revoked 1 link.")
        shared.refresh_from_db()
        other.refresh_from_db()
        user_link.refresh_from_db()
        self.assertIsNotNone(shared.revoked_at)
        self.assertIsNone(other.revoked_at)
        self.assertIsNone(user_link.revoked_at)
        event = TokenEvent.objects.get(token=shared, kind="revoked")
        self.assertEqual((event.recipient, event.detail), (GUEST, "left"))

    def test_empty_recipient(self):
        with self.assertRaisesMessage(CommandError, "--recipient expects a recipient"):
            run("sesame_db_revoke", "--recipient", "")

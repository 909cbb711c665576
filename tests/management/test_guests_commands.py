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


class HostileArgumentsTests(CreateUserMixin, TestCase):
    """Text that the database can't compare or store is refused before any query: PostgreSQL refuses NUL."""

    def test_refused_before_any_query(self):
        _, link = issue_guest_token(GUEST, "report:1")
        cases = [
            (["sesame_db_issue", "jo\x00hn"], "user can't contain NUL"),
            (
                ["sesame_db_issue", "john", "--scope", "a\x00"],
                "--scope can't contain NUL",
            ),
            (
                ["sesame_db_issue", "john", "--label", "a\x00"],
                "--label can't contain NUL",
            ),
            (["sesame_db_revoke", "--user", "jo\x00hn"], "--user can't contain NUL"),
            (
                ["sesame_db_revoke", "--issued-by", "\x00"],
                "--issued-by can't contain NUL",
            ),
            (
                ["sesame_db_revoke", "--scope", "report:\x001"],
                "--scope can't contain NUL",
            ),
            (
                ["sesame_db_revoke", "--scope", "report:1", "--reason", "\x00"],
                "--reason can't contain NUL",
            ),
            (
                ["sesame_db_revoke", "--recipient", f"{GUEST}\x00"],
                "--recipient can't contain control characters",
            ),
            (
                ["sesame_db_revoke", "--recipient", "guest\x1b[2J@example.com"],
                "--recipient can't contain control characters",
            ),
            # With --id, whose check queries, still before any query.
            (
                ["sesame_db_revoke", "--id", str(link.pk), "--user", "\x00"],
                "--user can't contain NUL",
            ),
        ]
        for args, message in cases:
            with (
                self.subTest(args=args),
                # Outside assertRaises, which swallows the exception:
                # assertNumQueries doesn't count when one goes through.
                self.assertNumQueries(0),
                self.assertRaisesMessage(CommandError, message),
            ):
                run(*args)
        # Nothing was issued or revoked.
        self.assertEqual(IssuedToken.objects.count(), 1)
        link.refresh_from_db()
        self.assertIsNone(link.revoked_at)

    def test_shared_with_control_characters_finds_none(self):
        issue_guest_token(GUEST, "report:1")
        for recipient in [f"{GUEST}\x00", f"\x07{GUEST}", "guest\x85@example.com"]:
            with self.subTest(recipient=recipient), self.assertNumQueries(0):
                self.assertEqual(list(IssuedToken.objects.shared_with(recipient)), [])
        # Surrounding whitespace, line breaks included, isn't part of it.
        self.assertEqual(IssuedToken.objects.shared_with(f" {GUEST}\n").count(), 1)

    def test_call_command_with_keys(self):
        # call_command() passes keyword arguments as they are: a user's
        # primary key is an int, not a string.
        _, link = issue_token(self.user, "report:1")
        out, _ = run("sesame_db_revoke", user=self.user.pk, dry_run=True)
        self.assertEqual(out, "Would revoke 1 link.")
        out, _ = run("sesame_db_revoke", issued_by=self.user.pk, scope="report:1")
        self.assertEqual(out, "Revoked 0 links.")
        out, _ = run("sesame_db_revoke", user=self.user.pk, scope="report:1")
        self.assertEqual(out, "Revoked 1 link.")
        link.refresh_from_db()
        self.assertIsNotNone(link.revoked_at)

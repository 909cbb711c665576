from __future__ import annotations

import datetime
from io import StringIO
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import time_machine
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import TestCase, override_settings

from sesame_db.management.commands.sesame_db_issue import Command, add_token
from sesame_db.management.users import find_user
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user
from tests.mixins import CreateUserMixin

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


class IssueCommandTests(CreateUserMixin, TestCase):
    def issue(self, *args, **kwargs):
        stdout, stderr = StringIO(), StringIO()
        call_command("sesame_db_issue", *args, stdout=stdout, stderr=stderr, **kwargs)
        self.stderr = stderr.getvalue()
        return stdout.getvalue().strip()

    def assertNothingIssued(self):
        self.assertFalse(IssuedToken.objects.exists())

    def test_prints_a_working_token(self):
        token = self.issue("john")
        self.assertTrue(token.startswith("~"))
        self.assertEqual(get_user(token), self.user)
        record = IssuedToken.objects.get()
        self.assertEqual(record.user, self.user)
        self.assertEqual((record.scope, record.label, record.max_uses), ("", "", None))
        self.assertIsNone(record.issued_by)
        self.assertIn(f"Issued link #{record.pk} for 'john'", self.stderr)
        self.assertIn("no scope, doesn't expire, unlimited uses.", self.stderr)
        self.assertNotIn(token, self.stderr)

    def test_issued_event(self):
        self.issue("john", "--label", "support ticket 12")
        event = TokenEvent.objects.get()
        self.assertEqual((event.kind, event.detail), ("issued", "support ticket 12"))

    def test_by_primary_key(self):
        token = self.issue(str(self.user.pk))
        self.assertEqual(get_user(token), self.user)

    def test_options(self):
        with time_machine.travel(NOW, tick=False):
            token = self.issue(
                "john",
                "--scope",
                "report:42",
                "--expires-in",
                "90",
                "--max-uses",
                "3",
                "--label",
                "board",
            )
            record = IssuedToken.objects.get()
            self.assertEqual(record.scope, "report:42")
            self.assertEqual(record.expires_at, NOW + datetime.timedelta(minutes=90))
            self.assertEqual((record.max_uses, record.label), (3, "board"))
            self.assertIn(
                "scope 'report:42', expires at 2025-03-01 13:30:00 UTC, 3 uses.",
                self.stderr,
            )
            self.assertIsNone(get_user(token))
            self.assertEqual(get_user(token, "report:42"), self.user)

    def test_keyword_arguments(self):
        # call_command() doesn't convert keyword arguments: the command does.
        self.issue("john", expires_in=1.5, max_uses=1)
        record = IssuedToken.objects.get()
        self.assertEqual(record.max_uses, 1)
        assert record.expires_at is not None
        self.assertEqual(
            record.expires_at - record.created, datetime.timedelta(seconds=90)
        )

    @override_settings(SESAME_MAX_AGE=600)
    def test_expiry_defaults_to_max_age(self):
        self.issue("john")
        record = IssuedToken.objects.get()
        assert record.expires_at is not None
        self.assertEqual(
            record.expires_at - record.created, datetime.timedelta(minutes=10)
        )

    def test_one_use(self):
        self.issue("john", "--max-uses", "1")
        self.assertIn("1 use.", self.stderr)

    def test_url(self):
        link = self.issue(
            "john", "--url", "https://example.com/login/?next=/reports/#top"
        )
        parts = urlsplit(link)
        self.assertEqual(
            (parts.scheme, parts.netloc, parts.path, parts.fragment),
            ("https", "example.com", "/login/", "top"),
        )
        query = parse_qs(parts.query)
        self.assertEqual(query["next"], ["/reports/"])
        self.assertEqual(get_user(query["sesame"][0]), self.user)

    def test_path(self):
        link = self.issue("john", "--url", "/login/")
        self.assertTrue(link.startswith("/login/?sesame=~"))

    def test_url_pattern_name(self):
        link = self.issue("john", "--url", "login")
        self.assertTrue(link.startswith("/login/?sesame=~"))

    @override_settings(SESAME_TOKEN_NAME="magic")
    def test_url_replaces_a_token(self):
        link = self.issue("john", "--url", "/login/?magic=old&x=1")
        query = parse_qs(urlsplit(link).query)
        self.assertEqual(query["x"], ["1"])
        [token] = query["magic"]
        self.assertEqual(get_user(token), self.user)

    def test_verbosity_0(self):
        token = self.issue("john", verbosity=0)
        self.assertEqual(self.stderr, "")
        self.assertEqual(get_user(token), self.user)

    def test_inactive_user(self):
        self.user.is_active = False
        self.user.save()
        self.issue("john")
        self.assertIn("Warning: 'john' is inactive", self.stderr)
        self.assertTrue(IssuedToken.objects.exists())

    # Errors: nothing is issued.

    def test_unknown_user(self):
        with self.assertRaisesMessage(
            CommandError, "user: no user has the username or primary key 'jane'"
        ):
            self.issue("jane")
        self.assertNothingIssued()

    def test_unknown_primary_key(self):
        for value in ["999", "99999999999999999999999"]:
            with self.subTest(value=value), self.assertRaises(CommandError):
                self.issue(value)
        self.assertNothingIssued()

    def test_several_users_with_the_username(self):
        # Possible when USERNAME_FIELD isn't unique, which Django allows with
        # a custom authentication backend (check auth.W004).
        User = type(self.user)
        with (
            mock.patch.object(
                type(User._default_manager),
                "get",
                side_effect=User.MultipleObjectsReturned,
            ),
            self.assertRaisesMessage(
                CommandError, "user: several users have the username 'john'"
            ),
        ):
            self.issue("john")
        self.assertNothingIssued()

    def test_ambiguous_user(self):
        other = self.create_user(str(self.user.pk), email="other@example.com")
        with self.assertRaisesMessage(
            CommandError,
            f"user {str(self.user.pk)!r} is ambiguous: it's the username of the user with primary key {other.pk!r} and the primary key of 'john'; pass 'john' for the latter",
        ):
            self.issue(str(self.user.pk))
        self.assertNothingIssued()

    def test_bad_expires_in(self):
        for value in ["soon", "0", "-5", "nan", "inf", "1e12"]:
            with (
                self.subTest(value=value),
                self.assertRaisesMessage(CommandError, "--expires-in expects"),
            ):
                self.issue("john", "--expires-in", value)
        self.assertNothingIssued()

    def test_bad_max_uses(self):
        for value, message in [
            ("many", "--max-uses expects an integer, got 'many'"),
            ("1.5", "--max-uses expects an integer, got '1.5'"),
            ("0", "--max-uses must be at least 1, got '0'"),
        ]:
            with (
                self.subTest(value=value),
                self.assertRaisesMessage(CommandError, message),
            ):
                self.issue("john", "--max-uses", value)
        self.assertNothingIssued()

    def test_bad_url_name(self):
        with self.assertRaisesMessage(
            CommandError, "--url expects a URL, a path or the name"
        ):
            self.issue("john", "--url", "no-such-pattern")
        self.assertNothingIssued()

    def test_too_long(self):
        with self.assertRaisesMessage(CommandError, "limited to 255 characters"):
            self.issue("john", "--label", "x" * 256)
        self.assertNothingIssued()

    def test_exit_status(self):
        stderr = StringIO()
        command = Command(stderr=stderr)
        # run_from_argv() closes database connections, which ends the test's
        # transaction on PostgreSQL.
        with (
            mock.patch.object(connections, "close_all"),
            self.assertRaises(SystemExit) as cm,
        ):
            command.run_from_argv(["manage.py", "sesame_db_issue", "nobody"])
        self.assertEqual(cm.exception.code, 1)
        self.assertIn("CommandError: user: no user has the username", stderr.getvalue())
        self.assertNothingIssued()

    def test_no_token_in_logs(self):
        with self.assertLogs("sesame_db", "DEBUG") as logs:
            token = self.issue("john")
            # At least one line, so that assertLogs doesn't fail.
            get_user("junk")
        self.assertNotIn(token, "\n".join(logs.output))


class AddTokenTests(TestCase):
    def test_add_token(self):
        self.assertEqual(add_token("/a/", "~t"), "/a/?sesame=~t")
        self.assertEqual(add_token("/a/?b=1&b=2", "t"), "/a/?b=1&b=2&sesame=t")
        self.assertEqual(add_token("/a/?sesame=old&c=", "t"), "/a/?c=&sesame=t")


@override_settings(AUTH_USER_MODEL="tests.UUIDUser")
class FindUUIDUserTests(CreateUserMixin, TestCase):
    def test_username_and_primary_key(self):
        self.assertEqual(find_user("john", "--user"), self.user)
        self.assertEqual(find_user(str(self.user.pk), "--user"), self.user)
        with self.assertRaisesMessage(
            CommandError, "--user: no user has the username or primary key 'jane'"
        ):
            find_user("jane", "--user")


@override_settings(AUTH_USER_MODEL="tests.StrUser")
class FindStrUserTests(CreateUserMixin, TestCase):
    def test_username_and_primary_key(self):
        self.assertEqual(self.user.pk, "user-john")
        self.assertEqual(find_user("john", "--user"), self.user)
        self.assertEqual(find_user("user-john", "--user"), self.user)

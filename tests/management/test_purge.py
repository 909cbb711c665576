from __future__ import annotations

import datetime
from io import StringIO
from typing import Any

from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import issue_token
from tests.mixins import CreateUserMixin

DAY = datetime.timedelta(days=1)


class PurgeTests(CreateUserMixin, TestCase):
    """
    Rows get explicit timestamps relative to now: the command compares with
    timezone.now(), and the defaults are 30 days for tokens and 365 for events.
    """

    # --dry-run: 1. COUNT the tokens. 2. COUNT the events.
    DRY_RUN_QUERIES = 2

    def setUp(self):
        super().setUp()
        now = timezone.now()
        old, young = now - 31 * DAY, now - 29 * DAY
        states: dict[str, dict[str, Any]] = {
            # Deleted with the default retention of 30 days.
            "revoked_old": {"revoked_at": old},
            "expired_old": {"expires_at": old},
            "used_up_old": {"max_uses": 1, "use_count": 1, "last_used_at": old},
            # Kept.
            "revoked_young": {"revoked_at": young},
            "expired_young": {"expires_at": young},
            "used_up_young": {"max_uses": 1, "use_count": 1, "last_used_at": young},
            "active_old": {"created": old - 300 * DAY, "last_used_at": old},
            "active_until_later": {"created": old, "expires_at": now + DAY},
            "limited_old": {"max_uses": 2, "use_count": 1, "last_used_at": old},
        }
        self.tokens = {}
        for name, fields in states.items():
            _, record = issue_token(self.user)
            IssuedToken.objects.filter(pk=record.pk).update(**fields)
            self.tokens[name] = record.pk
        # Every issued event is from now; add events of various ages.
        self.events = {}
        for name, age in [("event_old", 366 * DAY), ("event_young", 364 * DAY)]:
            event = TokenEvent.objects.create(
                kind=TokenEvent.Kind.REJECTED, reason="bad_signature"
            )
            TokenEvent.objects.filter(pk=event.pk).update(created_at=now - age)
            self.events[name] = event.pk

    def purge(self, *args, **settings):
        out = StringIO()
        with override_settings(**settings):
            call_command("sesame_db_purge", *args, stdout=out)
        return out.getvalue()

    def remaining_tokens(self):
        pks = set(IssuedToken.objects.values_list("pk", flat=True))
        return {name for name, pk in self.tokens.items() if pk in pks}

    def remaining_events(self):
        pks = set(TokenEvent.objects.values_list("pk", flat=True))
        return {name for name, pk in self.events.items() if pk in pks}

    def kept(self, *deleted):
        return set(self.tokens) - set(deleted)

    def test_default_retention(self):
        output = self.purge()
        self.assertEqual(output, "Deleted 3 issued links and 1 link events.\n")
        self.assertEqual(
            self.remaining_tokens(),
            self.kept("revoked_old", "expired_old", "used_up_old"),
        )
        self.assertEqual(self.remaining_events(), {"event_young"})

    def test_events_outlive_their_tokens(self):
        deleted = self.tokens["revoked_old"]
        self.purge()
        self.assertFalse(IssuedToken.objects.filter(pk=deleted).exists())
        self.assertTrue(TokenEvent.objects.filter(token_id=deleted).exists())

    def test_token_retention_setting(self):
        output = self.purge(SESAME_TOKEN_RETENTION=datetime.timedelta(days=10))
        self.assertEqual(output, "Deleted 6 issued links and 1 link events.\n")
        self.assertEqual(
            self.remaining_tokens(),
            {"active_old", "active_until_later", "limited_old"},
        )

    def test_token_retention_setting_in_seconds(self):
        self.purge(SESAME_TOKEN_RETENTION=40 * 86400)
        self.assertEqual(self.remaining_tokens(), self.kept())

    def test_token_retention_option(self):
        self.assertEqual(
            self.purge("--token-retention", "40"),
            "Deleted 0 issued links and 1 link events.\n",
        )
        self.assertEqual(self.remaining_tokens(), self.kept())
        self.purge("--token-retention", "10")
        self.assertEqual(
            self.remaining_tokens(),
            {"active_old", "active_until_later", "limited_old"},
        )

    def test_token_retention_option_overrides_setting(self):
        self.purge("--token-retention=40", SESAME_TOKEN_RETENTION=DAY)
        self.assertEqual(self.remaining_tokens(), self.kept())

    def test_fractional_days(self):
        # 30.5 days: only the tokens finished 31 days ago go.
        self.purge("--token-retention", "30.5")
        self.assertEqual(
            self.remaining_tokens(),
            self.kept("revoked_old", "expired_old", "used_up_old"),
        )

    def test_event_retention_setting(self):
        self.purge(SESAME_EVENT_RETENTION=datetime.timedelta(days=400))
        self.assertEqual(self.remaining_events(), {"event_old", "event_young"})
        self.purge(SESAME_EVENT_RETENTION=datetime.timedelta(days=100))
        self.assertEqual(self.remaining_events(), set())
        # The issued events of today stay.
        self.assertEqual(
            TokenEvent.objects.filter(kind="issued").count(), len(self.tokens)
        )

    def test_event_retention_option(self):
        output = self.purge("--event-retention", "100")
        self.assertEqual(output, "Deleted 3 issued links and 2 link events.\n")
        self.assertEqual(self.remaining_events(), set())

    def test_dry_run(self):
        tokens, events = IssuedToken.objects.count(), TokenEvent.objects.count()
        with self.assertNumQueries(self.DRY_RUN_QUERIES):
            output = self.purge("--dry-run")
        self.assertEqual(output, "Would delete 3 issued links and 1 link events.\n")
        self.assertEqual(IssuedToken.objects.count(), tokens)
        self.assertEqual(TokenEvent.objects.count(), events)

    def test_dry_run_with_options(self):
        output = self.purge(
            "--dry-run", "--token-retention", "10", "--event-retention", "100"
        )
        self.assertEqual(output, "Would delete 6 issued links and 2 link events.\n")
        self.assertEqual(self.remaining_tokens(), self.kept())

    def test_dry_run_counts_what_a_run_deletes(self):
        dry = self.purge("--dry-run")
        real = self.purge()
        self.assertEqual(dry.replace("Would delete", "Deleted"), real)

    def test_nothing_to_delete(self):
        self.purge()
        self.assertEqual(self.purge(), "Deleted 0 issued links and 0 link events.\n")

    def test_batch_size(self):
        IssuedToken.objects.all().delete()
        TokenEvent.objects.all().delete()
        old = timezone.now() - 31 * DAY
        for _ in range(25):
            issue_token(self.user)
        IssuedToken.objects.update(revoked_at=old)
        TokenEvent.objects.update(created_at=old - 366 * DAY)
        with CaptureQueriesContext(connection) as queries:
            output = self.purge("--batch-size", "10")
        self.assertEqual(output, "Deleted 25 issued links and 25 link events.\n")
        deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
        token_table = IssuedToken._meta.db_table
        event_table = TokenEvent._meta.db_table
        # Batches of 10, 10 and 5 for each table; no cascades.
        self.assertEqual(len([sql for sql in deletes if token_table in sql]), 3)
        self.assertEqual(len([sql for sql in deletes if event_table in sql]), 3)
        self.assertEqual(len(deletes), 6)
        self.assertFalse(IssuedToken.objects.exists())
        self.assertFalse(TokenEvent.objects.exists())

    def test_bad_arguments(self):
        tokens, events = IssuedToken.objects.count(), TokenEvent.objects.count()
        for args, message in [
            (
                ["--token-retention", "-1"],
                "expected a number of days between 0 and 36500, got '-1'",
            ),
            (
                ["--event-retention", "-0.5"],
                "expected a number of days between 0 and 36500, got '-0.5'",
            ),
            (
                ["--token-retention", "a week"],
                "expected a number of days, got 'a week'",
            ),
            (["--event-retention", "nan"], "'nan'"),
            (["--batch-size", "0"], "--batch-size must be at least 1"),
            (["--batch-size", "-5"], "--batch-size must be at least 1"),
            (["--batch-size", "ten"], "--batch-size"),
        ]:
            with (
                self.subTest(args=args),
                self.assertRaisesMessage(CommandError, message),
            ):
                self.purge(*args)
        self.assertEqual(IssuedToken.objects.count(), tokens)
        self.assertEqual(TokenEvent.objects.count(), events)

    # Regression: --token-retention 0 parsed to timedelta(0), which is falsy,
    # so the setting was used instead.
    def test_zero_retention(self):
        output = self.purge("--token-retention", "0", "--event-retention", "0")
        self.assertEqual(
            self.remaining_tokens(),
            {"active_old", "active_until_later", "limited_old"},
        )
        self.assertEqual(self.remaining_events(), set())
        self.assertTrue(output.startswith("Deleted 6 issued links"))

    # Regression: huge values raised OverflowError instead of CommandError.
    def test_huge_retention(self):
        for value in ("1e9", "inf", "999999"):
            with self.subTest(value=value), self.assertRaises(CommandError):
                self.purge("--token-retention", value)

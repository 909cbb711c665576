"""
The audit trail at volume: its documented queries use indexes, and purging is bounded (docs/scale.rst).

A site with 10^7 events can't be built in a test run; 10^5 rows, with the
same shape, are enough for the planner to decide as it would at 10^7. What
makes it choose an index is selectivity: here a link has 10 events, a user
100, a client address 10, and an hour 0.04 % of the rows, fractions that
only shrink as the table grows, so a plan that uses the index at 10^5 uses
it at 10^7. ANALYZE gives the planner the table's real statistics, as
autovacuum would on a live site; sequential scans stay enabled, so a
``Seq Scan`` in a plan means the planner preferred one, which is what the
tests must catch. (With ``enable_seqscan = off``, a missing index would
still show as a disabled sequential scan, but a plan that the planner would
never pick on its own could pass.)
"""

from __future__ import annotations

import datetime
import io
import tracemalloc

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from sesame_db.models import TokenEvent

pytestmark = pytest.mark.postgresql

EVENTS = 100_000
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
# One event every 86.4 seconds: 100 days.
STEP = datetime.timedelta(days=100) / EVENTS


def fill_events(count, start=START, step=STEP):
    """Insert ``count`` events with INSERT ... SELECT: 10 per link, 100 per user, 10 per client address."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {TokenEvent._meta.db_table}
                (created_at, kind, reason, token_id, user_id, actor_id, scope,
                 detail, ip, user_agent, method, path)
            SELECT %s + i * %s,
                   (ARRAY['issued', 'used', 'used', 'rejected'])[1 + i %% 4],
                   CASE WHEN i %% 4 = 3 THEN 'expired' ELSE '' END,
                   i / 10, i %% 1000, NULL, '', '',
                   ('10.0.0.0'::inet + (i %% 10000)), 'Mozilla/5.0', 'GET', '/login/'
            FROM generate_series(0, %s - 1) AS i
            """,
            [start, step, count],
        )


class AuditQueryPlanTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        fill_events(EVENTS)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {TokenEvent._meta.db_table}")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        # ANALYZE writes its statistics in place, so the rollback of the
        # class's transaction keeps them: analyze the empty table again,
        # or the admin's paginator would take it for 10^5 rows in the
        # tests that come after.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {TokenEvent._meta.db_table}")

    def plan(self, queryset):
        return queryset.explain()

    def assert_uses_index(self, queryset, *indexes):
        plan = self.plan(queryset)
        self.assertTrue(
            any(f"Index Scan using {index}" in plan for index in indexes)
            or any(f"Bitmap Index Scan on {index}" in plan for index in indexes),
            plan,
        )
        self.assertNotIn("Seq Scan", plan)
        # The answer isn't empty: the plan isn't that of an empty range.
        self.assertTrue(queryset.exists())

    def test_events_of_a_link(self):
        self.assert_uses_index(
            TokenEvent.objects.filter(token_id=4321).order_by("-created_at")[:50],
            "sesame_db_event_token_idx",
        )

    def test_events_of_a_user(self):
        self.assert_uses_index(
            TokenEvent.objects.filter(user_id=432).order_by("-created_at")[:50],
            "sesame_db_event_user_idx",
        )

    def test_events_of_a_client_address(self):
        self.assert_uses_index(
            TokenEvent.objects.filter(ip="10.0.16.5").order_by("-created_at")[:50],
            "sesame_db_event_ip_idx",
        )

    def test_events_of_an_hour(self):
        start = START + datetime.timedelta(days=42)
        self.assert_uses_index(
            TokenEvent.objects.filter(
                created_at__gte=start,
                created_at__lt=start + datetime.timedelta(hours=1),
            ).order_by("-created_at"),
            "sesame_db_event_created_idx",
        )

    def test_rejections_of_a_day(self):
        start = START + datetime.timedelta(days=42)
        self.assert_uses_index(
            TokenEvent.objects.filter(
                kind="rejected",
                created_at__gte=start,
                created_at__lt=start + datetime.timedelta(days=1),
            ).order_by("-created_at"),
            "sesame_db_event_kind_idx",
            # A quarter of the events are rejections: the day narrows more.
            "sesame_db_event_created_idx",
        )

    def test_latest_events(self):
        self.assert_uses_index(
            TokenEvent.objects.order_by("-created_at")[:100],
            "sesame_db_event_created_idx",
        )

    def test_purge_batch_boundary(self):
        # What sesame_db_purge asks for each batch: the key that ends it.
        cutoff = START + datetime.timedelta(days=30)
        plan = self.plan(
            TokenEvent.objects.filter(created_at__lt=cutoff)
            .order_by("pk")
            .values_list("pk", flat=True)[999:1000]
        )
        self.assertIn(f"{TokenEvent._meta.db_table}_pkey", plan)
        self.assertNotIn("Seq Scan", plan)


class PurgeVolumeTests(TestCase):
    """Purging deletes in batches of a bounded size: a fixed number of queries per batch, and memory that doesn't grow with the rows."""

    BATCH = 1000

    def fill(self, old):
        now = timezone.now()
        fill_events(
            old,
            start=now - datetime.timedelta(days=400),
            step=datetime.timedelta(seconds=1),
        )
        fill_events(500, start=now - datetime.timedelta(hours=1), step=STEP / 100)

    def purge(self):
        call_command(
            "sesame_db_purge",
            f"--batch-size={self.BATCH}",
            "--event-retention=365",
            stdout=io.StringIO(),
        )

    def test_queries_per_batch(self):
        self.fill(5_500)
        # Per batch: 1. the key that ends it, 2. DELETE; then the last,
        # partial batch; links: one of each.
        with self.assertNumQueries(2 * (5_500 // self.BATCH + 1) + 2):
            self.purge()
        self.assertEqual(TokenEvent.objects.count(), 500)

    def peak(self, old):
        self.fill(old)
        tracemalloc.start()
        try:
            self.purge()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(TokenEvent.objects.count(), 500)
        TokenEvent.objects.all().delete()
        return peak

    def test_memory_does_not_grow_with_the_rows(self):
        # Not under assertNumQueries, which keeps every query: the purge
        # keeps nothing from one batch to the next. A first run loads the
        # command's modules.
        self.peak(1_000)
        small = self.peak(5_000)
        large = self.peak(40_000)
        # Eight times the rows: the peak stays that of one batch, give or
        # take garbage that the collector hasn't reclaimed yet. Listing the
        # keys of 35,000 more rows alone would take over a megabyte.
        self.assertLess(large, small + 256 * 1024)

"""
The SQL of docs/scale/, run on a real PostgreSQL: monthly partitions of the audit trail.

PostgreSQL's DDL is transactional: each test converts the table inside the
test's transaction, which rolls it back.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token

from .mixins import CreateUserMixin

pytestmark = pytest.mark.postgresql

SQL = Path(__file__).resolve().parent.parent / "docs" / "scale"


def run_sql(name):
    with connection.cursor() as cursor:
        cursor.execute((SQL / name).read_text())


def query(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def month_start(when, months=0):
    month = when.year * 12 + when.month - 1 + months
    return when.replace(
        year=month // 12,
        month=month % 12 + 1,
        day=1,
        hour=0,
        minute=0,
        second=0,
        microsecond=0,
    )


def partition_of(event):
    return query(
        f"SELECT tableoid::regclass::text FROM {TokenEvent._meta.db_table} WHERE id = %s",
        [event.pk],
    )[0][0]


class PartitionTests(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        # A live trail: links issued, used, rejected.
        self.token, self.record = issue_token(self.user, max_uses=1)
        self.assertEqual(get_user(self.token), self.user)
        self.assertIsNone(get_user(self.token))
        self.old_ids = set(TokenEvent.objects.values_list("pk", flat=True))
        self.assertEqual(len(self.old_ids), 3)
        run_sql("event_partitions.sql")
        run_sql("partition_events.sql")

    def test_table_is_partitioned_with_the_old_rows_in_the_first_partition(self):
        self.assertEqual(
            query(
                "SELECT relkind FROM pg_class WHERE relname = 'sesame_db_tokenevent'"
            ),
            [("p",)],
        )
        for event in TokenEvent.objects.all():
            self.assertEqual(partition_of(event), "sesame_db_tokenevent_unpartitioned")
        self.assertEqual(
            set(TokenEvent.objects.values_list("pk", flat=True)), self.old_ids
        )

    def test_monthly_and_default_partitions(self):
        now = timezone.now()
        names = {
            name
            for (name,) in query(
                "SELECT c.relname FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid "
                "WHERE inhparent = 'sesame_db_tokenevent'::regclass"
            )
        }
        expected = {
            "sesame_db_tokenevent_unpartitioned",
            "sesame_db_tokenevent_default",
        }
        expected |= {
            f"sesame_db_tokenevent_y{month:%Y}m{month:%m}"
            for month in (month_start(now, i) for i in range(1, 4))
        }
        self.assertEqual(names, expected)
        # Idempotent: nothing more to create today.
        self.assertEqual(query("SELECT sesame_db_event_partitions(3)"), [(0,)])
        later = TokenEvent.objects.create(
            kind="used", created_at=month_start(now, 2) + datetime.timedelta(days=3)
        )
        self.assertEqual(
            partition_of(later),
            f"sesame_db_tokenevent_y{month_start(now, 2):%Y}m{month_start(now, 2):%m}",
        )
        far = TokenEvent.objects.create(
            kind="used", created_at=now.replace(year=now.year + 10)
        )
        self.assertEqual(partition_of(far), "sesame_db_tokenevent_default")

    def test_the_store_keeps_working(self):
        token, record = issue_token(self.user, max_uses=2)
        self.assertEqual(get_user(token), self.user)
        IssuedToken.objects.filter(pk=record.pk).revoke(reason="test")
        self.assertIsNone(get_user(token))
        events = TokenEvent.objects.filter(token=record).order_by("pk")
        self.assertEqual(
            [(e.kind, e.reason) for e in events],
            [("issued", ""), ("used", ""), ("revoked", ""), ("rejected", "revoked")],
        )
        # Ids come from the sequence, after those of the old table.
        self.assertGreater(events[0].pk, max(self.old_ids))
        # The documented queries, through the parent table.
        self.assertEqual(TokenEvent.objects.filter(user=self.user).count(), 7)
        self.assertEqual(TokenEvent.objects.filter(token=record).count(), 4)

    def test_indexes_keep_their_names(self):
        indexes = {
            name
            for (name,) in query(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'sesame_db_tokenevent'"
            )
        }
        for name in [
            "sesame_db_tokenevent_pkey",
            "sesame_db_event_created_idx",
            "sesame_db_event_token_idx",
            "sesame_db_event_user_idx",
            "sesame_db_event_kind_idx",
            "sesame_db_event_ip_idx",
        ]:
            self.assertIn(name, indexes)

    def test_purge_command(self):
        TokenEvent.objects.filter(pk__in=self.old_ids).update(
            created_at=timezone.now() - datetime.timedelta(days=500)
        )
        call_command("sesame_db_purge", "--event-retention=365", stdout=io.StringIO())
        self.assertFalse(TokenEvent.objects.filter(pk__in=self.old_ids).exists())

    def test_drop_old_partitions(self):
        now = timezone.now()
        kept = TokenEvent.objects.create(
            kind="used", created_at=month_start(now, 3) + datetime.timedelta(days=1)
        )
        gone = TokenEvent.objects.create(
            kind="used", created_at=month_start(now, 1) + datetime.timedelta(days=1)
        )
        # A negative retention, to drop partitions whose months end before
        # now + 62 days, as a retention would in two months.
        dropped = {
            name
            for (name,) in query(
                "SELECT sesame_db_drop_event_partitions(%s::interval)", ["-62 days"]
            )
        }
        expected = {"sesame_db_tokenevent_unpartitioned"}
        for i in (1, 2, 3):
            if month_start(now, i + 1) <= now + datetime.timedelta(days=62):
                expected.add(
                    f"sesame_db_tokenevent_y{month_start(now, i):%Y}m{month_start(now, i):%m}"
                )
        self.assertEqual(dropped, expected)
        self.assertFalse(TokenEvent.objects.filter(pk=gone.pk).exists())
        self.assertFalse(TokenEvent.objects.filter(pk__in=self.old_ids).exists())
        self.assertTrue(TokenEvent.objects.filter(pk=kept.pk).exists())

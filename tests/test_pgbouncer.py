"""
The store behind PgBouncer in transaction pooling mode (docs/scale.rst).

Between two transactions, a client's connection may move to another server
connection: the store's statements, transactions and row locks must not
depend on session state. tests/pgbouncer.py starts a server and a pooler in
front of it, with fewer server connections (20) than the clients here (32).
These tests start their own servers, so they run in the PostgreSQL run of
the suite only.
"""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.test import SimpleTestCase, override_settings

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_token, get_user, issue_token

from .pgbouncer import Bouncer, Unavailable, start_bouncer
from .replica import add_database, remove_database

ALIAS = "scale_bouncer"
THREADS = 32

pytestmark = pytest.mark.postgresql


def in_parallel(function, count=THREADS):
    """Run ``function(index)`` in ``count`` threads at once, each with its own connection."""
    barrier = threading.Barrier(count)
    results = [None] * count
    errors = []

    def run(index):
        try:
            barrier.wait(timeout=30)
            results[index] = function(index)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [], errors
    return results


@override_settings(DATABASE_ROUTERS=["tests.routers.ScaleBouncerRouter"])
class PgBouncerTests(SimpleTestCase):
    databases = {ALIAS}
    bouncer: Bouncer

    @classmethod
    def setUpClass(cls):
        try:
            cls.bouncer = start_bouncer()
        except Unavailable as exc:
            raise pytest.skip.Exception(str(exc)) from None
        add_database(ALIAS, cls.bouncer.settings())
        super().setUpClass()
        # Migrations run through the pooler too.
        call_command("migrate", database=ALIAS, verbosity=0)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        remove_database(ALIAS)

    def setUp(self):
        super().setUp()
        User = get_user_model()
        TokenEvent.objects.all().delete()
        IssuedToken.objects.all().delete()
        User.objects.all().delete()
        self.user = User.objects.create_user(username="john")

    def test_through_the_pooler(self):
        # The server sees PgBouncer, not a direct connection.
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SHOW port")
            self.assertEqual(cursor.fetchone()[0], str(self.bouncer.cluster_port))
        self.assertEqual(
            connections[ALIAS].settings_dict["PORT"], str(self.bouncer.port)
        )

    def test_exactly_once_under_32_parallel_uses(self):
        for max_uses in [1, 5]:
            with self.subTest(max_uses=max_uses):
                token, record = issue_token(self.user, max_uses=max_uses)
                users = in_parallel(lambda index, token=token: get_user(token))
                self.assertEqual(sum(user is not None for user in users), max_uses)
                record.refresh_from_db()
                self.assertEqual(record.use_count, max_uses)
                events = TokenEvent.objects.filter(token=record)
                self.assertEqual(events.filter(kind="used").count(), max_uses)
                self.assertTrue(
                    events.filter(kind="rejected", reason="used_up").exists()
                )

    @override_settings(SESAME_ONE_TIME=True)
    def test_one_time_stateless_token_under_32_parallel_uses(self):
        token = get_token(self.user)
        users = in_parallel(lambda index: get_user(token))
        self.assertEqual(sum(user is not None for user in users), 1)

    def test_concurrent_revocations_lock_rows(self):
        records = [issue_token(self.user)[1] for _ in range(20)]
        queryset = IssuedToken.objects.filter(pk__in=[r.pk for r in records])
        revoked = in_parallel(lambda index: queryset.revoke(), count=8)
        # Each link is revoked once, by one of the revocations.
        self.assertEqual(sum(revoked), len(records))
        self.assertEqual(
            TokenEvent.objects.filter(kind="revoked").count(), len(records)
        )

    def test_revocation_during_uses(self):
        token, record = issue_token(self.user, max_uses=100)

        def use_or_revoke(index):
            if index == THREADS // 2:
                return IssuedToken.objects.filter(pk=record.pk).revoke()
            return get_user(token)

        in_parallel(use_or_revoke)
        record.refresh_from_db()
        used = TokenEvent.objects.filter(token=record, kind="used").count()
        # Counts and audit agree, and no use is recorded after the revocation.
        self.assertEqual(record.use_count, used)
        self.assertFalse(
            TokenEvent.objects.filter(
                token=record, kind="used", created_at__gt=record.revoked_at
            ).exists()
        )
        self.assertIsNone(get_user(token))

    def test_purge(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.filter(pk=record.pk).revoke()
        call_command(
            "sesame_db_purge",
            "--token-retention=0",
            "--event-retention=0",
            verbosity=0,
        )
        self.assertFalse(IssuedToken.objects.filter(pk=record.pk).exists())

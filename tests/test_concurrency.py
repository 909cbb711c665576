from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TransactionTestCase

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token

THREADS = 32


@pytest.mark.postgresql
class ConcurrentRedemptionTests(TransactionTestCase):
    """Concurrent uses of one link, each with its own connection, never exceed max_uses."""

    def setUp(self):
        self.user = get_user_model().objects.create_user(
            "john", "john@example.com", "letmein"
        )

    def redeem_concurrently(self, token):
        barrier = threading.Barrier(THREADS)
        results: list[object] = [None] * THREADS
        errors = []

        def redeem(index):
            try:
                barrier.wait(timeout=30)
                results[index] = get_user(token)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=redeem, args=(index,)) for index in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        return [user for user in results if user is not None]

    def assertExactUses(self, max_uses):
        token, record = issue_token(self.user, max_uses=max_uses)
        accepted = self.redeem_concurrently(token)
        self.assertEqual(len(accepted), max_uses)
        record.refresh_from_db()
        self.assertEqual(record.use_count, max_uses)
        events = Counter(
            TokenEvent.objects.filter(token=record).values_list("kind", "reason")
        )
        self.assertEqual(
            events,
            {
                (TokenEvent.Kind.ISSUED, ""): 1,
                (TokenEvent.Kind.USED, ""): max_uses,
                # Repeated rejections from one client (here, no request) are
                # recorded once per window: docs/store.rst.
                (TokenEvent.Kind.REJECTED, "used_up"): 1,
            },
        )

    def test_one_time_link(self):
        self.assertExactUses(1)

    def test_five_time_link(self):
        self.assertExactUses(5)

    def test_revocation_during_redemptions(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.filter(pk=record.pk).revoke(reason="leaked")
        self.assertEqual(self.redeem_concurrently(token), [])
        self.assertEqual(
            TokenEvent.objects.filter(token=record, reason="revoked").count(), 1
        )

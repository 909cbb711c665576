from __future__ import annotations

import threading
from collections import Counter
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TransactionTestCase, override_settings

from sesame_db import store, verify
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_token, get_user, issue_token

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

    @override_settings(SESAME_ONE_TIME=True)
    def test_one_time_stateless_token(self):
        # Every thread checks the token before any of them consumes it: the
        # compare-and-set of last_login must let one use win.
        token = get_token(self.user, store=False)
        checked = threading.Barrier(THREADS)
        consume = verify._consume

        def consume_after_all_checks(user):
            checked.wait(timeout=30)
            return consume(user)

        with mock.patch.object(verify, "_consume", consume_after_all_checks):
            accepted = self.redeem_concurrently(token)
        self.assertEqual(len(accepted), 1)

    def test_revocation_during_redemptions(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.filter(pk=record.pk).revoke(reason="leaked")
        self.assertEqual(self.redeem_concurrently(token), [])
        self.assertEqual(
            TokenEvent.objects.filter(token=record, reason="revoked").count(), 1
        )


@pytest.mark.postgresql
class UserChangeDuringRedemptionTests(TransactionTestCase):
    """
    A change of the user, committed from another connection while a redemption is between its SELECT and its UPDATE.

    """

    def setUp(self):
        self.user = get_user_model().objects.create_user(
            "john", "john@example.com", "letmein"
        )

    def redeem_around(self, token, change):
        """Redeem ``token`` in a thread; pause it before the UPDATE, while ``change()`` commits."""
        paused = threading.Event()
        resume = threading.Event()
        consume = store._consume
        outcome: dict[str, object] = {}

        def pause_then_consume(*args):
            paused.set()
            if not resume.wait(timeout=30):  # pragma: no cover - reported below
                raise TimeoutError("not resumed")
            return consume(*args)

        def redeem():
            try:
                outcome["user"] = get_user(token)
            except Exception as exc:  # pragma: no cover - reported below
                outcome["error"] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=redeem)
        with mock.patch("sesame_db.store._consume", pause_then_consume):
            thread.start()
            try:
                self.assertTrue(paused.wait(timeout=30), "the redemption didn't pause")
                # In autocommit: committed when save() returns.
                change(get_user_model().objects.get(pk=self.user.pk))
            finally:
                resume.set()
                thread.join(timeout=60)
        self.assertNotIn("error", outcome)
        return outcome["user"]

    def assertRefused(self, change, reason):
        token, record = issue_token(self.user, max_uses=1)
        self.assertIsNone(self.redeem_around(token, change))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertIsNone(record.last_used_at)
        events = TokenEvent.objects.filter(token=record).exclude(kind="issued")
        self.assertEqual(
            list(events.values_list("kind", "reason")), [("rejected", reason)]
        )

    def test_no_change(self):
        token, record = issue_token(self.user, max_uses=1)
        self.assertEqual(self.redeem_around(token, lambda user: None), self.user)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    def test_password_change(self):
        def change_password(user):
            user.set_password("changed")
            user.save()

        self.assertRefused(change_password, "invalidated")

    def test_deactivation(self):
        def deactivate(user):
            user.is_active = False
            user.save()

        self.assertRefused(deactivate, "inactive_user")

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_email_change(self):
        def change_email(user):
            user.email = "jack@example.com"
            user.save()

        self.assertRefused(change_email, "invalidated")

from __future__ import annotations

import datetime
from typing import Any
from unittest import mock

from django.db import connection
from django.test import RequestFactory, TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sesame_db import store
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.signals import token_revoked
from sesame_db.utils import get_user, issue_token, issue_tokens

from .mixins import CreateUserMixin

HOUR = datetime.timedelta(hours=1)


class SignalReceiver:
    def __init__(self, signal):
        self.calls = []
        signal.connect(self, weak=False)
        self.signal = signal

    def __call__(self, signal, **kwargs):
        self.calls.append(kwargs)

    def disconnect(self):
        self.signal.disconnect(self)


class FiltersTests(CreateUserMixin, TestCase):
    """
    Each token is put in its state with explicit timestamps: the filters
    compare with the database's clock (Now()), which time_machine can't move.
    """

    def setUp(self):
        super().setUp()
        self.other = self.create_user("jane")
        self.admin = self.create_user("admin")
        now = timezone.now()
        self.tokens = {}
        states: dict[str, dict[str, Any]] = {
            "active": {},
            "active_limited": {"max_uses": 2, "use_count": 1},
            "active_until_later": {"expires_at": now + HOUR},
            "expired": {"expires_at": now - HOUR},
            "revoked": {"revoked_at": now - HOUR},
            "revoked_expired": {"revoked_at": now - HOUR, "expires_at": now - HOUR},
            "revoked_used_up": {"revoked_at": now, "max_uses": 1, "use_count": 1},
            "used_up": {"max_uses": 1, "use_count": 1},
            "used_up_expired": {
                "max_uses": 1,
                "use_count": 1,
                "expires_at": now - HOUR,
            },
        }
        for name, fields in states.items():
            _, record = issue_token(self.user)
            IssuedToken.objects.filter(pk=record.pk).update(**fields)
            self.tokens[name] = record.pk

    def pks(self, queryset):
        return set(queryset.values_list("pk", flat=True))

    def named(self, *names):
        return {self.tokens[name] for name in names}

    def test_active(self):
        self.assertEqual(
            self.pks(IssuedToken.objects.active()),
            self.named("active", "active_limited", "active_until_later"),
        )

    def test_revoked(self):
        self.assertEqual(
            self.pks(IssuedToken.objects.revoked()),
            self.named("revoked", "revoked_expired", "revoked_used_up"),
        )

    def test_expired(self):
        self.assertEqual(
            self.pks(IssuedToken.objects.expired()),
            self.named("expired", "used_up_expired"),
        )

    def test_used_up(self):
        self.assertEqual(self.pks(IssuedToken.objects.used_up()), self.named("used_up"))

    def test_filters_partition_tokens_and_agree_with_status(self):
        by_status = {
            "active": IssuedToken.objects.active(),
            "revoked": IssuedToken.objects.revoked(),
            "expired": IssuedToken.objects.expired(),
            "used_up": IssuedToken.objects.used_up(),
        }
        seen: set[int] = set()
        for status, queryset in by_status.items():
            for record in queryset:
                with self.subTest(pk=record.pk):
                    self.assertEqual(record.status, status)
                    self.assertNotIn(record.pk, seen)
                    seen.add(record.pk)
        self.assertEqual(seen, set(self.tokens.values()))

    def test_for_user(self):
        _, theirs = issue_token(self.other)
        self.assertEqual(
            self.pks(IssuedToken.objects.for_user(self.other)), {theirs.pk}
        )
        self.assertEqual(
            self.pks(IssuedToken.objects.for_user(self.user)), set(self.tokens.values())
        )

    def test_for_scope(self):
        _, report = issue_token(self.user, scope="report:1")
        issue_token(self.user, scope="report:2")
        self.assertEqual(
            self.pks(IssuedToken.objects.for_scope("report:1")), {report.pk}
        )
        self.assertEqual(
            self.pks(IssuedToken.objects.for_scope("")), set(self.tokens.values())
        )

    def test_issued_by(self):
        _, by_admin = issue_token(self.other, issued_by=self.admin)
        self.assertEqual(
            self.pks(IssuedToken.objects.issued_by(self.admin)), {by_admin.pk}
        )
        self.assertEqual(self.pks(IssuedToken.objects.issued_by(self.other)), set())
        self.assertEqual(
            self.pks(IssuedToken.objects.issued_by(None)), set(self.tokens.values())
        )

    def test_chaining(self):
        _, theirs = issue_token(self.other, scope="s")
        issue_token(self.other, scope="t")
        self.assertEqual(
            self.pks(IssuedToken.objects.for_user(self.other).for_scope("s").active()),
            {theirs.pk},
        )

    def test_event_for_user(self):
        issue_token(self.other)
        self.assertEqual(
            set(TokenEvent.objects.for_user(self.other).values_list("user", flat=True)),
            {self.other.pk},
        )
        self.assertEqual(
            TokenEvent.objects.for_user(self.user).count(), len(self.tokens)
        )


class RevokeTests(CreateUserMixin, TestCase):
    # Revoking up to 1000 tokens, in the test's transaction:
    # 1. SAVEPOINT: each batch is atomic.
    # 2. SELECT the ids and users of the tokens not revoked yet (FOR UPDATE on
    #    PostgreSQL), in primary key order.
    # 3. UPDATE them all: revoked_at, revoked_by, revoke_reason, modified.
    # 4. INSERT the "revoked" events, one statement.
    # 5. RELEASE SAVEPOINT.
    REVOKE_QUERIES = 5
    # Without auditing, 4. is left out.
    REVOKE_QUERIES_NO_AUDIT = 4
    # Nothing to revoke: SAVEPOINT, SELECT (no rows), RELEASE SAVEPOINT.
    REVOKE_NOTHING_QUERIES = 3
    # 10^4 tokens: 10 full batches, then a batch that finds nothing left.
    # That's the count on PostgreSQL, and on SQLite from Django 6.0.
    REVOKE_10000_QUERIES = 10 * REVOKE_QUERIES + REVOKE_NOTHING_QUERIES
    # Django 5.2 assumes SQLite's historical limit of 999 parameters, so it
    # splits 4. into 14 INSERTs of at most 76 events (999 // 13 columns).
    REVOKE_10000_QUERIES_SQLITE_999 = 10 * (4 + 14) + REVOKE_NOTHING_QUERIES

    def setUp(self):
        super().setUp()
        self.admin = self.create_user("admin")
        self.other = self.create_user("jane")

    def issue(self, count, user=None):
        return [issue_token(user or self.user) for _ in range(count)]

    def test_returns_count_and_records_who_and_why(self):
        records = [record for _, record in self.issue(3)]
        revoked = IssuedToken.objects.filter(
            pk__in=[records[0].pk, records[2].pk]
        ).revoke(by=self.admin, reason="leaked")
        self.assertEqual(revoked, 2)
        rows = {
            row.pk: row
            for row in IssuedToken.objects.filter(pk__in=[r.pk for r in records])
        }
        for record in (records[0], records[2]):
            row = rows[record.pk]
            self.assertIsNotNone(row.revoked_at)
            self.assertEqual(row.revoked_by_id, self.admin.pk)
            self.assertEqual(row.revoke_reason, "leaked")
            self.assertEqual(row.modified, row.revoked_at)
        self.assertIsNone(rows[records[1].pk].revoked_at)

    def test_one_update_per_batch(self):
        self.issue(5)
        with self.assertNumQueries(self.REVOKE_QUERIES):
            self.assertEqual(IssuedToken.objects.revoke(), 5)

    @override_settings(SESAME_AUDIT=False)
    def test_one_update_per_batch_without_audit(self):
        self.issue(5)
        with self.assertNumQueries(self.REVOKE_QUERIES_NO_AUDIT):
            self.assertEqual(IssuedToken.objects.revoke(), 5)
        self.assertFalse(TokenEvent.objects.filter(kind="revoked").exists())

    def test_revoke_10000(self):
        issue_tokens([self.user] * 10_000)
        queries = self.REVOKE_10000_QUERIES
        # PostgreSQL has no limit (None). SQLite's fits batches of 1,000
        # events of 12 columns, except Django 5.2's fixed 999.
        limit = connection.features.max_query_params
        if limit is not None and limit < 12 * store.BATCH_SIZE:
            self.assertEqual(limit, 999, "another limit needs another count")
            queries = self.REVOKE_10000_QUERIES_SQLITE_999
        with self.assertNumQueries(queries):
            self.assertEqual(IssuedToken.objects.revoke(), 10_000)
        self.assertFalse(IssuedToken.objects.filter(revoked_at=None).exists())
        self.assertEqual(TokenEvent.objects.filter(kind="revoked").count(), 10_000)

    def test_nothing_to_revoke(self):
        receiver = SignalReceiver(token_revoked)
        self.addCleanup(receiver.disconnect)
        with (
            self.captureOnCommitCallbacks(execute=True) as callbacks,
            self.assertNumQueries(self.REVOKE_NOTHING_QUERIES),
        ):
            self.assertEqual(IssuedToken.objects.revoke(), 0)
        self.assertEqual(callbacks, [])
        self.assertEqual(receiver.calls, [])

    def test_same_cost_for_one_and_many(self):
        self.issue(1)
        with self.assertNumQueries(self.REVOKE_QUERIES):
            IssuedToken.objects.revoke()
        self.issue(40)
        with self.assertNumQueries(self.REVOKE_QUERIES):
            IssuedToken.objects.revoke()

    def test_batches(self):
        records = [record for _, record in self.issue(5)]
        receiver = SignalReceiver(token_revoked)
        self.addCleanup(receiver.disconnect)
        with (
            mock.patch("sesame_db.managers.BATCH_SIZE", 2),
            CaptureQueriesContext(connection) as queries,
            self.captureOnCommitCallbacks(execute=True),
        ):
            self.assertEqual(IssuedToken.objects.revoke(by=self.admin, reason="r"), 5)
        statements = [query["sql"].split()[0] for query in queries]
        # Batches of 2, 2 and 1: the last one is short, so there's no
        # fourth SELECT.
        self.assertEqual(statements.count("UPDATE"), 3)
        self.assertEqual(statements.count("INSERT"), 3)
        self.assertEqual(statements.count("SELECT"), 3)
        pks = [record.pk for record in records]
        self.assertEqual(
            [call["token_ids"] for call in receiver.calls],
            [pks[0:2], pks[2:4], pks[4:5]],
        )

    def test_batches_full_last_batch(self):
        self.issue(4)
        with (
            mock.patch("sesame_db.managers.BATCH_SIZE", 2),
            CaptureQueriesContext(connection) as queries,
        ):
            self.assertEqual(IssuedToken.objects.revoke(), 4)
        statements = [query["sql"].split()[0] for query in queries]
        # Two full batches, then a SELECT that finds nothing more.
        self.assertEqual(statements.count("UPDATE"), 2)
        self.assertEqual(statements.count("SELECT"), 3)

    def test_skips_already_revoked(self):
        records = [record for _, record in self.issue(3)]
        records[1].revoke(by=self.other, reason="first")
        first = IssuedToken.objects.get(pk=records[1].pk)
        self.assertEqual(IssuedToken.objects.revoke(by=self.admin, reason="second"), 2)
        again = IssuedToken.objects.get(pk=records[1].pk)
        self.assertEqual(again.revoked_at, first.revoked_at)
        self.assertEqual(again.revoked_by_id, self.other.pk)
        self.assertEqual(again.revoke_reason, "first")
        self.assertEqual(
            list(
                TokenEvent.objects.filter(token=records[1], kind="revoked").values_list(
                    "actor", "detail"
                )
            ),
            [(self.other.pk, "first")],
        )
        # Revoking again revokes nothing.
        self.assertEqual(IssuedToken.objects.revoke(reason="third"), 0)
        self.assertEqual(TokenEvent.objects.filter(kind="revoked").count(), 3)

    def test_one_event_per_token(self):
        records = [record for _, record in self.issue(2)]
        _, theirs = issue_token(self.other)
        request = RequestFactory().post(
            "/admin/revoke/?x=1", REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT="admin-ua"
        )
        IssuedToken.objects.revoke(by=self.admin, reason="offboarding", request=request)
        events = TokenEvent.objects.filter(kind="revoked").order_by("token_id")
        self.assertEqual(
            [(e.token_id, e.user_id, e.actor_id, e.detail, e.reason) for e in events],
            [
                (records[0].pk, self.user.pk, self.admin.pk, "offboarding", ""),
                (records[1].pk, self.user.pk, self.admin.pk, "offboarding", ""),
                (theirs.pk, self.other.pk, self.admin.pk, "offboarding", ""),
            ],
        )
        for event in events:
            self.assertEqual(event.ip, "192.0.2.1")
            self.assertEqual(event.user_agent, "admin-ua")
            self.assertEqual(event.method, "POST")
            self.assertEqual(event.path, "/admin/revoke/")
            self.assertEqual(
                event.created_at, IssuedToken.objects.get(pk=event.token_id).revoked_at
            )

    def test_reason_is_truncated(self):
        _, record = issue_token(self.user)
        IssuedToken.objects.revoke(reason="x" * 300)
        record.refresh_from_db()
        self.assertEqual(record.revoke_reason, "x" * 255)
        self.assertEqual(TokenEvent.objects.get(kind="revoked").detail, "x" * 255)

    def test_signal_once_per_batch_after_commit(self):
        records = [record for _, record in self.issue(3)]
        receiver = SignalReceiver(token_revoked)
        self.addCleanup(receiver.disconnect)
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            IssuedToken.objects.revoke(by=self.admin, reason="leaked")
            # Nothing is sent before the transaction commits.
            self.assertEqual(receiver.calls, [])
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(len(receiver.calls), 1)
        call = receiver.calls[0]
        self.assertIs(call["sender"], IssuedToken)
        self.assertEqual(call["token_ids"], [record.pk for record in records])
        self.assertEqual(call["revoked_by"], self.admin)
        self.assertEqual(call["reason"], "leaked")

    def test_revoke_all_of_a_users_links_in_one_call(self):
        tokens = self.issue(3) + [
            issue_token(self.user, scope="report:1", max_uses=1),
            issue_token(self.user, max_age=60),
        ]
        other_token, _ = issue_token(self.other)
        self.assertEqual(
            IssuedToken.objects.for_user(self.user).revoke(
                by=self.admin, reason="password reset"
            ),
            5,
        )
        for token, record in tokens:
            with self.subTest(pk=record.pk):
                self.assertIsNone(get_user(token, scope=record.scope))
        self.assertEqual(get_user(other_token), self.other)

    def test_revoke_with_a_join(self):
        # A filter through the user table, as an admin might write.
        _, record = issue_token(self.user)
        issue_token(self.other)
        self.assertEqual(
            IssuedToken.objects.filter(user__username=self.user.username).revoke(), 1
        )
        record.refresh_from_db()
        self.assertIsNotNone(record.revoked_at)

    # Regression: revoke_queryset() ran select_for_update() on the caller's
    # query set, and PostgreSQL refuses FOR UPDATE with DISTINCT.
    def test_revoke_a_distinct_queryset(self):
        # distinct() is what a filter across a multi-valued relation needs,
        # e.g. filter(user__groups__name="staff").distinct(). QuerySet.update()
        # and delete() accept it.
        _, record = issue_token(self.user)
        issue_token(self.other)
        self.assertEqual(
            IssuedToken.objects.filter(user__username=self.user.username)
            .distinct()
            .revoke(),
            1,
        )
        record.refresh_from_db()
        self.assertIsNotNone(record.revoked_at)

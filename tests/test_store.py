from __future__ import annotations

import base64
import datetime
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs

import time_machine
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.test import (
    AsyncRequestFactory,
    RequestFactory,
    SimpleTestCase,
    TestCase,
    TransactionTestCase,
    override_settings,
)
from django.utils import timezone

from sesame_db import clients, store
from sesame_db.backends import ModelBackend
from sesame_db.exceptions import Reason
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.signals import token_issued, token_rejected, token_used
from sesame_db.store import client_info, client_ip
from sesame_db.utils import (
    aget_user,
    get_parameters,
    get_query_string,
    get_token,
    get_user,
    issue_token,
    issue_tokens,
)

from .mixins import (
    AsyncNumQueriesMixin,
    CaptureLogMixin,
    CreateUserMixin,
    capture_login_failed,
)

# A whole second, so that expiry claims are exact.
START = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
IP = "198.51.100.7"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) " + "x" * 300


def forge(token):
    """Flip a bit of the MAC of a stored token; it stays well-formed."""
    raw = bytearray(base64.urlsafe_b64decode(token[1:]))
    raw[-1] ^= 1
    return "~" + base64.urlsafe_b64encode(bytes(raw)).decode()


class Receiver:
    """Record the calls of a signal."""

    def __init__(self, testcase, signal):
        self.calls = []
        signal.connect(self, weak=False)
        testcase.addCleanup(signal.disconnect, self)

    def __call__(self, signal, **kwargs):
        self.calls.append(kwargs)


class GetTokenTests(CreateUserMixin, TestCase):
    def test_stateless_by_default(self):
        with self.assertNumQueries(0):
            token = get_token(self.user)
        self.assertFalse(token.startswith("~"))
        self.assertFalse(IssuedToken.objects.exists())
        self.assertEqual(get_user(token), self.user)

    def test_store_true(self):
        token = get_token(self.user, store=True)
        self.assertRegex(token, r"\A~[A-Za-z0-9_-]{36}\Z")
        record = IssuedToken.objects.get()
        self.assertEqual(record.user, self.user)
        self.assertEqual(get_user(token), self.user)

    @override_settings(SESAME_STORE=True)
    def test_store_setting(self):
        token = get_token(self.user, "s")
        self.assertTrue(token.startswith("~"))
        self.assertEqual(IssuedToken.objects.get().scope, "s")
        # store=False wins over the setting.
        self.assertFalse(get_token(self.user, store=False).startswith("~"))
        self.assertEqual(IssuedToken.objects.count(), 1)

    def test_stored_options(self):
        admin = self.create_user("admin")
        get_token(
            self.user,
            "s",
            store=True,
            max_age=60,
            max_uses=2,
            label="welcome",
            issued_by=admin,
        )
        record = IssuedToken.objects.get()
        self.assertEqual(
            (record.scope, record.max_uses, record.label, record.issued_by),
            ("s", 2, "welcome", admin),
        )
        self.assertIsNotNone(record.expires_at)

    def test_stateless_rejects_stored_options(self):
        admin = self.create_user("admin")
        for function in (get_token, get_query_string, get_parameters):
            options: list[dict[str, Any]] = [
                {"max_uses": 1},
                {"label": "x"},
                {"issued_by": admin},
                {"max_age": 60},
            ]
            for option in options:
                with self.subTest(function=function.__name__, **option):
                    with self.assertRaises(ValueError) as context:
                        function(self.user, **option)
                    self.assertIn("store=True", str(context.exception))
        self.assertFalse(IssuedToken.objects.exists())

    @override_settings(SESAME_STORE=True)
    def test_explicit_stateless_rejects_stored_options(self):
        with self.assertRaises(ValueError):
            get_token(self.user, store=False, max_uses=1)
        self.assertFalse(IssuedToken.objects.exists())

    def test_query_string(self):
        query_string = get_query_string(self.user, store=True, max_uses=1)
        self.assertTrue(query_string.startswith("?sesame=~"))
        [token] = parse_qs(query_string[1:])["sesame"]
        self.assertEqual(get_user(token), self.user)
        self.assertIsNone(get_user(token))

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_parameters(self):
        parameters = get_parameters(self.user, store=True)
        self.assertEqual(list(parameters), ["login"])
        self.assertTrue(parameters["login"].startswith("~"))
        self.assertEqual(IssuedToken.objects.count(), 1)


class IssueTests(CreateUserMixin, TestCase):
    # Issuing tokens, in the test's transaction (no SAVEPOINT: issue_many()
    # opens its transaction with savepoint=False):
    # 1. INSERT the tokens, one statement returning their ids.
    # 2. INSERT their "issued" events, one statement.
    # The same for 1 token and for 50. Django 5.2 limits a statement to 999
    # parameters on SQLite, so it splits bulk inserts there: at 62 tokens
    # (16 columns) and 76 events (13 columns); see ISSUE_10000_QUERIES.
    ISSUE_QUERIES = 2
    # Without auditing, 2. is left out.
    ISSUE_QUERIES_NO_AUDIT = 1
    # 10^4 tokens go in batches of store.BATCH_SIZE = 1,000: 10 INSERTs of
    # tokens, then 10 INSERTs of events. That's the count on PostgreSQL, and
    # on SQLite from Django 6.0, which reads the connection's parameter limit
    # (32,766 by default since SQLite 3.32).
    ISSUE_10000_QUERIES = 10 + 10
    ISSUE_10000_QUERIES_NO_AUDIT = 10
    # Django 5.2 assumes SQLite's historical limit of 999 parameters, so its
    # batches are smaller: 62 tokens (999 // 16 columns) and 76 events
    # (999 // 13 columns), that is ceil(10^4 / 62) and ceil(10^4 / 76).
    ISSUE_10000_QUERIES_SQLITE_999 = 162 + 132
    ISSUE_10000_QUERIES_SQLITE_999_NO_AUDIT = 162

    def test_returns_token_and_record(self):
        admin = self.create_user("admin")
        with time_machine.travel(START, tick=False):
            token, record = issue_token(
                self.user, "s", max_age=600, max_uses=3, label="L", issued_by=admin
            )
        self.assertTrue(token.startswith("~"))
        self.assertIsNotNone(record.pk)
        record.refresh_from_db()
        self.assertEqual(record.user, self.user)
        self.assertEqual(record.scope, "s")
        self.assertEqual(record.label, "L")
        self.assertEqual(record.issued_by, admin)
        self.assertEqual(record.max_uses, 3)
        self.assertEqual(record.use_count, 0)
        self.assertEqual(record.created, START)
        self.assertEqual(record.expires_at, START + datetime.timedelta(minutes=10))
        self.assertIsNone(record.revoked_at)
        self.assertIsNone(record.last_used_at)

    def test_max_age_timedelta(self):
        with time_machine.travel(START, tick=False):
            _, record = issue_token(self.user, max_age=datetime.timedelta(hours=2))
        self.assertEqual(record.expires_at, START + datetime.timedelta(hours=2))

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age_defaults_to_setting(self):
        with time_machine.travel(START, tick=False):
            _, record = issue_token(self.user)
            _, explicit = issue_token(self.user, max_age=60)
        self.assertEqual(record.expires_at, START + datetime.timedelta(seconds=300))
        self.assertEqual(explicit.expires_at, START + datetime.timedelta(seconds=60))

    @override_settings(SESAME_MAX_AGE=datetime.timedelta(days=1))
    def test_max_age_setting_timedelta(self):
        with time_machine.travel(START, tick=False):
            _, record = issue_token(self.user)
        self.assertEqual(record.expires_at, START + datetime.timedelta(days=1))

    def test_no_expiry(self):
        _, record = issue_token(self.user)
        self.assertIsNone(record.expires_at)

    def test_max_uses_must_be_positive(self):
        for max_uses in (0, -1):
            with self.subTest(max_uses=max_uses), self.assertNumQueries(0):
                with self.assertRaises(ValueError):
                    issue_token(self.user, max_uses=max_uses)
                with self.assertRaises(ValueError):
                    issue_tokens([self.user], max_uses=max_uses)
        self.assertFalse(IssuedToken.objects.exists())

    def test_max_age_must_be_positive(self):
        # A link that is expired when it's issued is a mistake, not a link.
        for max_age in (0, -60, datetime.timedelta(0), datetime.timedelta(seconds=-1)):
            with (
                self.subTest(max_age=max_age),
                self.assertNumQueries(0),
                self.assertRaisesMessage(ValueError, "max_age must be positive"),
            ):
                issue_token(self.user, max_age=max_age)
        self.assertFalse(IssuedToken.objects.exists())

    def test_issued_event(self):
        admin = self.create_user("admin")
        request = RequestFactory().post(
            "/admin/send/", REMOTE_ADDR=IP, HTTP_USER_AGENT="ua"
        )
        _, record = issue_token(
            self.user, "s", label="welcome", issued_by=admin, request=request
        )
        event = TokenEvent.objects.get(token=record)
        self.assertEqual(event.kind, TokenEvent.Kind.ISSUED)
        self.assertEqual(event.user_id, self.user.pk)
        self.assertEqual(event.actor_id, admin.pk)
        self.assertEqual(event.scope, "s")
        self.assertEqual(event.detail, "welcome")
        self.assertEqual(event.created_at, record.created)
        self.assertEqual(
            (event.ip, event.user_agent, event.method, event.path),
            (IP, "ua", "POST", "/admin/send/"),
        )

    def assertIssueMany(self, count, queries):
        users = [self.create_user(f"user{count}-{index}") for index in range(count)]
        # Not in primary key order: the result follows the argument.
        users.reverse()
        with self.assertNumQueries(queries):
            issued = issue_tokens(users, "s", max_uses=1)
        self.assertEqual(len(issued), count)
        self.assertEqual(len({token for token, _ in issued}), count)
        for user, (token, record) in zip(users, issued, strict=True):
            self.assertEqual(record.user_id, user.pk)
            self.assertEqual(get_user(token, "s"), user)
        return issued

    def test_issue_tokens_5(self):
        self.assertIssueMany(5, self.ISSUE_QUERIES)
        self.assertEqual(TokenEvent.objects.filter(kind="issued").count(), 5)

    def test_issue_tokens_50(self):
        self.assertIssueMany(50, self.ISSUE_QUERIES)
        self.assertEqual(TokenEvent.objects.filter(kind="issued").count(), 50)

    @override_settings(SESAME_AUDIT=False)
    def test_issue_tokens_without_audit(self):
        self.assertIssueMany(5, self.ISSUE_QUERIES_NO_AUDIT)
        self.assertIssueMany(50, self.ISSUE_QUERIES_NO_AUDIT)
        self.assertFalse(TokenEvent.objects.filter(kind="issued").exists())

    def issue_10000(self, queries, queries_sqlite_999):
        User = get_user_model()
        users = User.objects.bulk_create(
            User(username=f"bulk{index}", password="!") for index in range(10_000)
        )
        # PostgreSQL has no limit (None). SQLite's fits batches of 1,000
        # tokens of 14 columns, except Django 5.2's fixed 999.
        limit = connection.features.max_query_params
        if limit is not None and limit < 14 * store.BATCH_SIZE:
            self.assertEqual(limit, 999, "another limit needs another count")
            queries = queries_sqlite_999
        with self.assertNumQueries(queries):
            issued = issue_tokens(users, "s")
        self.assertEqual(len(issued), 10_000)
        self.assertEqual(IssuedToken.objects.count(), 10_000)
        # The first, a batch boundary and the last link work for their user.
        for index in (0, 999, 1000, 9999):
            token, record = issued[index]
            self.assertEqual(record.user_id, users[index].pk)
            self.assertEqual(get_user(token, "s"), users[index])

    def test_issue_tokens_10000(self):
        self.issue_10000(self.ISSUE_10000_QUERIES, self.ISSUE_10000_QUERIES_SQLITE_999)
        self.assertEqual(TokenEvent.objects.filter(kind="issued").count(), 10_000)

    @override_settings(SESAME_AUDIT=False)
    def test_issue_tokens_10000_without_audit(self):
        self.issue_10000(
            self.ISSUE_10000_QUERIES_NO_AUDIT,
            self.ISSUE_10000_QUERIES_SQLITE_999_NO_AUDIT,
        )
        self.assertFalse(TokenEvent.objects.exists())

    def test_issue_tokens_empty(self):
        with self.assertNumQueries(0):
            self.assertEqual(issue_tokens([]), [])

    def test_issue_tokens_accepts_a_generator(self):
        users = [self.user, self.create_user("jane")]
        issued = issue_tokens(user for user in users)
        self.assertEqual([record.user for _, record in issued], users)

    def test_token_issued_signal(self):
        admin = self.create_user("admin")
        receiver = Receiver(self, token_issued)
        with self.captureOnCommitCallbacks(execute=True):
            issued = issue_tokens([self.user, admin], issued_by=admin)
            self.assertEqual(receiver.calls, [])
        self.assertEqual(
            [(c["sender"], c["token"], c["issued_by"]) for c in receiver.calls],
            [(IssuedToken, record, admin) for _, record in issued],
        )

    def test_not_sent_on_rollback(self):
        receiver = Receiver(self, token_issued)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            issue_token(self.user)
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(receiver.calls, [])


class IssueTransactionTests(CreateUserMixin, TransactionTestCase):
    """issue_tokens() inserts its batches of tokens and events in one transaction."""

    def fail_event_inserts(self):
        # A real fault in the database: a trigger refuses every audit event,
        # after every token has been inserted.
        table = TokenEvent._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "CREATE FUNCTION fail_event() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'no events'; END $$ LANGUAGE plpgsql"
                )
                cursor.execute(
                    f"CREATE TRIGGER fail_event BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION fail_event()"
                )
            else:
                cursor.execute(
                    f"CREATE TRIGGER fail_event BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'no events'); END"
                )
        self.addCleanup(self.drop_trigger)

    def drop_trigger(self):
        table = TokenEvent._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER fail_event ON {table}")
                cursor.execute("DROP FUNCTION fail_event()")
            else:
                cursor.execute("DROP TRIGGER fail_event")

    def test_batches_are_one_transaction(self):
        # 2,500 users: three batches of tokens, more on SQLite with Django 5.2.
        User = get_user_model()
        users = User.objects.bulk_create(
            User(username=f"bulk{index}", password="!") for index in range(2_500)
        )
        self.fail_event_inserts()
        with self.assertRaisesMessage(DatabaseError, "no events"):
            issue_tokens(users)
        self.assertFalse(IssuedToken.objects.exists())

    @override_settings(SESAME_AUDIT=False)
    def test_fault_check(self):
        # Without the audit, the same tokens go in: the fault was the trigger.
        User = get_user_model()
        users = User.objects.bulk_create(
            User(username=f"bulk{index}", password="!") for index in range(2_500)
        )
        self.fail_event_inserts()
        issue_tokens(users)
        self.assertEqual(IssuedToken.objects.count(), 2_500)


class QueryBudgetTests(CreateUserMixin, TestCase):
    # A forged stored token: the MAC is checked before any query, and a
    # forgery identifies no token, so there's no audit event to write.
    FORGED_QUERIES = 0
    # A malformed token: rejected by its format.
    MALFORMED_QUERIES = 0
    # A valid stored token, in the test's transaction:
    # 1. SELECT the token joined to its user.
    # 2. UPDATE use_count, last_used_at and modified, if it's still allowed.
    # 3. INSERT the "used" event.
    USE_QUERIES_SQLITE = 3
    # On PostgreSQL, 2. and 3. are one statement: WITH used AS (UPDATE ...
    # RETURNING ...) INSERT ... SELECT ... FROM used.
    USE_QUERIES_POSTGRESQL = 2
    # Without auditing: 1. SELECT and 2. UPDATE, on both databases.
    USE_QUERIES_NO_AUDIT = 2
    # Wrong scope and expired claim are told by the token alone:
    # 1. INSERT the "rejected" event, its user from a subquery on the token.
    WRONG_SCOPE_QUERIES = 1
    EXPIRED_CLAIM_QUERIES = 1
    # Revoked, used up, unknown, expired in the database, inactive user,
    # invalidated: 1. SELECT the token joined to its user. 2. INSERT the
    # "rejected" event.
    REJECTED_QUERIES = 2
    # Without auditing, only 1. SELECT; nothing for a wrong scope.
    REJECTED_QUERIES_NO_AUDIT = 1
    WRONG_SCOPE_QUERIES_NO_AUDIT = 0
    # A valid stateless token: 1. SELECT the user.
    STATELESS_QUERIES = 1

    @property
    def use_queries(self):
        if connection.vendor == "postgresql":
            return self.USE_QUERIES_POSTGRESQL
        return self.USE_QUERIES_SQLITE

    def test_forged(self):
        token, _ = issue_token(self.user)
        with self.assertNumQueries(self.FORGED_QUERIES):
            self.assertIsNone(get_user(forge(token)))

    def test_malformed(self):
        for token in ("~", "~" + "A" * 35, "~" + "!" * 36):
            with (
                self.subTest(token=token),
                self.assertNumQueries(self.MALFORMED_QUERIES),
            ):
                self.assertIsNone(get_user(token))

    def test_valid(self):
        token, _ = issue_token(self.user)
        with self.assertNumQueries(self.use_queries):
            self.assertEqual(get_user(token), self.user)

    def test_valid_with_request(self):
        token, _ = issue_token(self.user)
        request = RequestFactory().get("/", {"sesame": token}, REMOTE_ADDR=IP)
        with self.assertNumQueries(self.use_queries):
            self.assertEqual(get_user(request), self.user)

    @override_settings(SESAME_AUDIT=False)
    def test_valid_without_audit(self):
        token, _ = issue_token(self.user)
        with self.assertNumQueries(self.USE_QUERIES_NO_AUDIT):
            self.assertEqual(get_user(token), self.user)

    def test_wrong_scope(self):
        token, _ = issue_token(self.user, "a")
        with self.assertNumQueries(self.WRONG_SCOPE_QUERIES):
            self.assertIsNone(get_user(token, "b"))

    def test_events_scope(self):
        # docs/howto.rst: each event of a link records its scope, except a
        # rejection, which records the scope that was requested.
        token, record = issue_token(self.user, "a")
        self.assertEqual(get_user(token, "a"), self.user)
        self.assertIsNone(get_user(token, "b"))
        record.revoke()
        self.assertEqual(
            list(record.events.order_by("pk").values_list("kind", "scope")),
            [("issued", "a"), ("used", "a"), ("rejected", "b"), ("revoked", "a")],
        )

    @override_settings(SESAME_AUDIT=False)
    def test_wrong_scope_without_audit(self):
        token, _ = issue_token(self.user, "a")
        with self.assertNumQueries(self.WRONG_SCOPE_QUERIES_NO_AUDIT):
            self.assertIsNone(get_user(token, "b"))

    def test_expired_claim(self):
        with time_machine.travel(START, tick=False):
            token, _ = issue_token(self.user, max_age=60)
        with (
            time_machine.travel(START + datetime.timedelta(seconds=61), tick=False),
            self.assertNumQueries(self.EXPIRED_CLAIM_QUERIES),
        ):
            self.assertIsNone(get_user(token))

    def test_revoked(self):
        token, record = issue_token(self.user)
        record.revoke()
        with self.assertNumQueries(self.REJECTED_QUERIES):
            self.assertIsNone(get_user(token))

    @override_settings(SESAME_AUDIT=False)
    def test_revoked_without_audit(self):
        token, record = issue_token(self.user)
        record.revoke()
        with self.assertNumQueries(self.REJECTED_QUERIES_NO_AUDIT):
            self.assertIsNone(get_user(token))

    def test_used_up(self):
        token, _ = issue_token(self.user, max_uses=1)
        get_user(token)
        with self.assertNumQueries(self.REJECTED_QUERIES):
            self.assertIsNone(get_user(token))

    def test_unknown(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.filter(pk=record.pk).delete()
        with self.assertNumQueries(self.REJECTED_QUERIES):
            self.assertIsNone(get_user(token))

    def test_inactive_user(self):
        token, _ = issue_token(self.user)
        self.user.is_active = False
        self.user.save()
        with self.assertNumQueries(self.REJECTED_QUERIES):
            self.assertIsNone(get_user(token))

    def test_stateless(self):
        token = get_token(self.user)
        with self.assertNumQueries(self.STATELESS_QUERIES):
            self.assertEqual(get_user(token), self.user)


class RedeemTests(CreateUserMixin, TestCase):
    def test_counts_uses(self):
        token, record = issue_token(self.user, max_uses=3)
        with time_machine.travel(START, tick=False):
            self.assertEqual(get_user(token), self.user)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(record.last_used_at, START)
        self.assertEqual(record.modified, START)
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(get_user(token), self.user)
        self.assertIsNone(get_user(token))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 3)

    def test_unlimited(self):
        token, record = issue_token(self.user)
        for _ in range(5):
            self.assertEqual(get_user(token), self.user)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 5)

    def test_loaded_user_is_complete(self):
        # The user comes from a hand-written SELECT: every field is converted
        # as the ORM would.
        self.user.last_login = START
        self.user.save()
        token, _ = issue_token(self.user)
        user = get_user(token)
        assert user is not None
        expected = get_user_model().objects.get(pk=self.user.pk)
        for field in get_user_model()._meta.concrete_fields:
            with self.subTest(field=field.name):
                self.assertEqual(
                    getattr(user, field.attname), getattr(expected, field.attname)
                )
                self.assertIs(
                    type(getattr(user, field.attname)),
                    type(getattr(expected, field.attname)),
                )
        self.assertEqual(user.backend, "sesame_db.backends.ModelBackend")
        assert user.last_login is not None
        self.assertIsNotNone(user.last_login.tzinfo)

    def test_revocation_between_select_and_update(self):
        # Another request revokes the token after it was read: the
        # conditional UPDATE, not the SELECT, decides.
        token, record = issue_token(self.user)
        fetch = store._fetch

        def fetch_then_revoke(db, pk):
            loaded = fetch(db, pk)
            IssuedToken.objects.filter(pk=pk).update(revoked_at=timezone.now())
            return loaded

        with mock.patch("sesame_db.store._fetch", fetch_then_revoke):
            self.assertIsNone(get_user(token))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        event = TokenEvent.objects.filter(token=record).latest("pk")
        self.assertEqual((event.kind, event.reason), ("rejected", "revoked"))
        self.assertFalse(TokenEvent.objects.filter(kind="used").exists())

    def test_last_use_between_select_and_update(self):
        token, record = issue_token(self.user, max_uses=1)
        fetch = store._fetch

        def fetch_then_use(db, pk):
            loaded = fetch(db, pk)
            IssuedToken.objects.filter(pk=pk).update(use_count=1)
            return loaded

        with mock.patch("sesame_db.store._fetch", fetch_then_use):
            self.assertIsNone(get_user(token))
        event = TokenEvent.objects.filter(token=record).latest("pk")
        self.assertEqual((event.kind, event.reason), ("rejected", "used_up"))


class AllowInactiveUsersBackend(ModelBackend):
    """A backend that lets inactive users in, as Django's AllowAllUsersModelBackend."""

    def user_can_authenticate(self, user):
        return True


class UserChangeBeforeUpdateTests(CreateUserMixin, TestCase):
    """
    The user changes between the SELECT and the UPDATE of a redemption.

    The change is made at the last moment before the UPDATE, on the same
    connection; tests/test_concurrency.py commits it from another connection
    on PostgreSQL.

    """

    def change_before_update(self, change):
        """Run ``change(user)`` once, just before the conditional UPDATE."""
        consume = store._consume
        calls: list[Any] = []

        def change_then_consume(record, *args):
            if not calls:
                change(get_user_model().objects.get(pk=record.user_id))
            calls.append(record.user)
            return consume(record, *args)

        patcher = mock.patch("sesame_db.store._consume", change_then_consume)
        patcher.start()
        self.addCleanup(patcher.stop)
        return calls

    def assertRefused(self, token, record, reason):
        self.assertIsNone(get_user(token))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertIsNone(record.last_used_at)
        events = TokenEvent.objects.filter(token=record).exclude(kind="issued")
        self.assertEqual(
            list(events.values_list("kind", "reason")), [("rejected", reason)]
        )

    def test_password_change(self):
        token, record = issue_token(self.user)

        def change_password(user):
            user.set_password("changed")
            user.save()

        self.change_before_update(change_password)
        self.assertRefused(token, record, "invalidated")

    def test_deactivation(self):
        token, record = issue_token(self.user)

        def deactivate(user):
            user.is_active = False
            user.save()

        self.change_before_update(deactivate)
        self.assertRefused(token, record, "inactive_user")

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_email_change(self):
        token, record = issue_token(self.user)

        def change_email(user):
            user.email = "jack@example.com"
            user.save()

        self.change_before_update(change_email)
        self.assertRefused(token, record, "invalidated")

    def test_email_change_allowed(self):
        # Without SESAME_INVALIDATE_ON_EMAIL_CHANGE, the email isn't checked.
        token, record = issue_token(self.user)

        def change_email(user):
            user.email = "jack@example.com"
            user.save()

        calls = self.change_before_update(change_email)
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(len(calls), 1)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    @override_settings(SESAME_INVALIDATE_ON_PASSWORD_CHANGE=False)
    def test_password_change_allowed(self):
        token, record = issue_token(self.user)

        def change_password(user):
            user.set_password("changed")
            user.save()

        calls = self.change_before_update(change_password)
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(len(calls), 1)

    @override_settings(
        AUTHENTICATION_BACKENDS=[
            "django.contrib.auth.backends.ModelBackend",
            f"{__name__}.AllowInactiveUsersBackend",
        ]
    )
    def test_deactivation_allowed_by_the_backend(self):
        # The UPDATE sees that is_active changed; the checks, run again on
        # the new values, allow it: the second UPDATE counts the use.
        token, record = issue_token(self.user)

        def deactivate(user):
            user.is_active = False
            user.save()

        calls = self.change_before_update(deactivate)
        with self.assertNumQueries(self.RACED_USE_QUERIES):
            user = get_user(token)
        assert user is not None
        self.assertEqual(user.pk, self.user.pk)
        self.assertFalse(user.is_active)
        self.assertEqual([user.is_active for user in calls], [True, False])
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        events = TokenEvent.objects.filter(token=record).exclude(kind="issued")
        self.assertEqual(list(events.values_list("kind", "reason")), [("used", "")])

    @property
    def RACED_USE_QUERIES(self):
        # 1. SELECT the token joined to its user. The deactivation: 2. SELECT
        # and 3. UPDATE the user. 4. The conditional UPDATE (+ INSERT on
        # PostgreSQL), which matches no row. 5. SELECT again. 6. The
        # conditional UPDATE (+ INSERT on PostgreSQL); on SQLite, 7. INSERT.
        return 6 if connection.vendor == "postgresql" else 7

    def test_user_keeps_changing(self):
        # Every UPDATE finds the user changed: after three tries, give up.
        token, record = issue_token(self.user)
        consume = store._consume
        calls = []

        def change_then_consume(record, *args):
            # A change that the checks allow, before every UPDATE.
            user = get_user_model().objects.get(pk=record.user_id)
            user.is_active = not user.is_active
            user.save()
            calls.append(user.is_active)
            return consume(record, *args)

        with (
            override_settings(
                AUTHENTICATION_BACKENDS=[
                    f"{__name__}.AllowInactiveUsersBackend",
                ]
            ),
            mock.patch("sesame_db.store._consume", change_then_consume),
        ):
            self.assertRefused(token, record, "invalidated")
        self.assertEqual(calls, [False, True, False])


class AuditTests(CreateUserMixin, TestCase):
    path = "/account/reports/"

    def request(self, token, method="get", **extra):
        extra.setdefault("REMOTE_ADDR", IP)
        extra.setdefault("HTTP_USER_AGENT", USER_AGENT)
        factory = RequestFactory()
        if method == "get":
            return factory.get(self.path, {"sesame": token, "page": "2"}, **extra)
        return factory.generic(
            method.upper(), f"{self.path}?sesame={token}&page=2", **extra
        )

    def last_event(self, record_id):
        return TokenEvent.objects.filter(token_id=record_id).latest("pk")

    def assertEvent(self, record_id, kind, reason="", scope="", user=True, **fields):
        event = self.last_event(record_id)
        expected = {
            "kind": kind,
            "reason": reason,
            "scope": scope,
            "user_id": self.user.pk if user else None,
            "actor_id": None,
            "detail": "",
            "ip": IP,
            "user_agent": USER_AGENT[:255],
            "method": "GET",
            "path": self.path,
            **fields,
        }
        self.assertEqual({name: getattr(event, name) for name in expected}, expected)
        return event

    def assertRejected(self, token, reason, record_id, scope="", user=True):
        count = TokenEvent.objects.count()
        self.assertIsNone(get_user(self.request(token), scope))
        self.assertEqual(TokenEvent.objects.count(), count + 1)
        return self.assertEvent(record_id, "rejected", reason, scope, user)

    def test_used(self):
        token, record = issue_token(self.user, "s")
        self.assertEqual(get_user(self.request(token), "s"), self.user)
        event = self.assertEvent(record.pk, "used", scope="s")
        self.assertEqual(len(event.user_agent), 255)
        self.assertNotIn("?", event.path)

    def test_post(self):
        token, record = issue_token(self.user)
        self.assertEqual(get_user(self.request(token, "post")), self.user)
        self.assertEvent(record.pk, "used", method="POST")

    def test_without_request(self):
        token, record = issue_token(self.user)
        get_user(token)
        get_user(token, "other")
        for event in TokenEvent.objects.filter(token=record).exclude(kind="issued"):
            self.assertEqual(
                (event.ip, event.user_agent, event.method, event.path),
                (None, "", "", ""),
            )

    def test_unknown(self):
        token, record = issue_token(self.user)
        IssuedToken.objects.filter(pk=record.pk).delete()
        # The token row is gone, so is its user.
        self.assertRejected(token, "unknown", record.pk, user=False)

    def test_expired_in_database(self):
        # The claim says an hour, the database says it's over: the database wins.
        token, record = issue_token(self.user, max_age=3600)
        IssuedToken.objects.filter(pk=record.pk).update(
            expires_at=timezone.now() - datetime.timedelta(seconds=1)
        )
        self.assertRejected(token, "expired", record.pk)

    def test_expired_claim(self):
        with time_machine.travel(START, tick=False):
            token, record = issue_token(self.user, max_age=60)
        with time_machine.travel(START + datetime.timedelta(minutes=5), tick=False):
            self.assertRejected(token, "expired", record.pk)

    def test_revoked(self):
        token, record = issue_token(self.user)
        record.revoke()
        self.assertRejected(token, "revoked", record.pk)

    def test_used_up(self):
        token, record = issue_token(self.user, max_uses=1)
        self.assertEqual(get_user(self.request(token)), self.user)
        self.assertRejected(token, "used_up", record.pk)

    def test_wrong_scope(self):
        token, record = issue_token(self.user, "report:1")
        # The requested scope is recorded.
        self.assertRejected(token, "wrong_scope", record.pk, scope="report:2")
        self.assertRejected(token, "wrong_scope", record.pk, scope="")

    def test_inactive_user(self):
        token, record = issue_token(self.user)
        self.user.is_active = False
        self.user.save()
        self.assertRejected(token, "inactive_user", record.pk)

    def test_invalidated_by_password_change(self):
        token, record = issue_token(self.user)
        self.user.set_password("new password")
        self.user.save()
        self.assertRejected(token, "invalidated", record.pk)

    @override_settings(SESAME_INVALIDATE_ON_EMAIL_CHANGE=True)
    def test_invalidated_by_email_change(self):
        token, record = issue_token(self.user)
        self.user.email = "jane@example.com"
        self.user.save()
        self.assertRejected(token, "invalidated", record.pk)

    def test_email_change_by_default(self):
        token, record = issue_token(self.user)
        self.user.email = "jane@example.com"
        self.user.save()
        self.assertEqual(get_user(self.request(token)), self.user)

    def test_bad_signature_has_no_event(self):
        token, _ = issue_token(self.user)
        count = TokenEvent.objects.count()
        self.assertIsNone(get_user(self.request(forge(token))))
        self.assertEqual(TokenEvent.objects.count(), count)

    def test_malformed_has_no_event(self):
        count = TokenEvent.objects.count()
        self.assertIsNone(get_user(self.request("~garbage")))
        self.assertEqual(TokenEvent.objects.count(), count)

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_forwarded_address(self):
        token, record = issue_token(self.user)
        get_user(self.request(token, HTTP_X_FORWARDED_FOR="203.0.113.9"))
        self.assertEqual(self.last_event(record.pk).ip, "203.0.113.9")
        get_user(self.request(token, "other", HTTP_X_FORWARDED_FOR="203.0.113.10"))
        self.assertEqual(self.last_event(record.pk).ip, "203.0.113.10")

    @override_settings(SESAME_AUDIT=False)
    def test_audit_off(self):
        token, record = issue_token(self.user, max_uses=1)
        get_user(self.request(token))
        get_user(self.request(token))
        get_user(self.request(token), "other")
        self.assertFalse(TokenEvent.objects.exists())
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)


@override_settings(SESAME_TRUSTED_PROXIES=0)
class ClientIPTests(SimpleTestCase):
    def ip(self, forwarded=None, remote_addr="10.0.0.1"):
        meta = {}
        if forwarded is not None:
            meta["HTTP_X_FORWARDED_FOR"] = forwarded
        request = RequestFactory().get("/", **meta)
        if remote_addr is None:
            del request.META["REMOTE_ADDR"]
        else:
            request.META["REMOTE_ADDR"] = remote_addr
        return client_ip(request)

    def test_remote_addr(self):
        self.assertEqual(self.ip(), "10.0.0.1")

    def test_ignores_forwarded_for_without_trusted_proxies(self):
        self.assertEqual(self.ip("203.0.113.1, 198.51.100.2"), "10.0.0.1")

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_one_proxy_takes_the_last_entry(self):
        self.assertEqual(self.ip("203.0.113.1, 198.51.100.2"), "198.51.100.2")
        self.assertEqual(self.ip("198.51.100.2"), "198.51.100.2")

    @override_settings(SESAME_TRUSTED_PROXIES=2)
    def test_two_proxies_take_the_second_to_last(self):
        # Entries left of the trusted ones are whatever the client sent.
        self.assertEqual(self.ip("1.2.3.4, 203.0.113.1,198.51.100.2"), "203.0.113.1")

    @override_settings(SESAME_TRUSTED_PROXIES=3)
    def test_too_few_entries_fall_back_to_remote_addr(self):
        self.assertEqual(self.ip("203.0.113.1, 198.51.100.2"), "10.0.0.1")

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_missing_header_falls_back_to_remote_addr(self):
        self.assertEqual(self.ip(), "10.0.0.1")
        self.assertEqual(self.ip(""), "10.0.0.1")

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_garbage(self):
        for forwarded in [
            "unknown",
            "203.0.113.1, not-an-ip",
            "203.0.113.1:443",
            "<script>",
        ]:
            with self.subTest(forwarded=forwarded):
                self.assertIsNone(self.ip(forwarded))

    def test_garbage_remote_addr(self):
        self.assertIsNone(self.ip(remote_addr="garbage"))
        self.assertIsNone(self.ip(remote_addr=""))
        self.assertIsNone(self.ip(remote_addr=None))

    def test_unknown_address_is_logged_once_per_process(self):
        self.addCleanup(setattr, clients, "_unknown_address_logged", False)
        clients._unknown_address_logged = False
        with self.assertLogs("sesame_db", "DEBUG") as logs:
            self.ip(remote_addr="")
            self.ip(remote_addr="garbage\nforged log line")
            self.ip()
        [first, second] = logs.records
        self.assertEqual(first.levelname, "WARNING")
        self.assertEqual(
            first.getMessage(),
            "Unknown client address in REMOTE_ADDR: ''. The audit trail records no "
            "address, and SESAME_RATE_LIMIT counts every such client together. "
            "Behind a reverse proxy, set SESAME_TRUSTED_PROXIES to the number of "
            "proxies that append to X-Forwarded-For. Logged once per process.",
        )
        self.assertEqual(second.levelname, "DEBUG")
        self.assertEqual(
            second.getMessage(),
            "Unknown client address in REMOTE_ADDR: 'garbage\\nforged log line'",
        )

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_unknown_forwarded_address_is_logged(self):
        self.addCleanup(setattr, clients, "_unknown_address_logged", False)
        clients._unknown_address_logged = False
        with self.assertLogs("sesame_db", "WARNING") as logs:
            self.ip("203.0.113.1, " + "x" * 100)
        self.assertIn(
            f"Unknown client address in X-Forwarded-For: '{'x' * 64}'.",
            logs.output[0],
        )

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_ipv6_is_normalized(self):
        self.assertEqual(self.ip("2001:DB8:0:0::1"), "2001:db8::1")
        self.assertEqual(self.ip(remote_addr="::1"), "::1")

    def test_client_info(self):
        request = RequestFactory().generic(
            "PATCH",
            "/p/a/t/h/?sesame=secret",
            REMOTE_ADDR="2001:db8::7",
            HTTP_USER_AGENT="é" * 300,
        )
        self.assertEqual(
            client_info(request),
            {
                "ip": "2001:db8::7",
                "user_agent": "é" * 255,
                "method": "PATCH",
                "path": "/p/a/t/h/",
            },
        )
        self.assertEqual(client_info(None), {})


class SecrecyTests(CaptureLogMixin, CreateUserMixin, TestCase):
    """The raw token never reaches the logs nor the audit trail."""

    def assertNotLeaked(self, token):
        output = "\n".join(self.logs.output)
        for secret in (token, token[1:], token[1:13], token[-12:]):
            self.assertNotIn(secret, output)
        for event in TokenEvent.objects.all():
            for field in TokenEvent._meta.concrete_fields:
                value = str(getattr(event, field.attname))
                self.assertNotIn(token[1:13], value, field.name)
                self.assertNotIn(token[-12:], value, field.name)

    def request(self, token):
        return RequestFactory().get("/login/", {"sesame": token}, REMOTE_ADDR=IP)

    def test_valid(self):
        token, record = issue_token(self.user)
        with self.captureLogs():
            get_user(self.request(token))
        self.assertLogsContain(f"Valid stored token {record.pk}")
        self.assertNotLeaked(token)

    def test_rejections(self):
        token, record = issue_token(self.user, "s", max_uses=1)
        scenarios = [
            ("wrong scope", lambda: get_user(self.request(token), "t")),
            ("forged", lambda: get_user(self.request(forge(token)), "s")),
            ("valid", lambda: get_user(self.request(token), "s")),
            ("used up", lambda: get_user(self.request(token), "s")),
            ("revoked", lambda: (record.revoke(), get_user(self.request(token), "s"))),
        ]
        for name, scenario in scenarios:
            with self.subTest(name), self.captureLogs():
                scenario()
            self.assertNotLeaked(token)
        self.assertEqual(
            list(
                TokenEvent.objects.filter(kind="rejected")
                .order_by("pk")
                .values_list("reason", flat=True)
            ),
            ["wrong_scope", "used_up", "revoked"],
        )

    def test_unknown_and_expired(self):
        with time_machine.travel(START, tick=False):
            token, record = issue_token(self.user, max_age=60)
        with self.captureLogs():
            get_user(self.request(token))
        self.assertLogsContain(f"Expired stored token {record.pk}")
        self.assertNotLeaked(token)
        token, record = issue_token(self.user)
        pk = record.pk
        record.delete()
        with self.captureLogs():
            get_user(self.request(token))
        self.assertLogsContain(f"Unknown stored token {pk}")
        self.assertNotLeaked(token)

    def test_login_failed_credentials_are_masked(self):
        token, record = issue_token(self.user)
        record.revoke()
        with capture_login_failed() as captured:
            self.assertIsNone(get_user(token))
        self.assertEqual(len(captured), 1)
        self.assertNotIn(token, str(captured))
        self.assertNotIn(token[1:], str(captured))


class MaxAgeTests(CreateUserMixin, TestCase):
    """The max_age argument of get_user() limits stored tokens from their creation."""

    def test_max_age_argument(self):
        with time_machine.travel(START, tick=False):
            token, record = issue_token(self.user)
        with time_machine.travel(START + datetime.timedelta(seconds=120), tick=False):
            self.assertIsNone(get_user(token, max_age=60))
            self.assertIsNone(get_user(token, max_age=120))
            self.assertIsNone(get_user(token, max_age=datetime.timedelta(minutes=1)))
            self.assertEqual(get_user(token, max_age=121), self.user)
            self.assertEqual(
                get_user(token, max_age=datetime.timedelta(minutes=5)), self.user
            )
        reasons = list(
            TokenEvent.objects.filter(token=record, kind="rejected").values_list(
                "reason", flat=True
            )
        )
        # Repeated rejections for one reason are recorded once per window.
        self.assertEqual(reasons, ["expired"])
        record.refresh_from_db()
        self.assertEqual(record.use_count, 2)

    def test_max_age_does_not_extend_expiry(self):
        with time_machine.travel(START, tick=False):
            token, _ = issue_token(self.user, max_age=60)
        with time_machine.travel(START + datetime.timedelta(seconds=90), tick=False):
            self.assertIsNone(get_user(token, max_age=3600))

    @override_settings(SESAME_MAX_AGE=3600)
    def test_max_age_with_setting(self):
        with time_machine.travel(START, tick=False):
            token, _ = issue_token(self.user)
        with time_machine.travel(START + datetime.timedelta(seconds=120), tick=False):
            self.assertIsNone(get_user(token, max_age=60))
            self.assertEqual(get_user(token), self.user)


class SignalTests(CreateUserMixin, TestCase):
    def test_token_used(self):
        receiver = Receiver(self, token_used)
        token, record = issue_token(self.user, "s")
        request = RequestFactory().get("/", {"sesame": token})
        with self.captureOnCommitCallbacks(execute=True):
            user = get_user(request, "s")
            self.assertEqual(receiver.calls, [])
        [call] = receiver.calls
        self.assertIs(call["sender"], ModelBackend)
        self.assertIs(call["request"], request)
        self.assertIs(call["user"], user)
        self.assertIsInstance(call["token"], IssuedToken)
        self.assertEqual(call["token"].pk, record.pk)
        self.assertEqual(call["token"].use_count, 1)
        self.assertEqual(call["scope"], "s")

    def test_token_used_stateless(self):
        receiver = Receiver(self, token_used)
        get_user(get_token(self.user))
        [call] = receiver.calls
        self.assertIsNone(call["token"])
        self.assertEqual(call["user"], self.user)

    def test_token_rejected_with_event(self):
        receiver = Receiver(self, token_rejected)
        token, record = issue_token(self.user)
        record.revoke()
        request = RequestFactory().get("/", {"sesame": token})
        with self.captureOnCommitCallbacks(execute=True):
            get_user(request, "")
            # Sent once the event is committed.
            self.assertEqual(receiver.calls, [])
        [call] = receiver.calls
        self.assertIs(call["sender"], ModelBackend)
        self.assertIs(call["request"], request)
        self.assertEqual(call["reason"], Reason.REVOKED)
        self.assertEqual(call["token_id"], record.pk)
        self.assertEqual(call["scope"], "")

    def test_token_rejected_wrong_scope(self):
        receiver = Receiver(self, token_rejected)
        token, record = issue_token(self.user, "a")
        with self.captureOnCommitCallbacks(execute=True):
            get_user(token, "b")
        [call] = receiver.calls
        self.assertEqual(
            (call["reason"], call["token_id"], call["scope"]),
            (Reason.WRONG_SCOPE, record.pk, "b"),
        )

    def test_token_rejected_forged(self):
        # No event to commit: sent at once, without a token id.
        receiver = Receiver(self, token_rejected)
        token, _ = issue_token(self.user)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            get_user(forge(token))
        self.assertEqual(callbacks, [])
        [call] = receiver.calls
        self.assertEqual(call["reason"], Reason.BAD_SIGNATURE)
        self.assertIsNone(call["token_id"])

    @override_settings(SESAME_AUDIT=False)
    def test_token_rejected_without_audit(self):
        receiver = Receiver(self, token_rejected)
        token, record = issue_token(self.user)
        record.revoke()
        with self.captureOnCommitCallbacks(execute=False):
            get_user(token)
        [call] = receiver.calls
        self.assertEqual(
            (call["reason"], call["token_id"]), (Reason.REVOKED, record.pk)
        )


class AsyncTests(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    def request(self, token):
        request = AsyncRequestFactory().get(
            "/async/", {"sesame": token}, headers={"user-agent": "ua"}
        )
        # An ASGI request's REMOTE_ADDR comes from the scope's client.
        request.META["REMOTE_ADDR"] = IP
        return request

    async def events(self, record):
        return [
            (event.kind, event.reason, event.ip, event.path)
            async for event in TokenEvent.objects.filter(token=record).order_by("pk")
        ]

    async def test_valid(self):
        token, record = await sync_to_async(issue_token)(self.user)
        queries = (
            QueryBudgetTests.USE_QUERIES_POSTGRESQL
            if connection.vendor == "postgresql"
            else QueryBudgetTests.USE_QUERIES_SQLITE
        )
        async with self.assertNumQueriesAsync(queries):
            user = await aget_user(self.request(token))
        self.assertEqual(user, self.user)
        await record.arefresh_from_db()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(
            await self.events(record),
            [("issued", "", None, ""), ("used", "", IP, "/async/")],
        )

    async def test_revoked(self):
        token, record = await sync_to_async(issue_token)(self.user)
        await sync_to_async(record.revoke)()
        async with self.assertNumQueriesAsync(QueryBudgetTests.REJECTED_QUERIES):
            self.assertIsNone(await aget_user(self.request(token)))
        self.assertEqual(
            (await self.events(record))[-1], ("rejected", "revoked", IP, "/async/")
        )

    async def test_used_up(self):
        token, record = await sync_to_async(issue_token)(self.user, max_uses=1)
        self.assertEqual(await aget_user(token), self.user)
        self.assertIsNone(await aget_user(self.request(token)))
        self.assertEqual(
            [kind_reason[:2] for kind_reason in await self.events(record)],
            [("issued", ""), ("used", ""), ("rejected", "used_up")],
        )
        await record.arefresh_from_db()
        self.assertEqual(record.use_count, 1)

    async def test_wrong_scope(self):
        token, record = await sync_to_async(issue_token)(self.user, "a")
        async with self.assertNumQueriesAsync(QueryBudgetTests.WRONG_SCOPE_QUERIES):
            self.assertIsNone(await aget_user(self.request(token), "b"))
        self.assertEqual(
            (await self.events(record))[-1],
            ("rejected", "wrong_scope", IP, "/async/"),
        )

    async def test_forged(self):
        token, _ = await sync_to_async(issue_token)(self.user)
        async with self.assertNumQueriesAsync(QueryBudgetTests.FORGED_QUERIES):
            self.assertIsNone(await aget_user(self.request(forge(token))))


class NotInstalledTests(CreateUserMixin, TestCase):
    """
    Without "sesame_db" in INSTALLED_APPS, stored tokens are rejected.

    override_settings(INSTALLED_APPS=...) rebuilds the app registry for the
    test and restores it afterwards; the tables stay, which doesn't matter
    since nothing may query them.
    """

    def installed_apps(self):
        from django.conf import settings

        return [app for app in settings.INSTALLED_APPS if app != "sesame_db"]

    def test_stored_token_rejected(self):
        token, _ = issue_token(self.user)
        receiver = Receiver(self, token_rejected)
        with override_settings(INSTALLED_APPS=self.installed_apps()):
            self.assertFalse(store.is_installed())
            with self.assertNumQueries(0):
                self.assertIsNone(get_user(token))
            # Stateless tokens still work.
            self.assertEqual(get_user(get_token(self.user)), self.user)
        [call] = receiver.calls
        self.assertEqual(call["reason"], Reason.MALFORMED)
        self.assertIsNone(call["token_id"])
        self.assertTrue(store.is_installed())
        self.assertEqual(get_user(token), self.user)

    def test_issue_requires_the_app(self):
        with (
            override_settings(INSTALLED_APPS=self.installed_apps()),
            self.assertRaisesMessage(
                ImproperlyConfigured,
                "the database store requires 'sesame_db' in INSTALLED_APPS",
            ),
        ):
            get_token(self.user, store=True)

    def test_store_setting_requires_the_app(self):
        # No system check can report this: without the app, sesame_db's checks
        # aren't registered, and nothing imports its modules before checks
        # run. Issuing the first link fails loudly instead.
        with (
            override_settings(INSTALLED_APPS=self.installed_apps(), SESAME_STORE=True),
            self.assertRaisesMessage(
                ImproperlyConfigured,
                "the database store requires 'sesame_db' in INSTALLED_APPS: add it or set SESAME_STORE to False",
            ),
        ):
            get_token(self.user)


class CustomUserModelTests(SimpleTestCase):
    """
    Redeem stored tokens with custom user models on SQLite.

    IssuedToken's foreign key to AUTH_USER_MODEL is bound when the models are
    imported, so override_settings(AUTH_USER_MODEL=...) cannot change it: each
    test runs in a fresh interpreter with another user model.
    """

    SETTINGS = textwrap.dedent(
        """
        from tests.settings import *  # noqa: F403

        AUTH_USER_MODEL = "{model}"
        """
    )
    SCRIPT = textwrap.dedent(
        """
        import django

        django.setup()

        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from sesame_db.models import TokenEvent
        from sesame_db.utils import get_user, issue_token

        call_command("migrate", run_syncdb=True, verbosity=0)
        user = get_user_model().objects.create_user("john", "j@example.com", "pw")
        token, record = issue_token(user)
        print(get_user(token))
        print(*TokenEvent.objects.order_by("pk").values_list("kind", flat=True))
        print(set(TokenEvent.objects.values_list("user_id", flat=True)) == {user.pk})
        """
    )

    def run_with_user_model(self, model):
        root = Path(__file__).resolve().parent.parent
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "custom_user_settings.py").write_text(
                self.SETTINGS.format(model=model)
            )
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "custom_user_settings",
                "PYTHONPATH": os.pathsep.join([directory, str(root)]),
                # SQLite, so as not to touch the PostgreSQL run's server.
                "SESAME_TEST_DB": "sqlite",
            }
            result = subprocess.run(
                [sys.executable, "-c", self.SCRIPT],
                capture_output=True,
                text=True,
                env=env,
                cwd=root,
                timeout=120,
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(result.stdout.splitlines(), ["john", "issued used", "True"])

    RACE_SETTINGS = textwrap.dedent(
        """
        from tests.settings import *  # noqa: F403

        INSTALLED_APPS = [*INSTALLED_APPS, "race_users"]  # noqa: F405
        AUTH_USER_MODEL = "{model}"
        SESAME_INVALIDATE_ON_EMAIL_CHANGE = True
        # A test database of its own, on the server of the test run.
        DATABASES = {{
            "default": {{
                **DATABASES["default"],  # noqa: F405
                "TEST": {{"NAME": "sesame_race_{pid}"}},
            }}
        }}
        """
    )
    # A user model without is_active, with another USERNAME_FIELD and a
    # nullable email field.
    RACE_MODELS = textwrap.dedent(
        """
        from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
        from django.db import models


        class Manager(BaseUserManager):
            def create_user(self, handle, contact=None, password=None):
                user = self.model(handle=handle, contact=contact)
                user.set_password(password)
                user.save()
                return user


        class HandleUser(AbstractBaseUser):
            handle = models.CharField(max_length=150, unique=True)
            contact = models.EmailField(null=True, blank=True)

            USERNAME_FIELD = "handle"
            EMAIL_FIELD = "contact"

            objects = Manager()

            def __str__(self):
                return self.handle
        """
    )
    # Each change is made once, just before the conditional UPDATE.
    RACE_SCRIPT = textwrap.dedent(
        """
        import django

        django.setup()

        from unittest import mock

        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test.utils import setup_databases, teardown_databases

        from sesame_db import store
        from sesame_db.models import TokenEvent
        from sesame_db.utils import get_user, issue_token

        databases = setup_databases(verbosity=0, interactive=False)
        print(connection.vendor, connection.settings_dict["NAME"])
        User = get_user_model()
        email = User.get_email_field_name()
        initial = None if User._meta.get_field(email).null else "john@example.com"
        user = User.objects.create_user("john", initial, "pw")
        consume = store._consume


        def set_email(value):
            def change(user):
                setattr(user, email, value)
                user.save()

            return change


        def set_password(user):
            user.set_password("changed")
            user.save()


        def deactivate(user):
            user.is_active = False
            user.save()


        changes = {
            "unchanged": lambda user: None,
            "email-blank": set_email(""),
            "email": set_email("jack@example.com"),
            "password": set_password,
        }
        if any(field.name == "is_active" for field in User._meta.concrete_fields):
            changes["active"] = deactivate
        for name, change in changes.items():
            token, record = issue_token(User.objects.get(pk=user.pk))
            pending = [change]

            def change_then_consume(record, *args):
                while pending:
                    pending.pop()(User.objects.get(pk=record.user_id))
                return consume(record, *args)

            with mock.patch("sesame_db.store._consume", change_then_consume):
                result = get_user(token)
            record.refresh_from_db()
            event = TokenEvent.objects.filter(token=record).latest("pk")
            print(name, result, record.use_count, event.kind, event.reason or "-")
        teardown_databases(databases, verbosity=0)
        """
    )

    def race_with_user_model(self, model):
        root = Path(__file__).resolve().parent.parent
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "race_settings.py").write_text(
                self.RACE_SETTINGS.format(model=model, pid=os.getpid())
            )
            Path(directory, "race_users").mkdir()
            Path(directory, "race_users", "__init__.py").write_text("")
            Path(directory, "race_users", "models.py").write_text(self.RACE_MODELS)
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "race_settings",
                "PYTHONPATH": os.pathsep.join([directory, str(root)]),
                # The database of the test run: on PostgreSQL, its server.
                "SESAME_TEST_DB": connection.vendor,
            }
            result = subprocess.run(
                [sys.executable, "-c", self.RACE_SCRIPT],
                capture_output=True,
                text=True,
                env=env,
                cwd=root,
                timeout=120,
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        database, *lines = result.stdout.splitlines()
        self.assertTrue(database.startswith(connection.vendor), database)
        return lines

    # The password, email and is_active columns live in the parent's table.
    def test_user_change_before_update_multi_table_inheritance(self):
        self.assertEqual(
            self.race_with_user_model("tests.ChildUser"),
            [
                "unchanged john 1 used -",
                "email-blank None 0 rejected invalidated",
                "email None 0 rejected invalidated",
                "password None 0 rejected invalidated",
                "active None 0 rejected inactive_user",
            ],
        )

    # None and "" give the same user digest: that change is allowed, after a
    # second UPDATE.
    def test_user_change_before_update_without_is_active(self):
        self.assertEqual(
            self.race_with_user_model("race_users.HandleUser"),
            [
                "unchanged john 1 used -",
                "email-blank john 1 used -",
                "email None 0 rejected invalidated",
                "password None 0 rejected invalidated",
            ],
        )

    # Regression: store._consume() bound record.user_id, a uuid.UUID, as a raw
    # parameter of its INSERT; sqlite3 can't bind UUIDs, so every valid use
    # failed for projects with UUID user keys on SQLite.
    def test_uuid_user(self):
        self.run_with_user_model("tests.UUIDUser")

    # With multi-table inheritance, user fields span two tables: the store
    # loads such users through the ORM instead of its prebuilt SELECT.
    def test_multi_table_inheritance_user(self):
        self.run_with_user_model("tests.ChildUser")

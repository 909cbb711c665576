from __future__ import annotations

import base64
import datetime
from typing import Any

import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test import RequestFactory, TestCase
from django.utils import timezone

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token

from .mixins import CreateUserMixin

HOUR = datetime.timedelta(hours=1)


class StatusTests(CreateUserMixin, TestCase):
    def make(self, **fields):
        """An unsaved token: status is computed in Python."""
        fields.setdefault("user", self.user)
        return IssuedToken(**fields)

    def test_active(self):
        now = timezone.now()
        cases: list[dict[str, Any]] = [
            {},
            {"expires_at": now + HOUR},
            {"max_uses": 2, "use_count": 1},
            {"expires_at": now + HOUR, "max_uses": 1, "use_count": 0},
        ]
        for fields in cases:
            with self.subTest(**fields):
                self.assertEqual(self.make(**fields).status, IssuedToken.Status.ACTIVE)

    def test_expired(self):
        token = self.make(expires_at=timezone.now() - HOUR)
        self.assertEqual(token.status, IssuedToken.Status.EXPIRED)

    def test_expired_at_the_expiry_instant(self):
        moment = timezone.now()
        with time_machine.travel(moment, tick=False):
            self.assertEqual(
                self.make(expires_at=moment).status, IssuedToken.Status.EXPIRED
            )
            self.assertEqual(
                self.make(
                    expires_at=moment + datetime.timedelta(microseconds=1)
                ).status,
                IssuedToken.Status.ACTIVE,
            )

    def test_revoked(self):
        token = self.make(revoked_at=timezone.now())
        self.assertEqual(token.status, IssuedToken.Status.REVOKED)

    def test_used_up(self):
        token = self.make(max_uses=3, use_count=3)
        self.assertEqual(token.status, IssuedToken.Status.USED_UP)

    def test_revoked_comes_first(self):
        token = self.make(
            revoked_at=timezone.now(),
            expires_at=timezone.now() - HOUR,
            max_uses=1,
            use_count=1,
        )
        self.assertEqual(token.status, IssuedToken.Status.REVOKED)

    def test_expired_comes_before_used_up(self):
        token = self.make(expires_at=timezone.now() - HOUR, max_uses=1, use_count=1)
        self.assertEqual(token.status, IssuedToken.Status.EXPIRED)

    def test_status_values(self):
        self.assertEqual(
            sorted(IssuedToken.Status.values),
            ["active", "expired", "revoked", "used_up"],
        )


class StrTests(CreateUserMixin, TestCase):
    def test_str_shows_id_user_and_scope_but_not_the_token(self):
        token, record = issue_token(self.user, scope="report:42", label="Q3 report")
        record = IssuedToken.objects.select_related("user").get(pk=record.pk)
        text = str(record)
        self.assertEqual(text, f"Link #{record.pk} for john (report:42)")
        self.assertNotIn(token, text)
        self.assertNotIn(token[1:], text)
        self.assertNotIn(token[1:9], text)

    def test_str_without_scope(self):
        token, record = issue_token(self.user)
        record.user = self.user
        self.assertEqual(str(record), f"Link #{record.pk} for john")
        self.assertNotIn(token[1:9], str(record))

    def test_str_of_a_link_loaded_with_its_user_costs_no_query(self):
        _, record = issue_token(self.create_user("alice"), scope="report:1")
        loaded = IssuedToken.objects.select_related("user").get(pk=record.pk)
        with self.assertNumQueries(0):
            self.assertEqual(str(loaded), f"Link #{record.pk} for alice (report:1)")

    def test_str_doesnt_load_the_user(self):
        # A list of links must not cost a query per row to show them, as in
        # the delete confirmation of a user with many links.
        _, record = issue_token(self.user, scope="report:1")
        loaded = IssuedToken.objects.get(pk=record.pk)
        with self.assertNumQueries(0):
            self.assertEqual(
                str(loaded), f"Link #{record.pk} for user #{self.user.pk} (report:1)"
            )

    def test_str_of_an_unsaved_link_without_user(self):
        self.assertEqual(str(IssuedToken(scope="x")), "Link #None for ? (x)")

    def test_event_str(self):
        token, record = issue_token(self.user)
        event = TokenEvent.objects.get(token=record)
        text = str(event)
        self.assertIn(f"#{record.pk}", text)
        self.assertIn("issued", text)
        self.assertNotIn(token[1:9], text)


class CheckConstraintTests(CreateUserMixin, TestCase):
    def test_save_rejects_use_count_above_max_uses(self):
        record = IssuedToken(user=self.user, max_uses=1, use_count=2, user_digest="x")
        with self.assertRaises(IntegrityError), transaction.atomic():
            record.save()
        self.assertFalse(IssuedToken.objects.exists())

    def test_update_rejects_use_count_above_max_uses(self):
        _, record = issue_token(self.user, max_uses=2)
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.filter(pk=record.pk).update(use_count=F("max_uses") + 1)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)

    def test_lowering_max_uses_below_use_count_is_rejected(self):
        _, record = issue_token(self.user, max_uses=5)
        IssuedToken.objects.filter(pk=record.pk).update(use_count=3)
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.filter(pk=record.pk).update(max_uses=2)

    def test_allowed_values(self):
        # Equal is allowed (used up), and there's no limit without max_uses.
        IssuedToken.objects.create(
            user=self.user, max_uses=2, use_count=2, user_digest="x"
        )
        IssuedToken.objects.create(
            user=self.user, max_uses=None, use_count=10**6, user_digest="x"
        )
        self.assertEqual(IssuedToken.objects.count(), 2)

    def test_validate_constraints(self):
        record = IssuedToken(user=self.user, max_uses=1, use_count=2, user_digest="x")
        with self.assertRaises(ValidationError) as context:
            record.validate_constraints()
        self.assertIn(
            "sesame_db_token_use_count_lte_max_uses", str(context.exception.messages)
        )


class RevokeTests(CreateUserMixin, TestCase):
    def test_revoke_returns_true_then_false(self):
        admin = self.create_user("admin")
        _, record = issue_token(self.user)
        self.assertTrue(record.revoke(by=admin, reason="leaked"))
        # The instance is refreshed.
        self.assertIsNotNone(record.revoked_at)
        self.assertEqual(record.revoked_by, admin)
        self.assertEqual(record.revoke_reason, "leaked")
        self.assertEqual(record.status, IssuedToken.Status.REVOKED)
        first = record.revoked_at
        self.assertFalse(record.revoke(reason="again"))
        record.refresh_from_db()
        self.assertEqual(record.revoked_at, first)
        self.assertEqual(record.revoked_by, admin)
        self.assertEqual(record.revoke_reason, "leaked")

    def test_revoke_stale_instance(self):
        # Another instance of a row revoked elsewhere isn't revoked twice.
        _, record = issue_token(self.user)
        IssuedToken.objects.get(pk=record.pk).revoke(reason="first")
        self.assertIsNone(record.revoked_at)
        self.assertFalse(record.revoke(reason="second"))
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="revoked").count(), 1
        )

    def test_revoke_only_this_token(self):
        _, record = issue_token(self.user)
        _, other = issue_token(self.user)
        record.revoke()
        other.refresh_from_db()
        self.assertIsNone(other.revoked_at)

    def test_revoked_token_stops_working(self):
        token, record = issue_token(self.user)
        record.revoke()
        self.assertIsNone(get_user(token))


class NoSecretAtRestTests(CreateUserMixin, TestCase):
    """No column of the rows that a token leaves behind lets anyone rebuild it."""

    def forms_of_secret(self, token):
        raw = base64.urlsafe_b64decode(token[1:])
        mac = raw[-12:]
        return {
            "token": token,
            "payload": token[1:],
            "payload hex": raw.hex(),
            "mac hex": mac.hex(),
            "mac base64": base64.urlsafe_b64encode(mac).decode().rstrip("="),
            "mac base64 std": base64.b64encode(mac).decode().rstrip("="),
            # The MAC starts at byte 15, which isn't a multiple of 3: the
            # token's own Base64 of it is shifted; a 12-character chunk of the
            # token's last 16 characters must not appear either.
            "token tail": token[-16:],
        }

    def values(self, instance):
        for field in type(instance)._meta.concrete_fields:
            yield field.name, getattr(instance, field.attname)

    def assertNoSecret(self, token, instance):
        secrets = self.forms_of_secret(token)
        mac = base64.urlsafe_b64decode(token[1:])[-12:]
        for name, value in self.values(instance):
            if isinstance(value, bytes):
                self.assertNotIn(mac, value, name)
                value = value.hex()
            text = "" if value is None else str(value)
            for label, secret in secrets.items():
                self.assertNotIn(
                    secret, text, f"{label} found in {type(instance).__name__}.{name}"
                )

    def test_rows_hold_no_secret(self):
        request = RequestFactory().get("/path/", HTTP_USER_AGENT="agent")
        token, record = issue_token(
            self.user, scope="s", label="label", max_uses=1, request=request
        )
        self.assertEqual(
            get_user(RequestFactory().get("/", {"sesame": token}), "s"), self.user
        )
        self.assertIsNone(get_user(RequestFactory().get("/", {"sesame": token}), "s"))
        self.assertIsNone(get_user(token, "other"))
        record.revoke(reason="done")
        record.refresh_from_db()
        self.assertNoSecret(token, record)
        events = list(TokenEvent.objects.filter(token=record))
        # issued, used, rejected (used up), rejected (wrong scope), revoked
        self.assertEqual(len(events), 5)
        for event in events:
            self.assertNoSecret(token, event)

    def test_user_digest_is_not_the_mac(self):
        token, record = issue_token(self.user)
        mac = base64.urlsafe_b64decode(token[1:])[-12:]
        self.assertNotIn(mac.hex(), record.user_digest)
        self.assertEqual(len(record.user_digest), 32)


class StatusRuleTests(CreateUserMixin, TestCase):
    """The two forms of each condition of the status rule, ``STOPS``, select the same tokens."""

    def test_python_and_database_forms_agree(self):
        now = timezone.now()
        hour = datetime.timedelta(hours=1)
        # Every combination of the columns that the rule reads, at and
        # around its boundaries.
        records = []
        for revoked_at in [None, now - hour, now + hour]:
            for expires_at in [None, now - hour, now, now + hour]:
                for max_uses, use_count in [(None, 0), (None, 5), (2, 1), (2, 2)]:
                    _, record = issue_token(self.user)
                    IssuedToken.objects.filter(pk=record.pk).update(
                        revoked_at=revoked_at,
                        expires_at=expires_at,
                        max_uses=max_uses,
                        use_count=use_count,
                    )
                    records.append(IssuedToken.objects.get(pk=record.pk))
        in_database = {
            status: set(
                IssuedToken.objects.filter(
                    IssuedToken.status_condition(status, now)
                ).values_list("pk", flat=True)
            )
            for status in IssuedToken.Status
        }
        for record in records:
            with self.subTest(pk=record.pk):
                self.assertEqual(
                    {status for status, pks in in_database.items() if record.pk in pks},
                    {record.status_at(now)},
                )
        # Each status occurs.
        self.assertTrue(all(in_database.values()))

    def test_stopped_before(self):
        now = timezone.now()
        day = datetime.timedelta(days=1)
        _, old_revoked = issue_token(self.user)
        _, new_revoked = issue_token(self.user)
        _, old_expired = issue_token(self.user, max_age=1)
        _, old_used_up = issue_token(self.user, max_uses=1)
        _, active = issue_token(self.user)
        IssuedToken.objects.filter(pk=old_revoked.pk).update(revoked_at=now - 3 * day)
        IssuedToken.objects.filter(pk=new_revoked.pk).update(revoked_at=now)
        IssuedToken.objects.filter(pk=old_expired.pk).update(expires_at=now - 3 * day)
        IssuedToken.objects.filter(pk=old_used_up.pk).update(
            use_count=1, last_used_at=now - 3 * day
        )
        self.assertEqual(
            set(
                IssuedToken.objects.stopped_before(now - day).values_list(
                    "pk", flat=True
                )
            ),
            {old_revoked.pk, old_expired.pk, old_used_up.pk},
        )


class EventIndexTests(TestCase):
    """The event table's indexes: each lookup of the audit has one, and no index repeats the start of another."""

    def test_no_index_is_the_prefix_of_another(self):
        table = TokenEvent._meta.db_table
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, table)
        indexes = [
            tuple(info["columns"])
            for info in constraints.values()
            if info["index"] and not info["primary_key"]
        ]
        self.assertIn(("token_id", "created_at"), indexes)
        self.assertIn(("user_id", "created_at"), indexes)
        for index in indexes:
            for other in indexes:
                if other != index:
                    with self.subTest(index=index, other=other):
                        self.assertNotEqual(other[: len(index)], index)

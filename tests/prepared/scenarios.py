"""
A stored use on connections with prepared statements: run by ``tests/test_prepared.py`` in a subprocess.

The subprocess runs with ``SESAME_TEST_PG_PREPARED=1``: the test settings
give the PostgreSQL connection Django's ``server_side_binding`` option and a
``prepare_threshold``, so psycopg prepares a statement once it has run that
often. pytest doesn't collect this module by itself.

"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TestCase

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user, issue_token


class PreparedStatementsTests(TestCase):
    def setUp(self) -> None:
        self.user = get_user_model().objects.create_user("john", "john@example.com")

    def prepared(self) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall()]

    def test_connection_prepares(self) -> None:
        # What the rest relies on: the settings took effect.
        self.assertIs(connection.settings_dict["OPTIONS"]["server_side_binding"], True)
        self.assertIsNotNone(connection.connection.prepare_threshold)

    def test_the_statements_of_a_use_are_prepared(self) -> None:
        # The statements of the hot path have the same text on every use,
        # so psycopg prepares them: the server stops parsing and planning
        # them each time (docs/performance.rst).
        token, record = issue_token(self.user)
        other, _ = issue_token(self.user)
        for _ in range(3):
            self.assertEqual(get_user(token), self.user)
            self.assertEqual(get_user(other), self.user)
        prepared = self.prepared()
        # The calls of the functions that read the link and count its use,
        # whose own statements PL/pgSQL plans once per connection anyway.
        fetch = [s for s in prepared if s.startswith("SELECT * FROM sesame_db_fetch_")]
        consume = [s for s in prepared if s.startswith("SELECT sesame_db_use_")]
        self.assertEqual(len(fetch), 1, prepared)
        self.assertEqual(len(consume), 1, prepared)
        # Each use counted and audited once.
        record.refresh_from_db()
        self.assertEqual(record.use_count, 3)
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="used").count(), 3
        )

    def test_rejections_after_preparing(self) -> None:
        token, record = issue_token(self.user, max_uses=4)
        for _ in range(4):
            self.assertEqual(get_user(token), self.user)
        self.assertIsNone(get_user(token))
        IssuedToken.objects.filter(pk=record.pk).update(use_count=0)
        self.user.set_password("changed")
        self.user.save()
        self.assertIsNone(get_user(token))
        reasons = list(
            TokenEvent.objects.filter(token=record, kind="rejected")
            .order_by("pk")
            .values_list("reason", flat=True)
        )
        self.assertEqual(reasons, ["used_up", "invalidated"])

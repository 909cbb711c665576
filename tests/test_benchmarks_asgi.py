"""
Tests of benchmarks/asgi.py and of the servers' summary of benchmarks/load.py, on tiny inputs, so that they can't rot.

Nothing here times anything.

"""

from __future__ import annotations

import contextlib
import io

from django.test import TransactionTestCase

from benchmarks import asgi, load
from sesame_db.utils import get_token

from .mixins import CreateUserMixin


class CaseTests(CreateUserMixin, TransactionTestCase):
    # The requests run through Django's handlers, in other threads for the
    # ASGI handler's hops: a TransactionTestCase, so that they see the user.
    def test_asgi_case_counts_the_hops_of_each_request(self):
        token = get_token(self.user)
        case = asgi.Case("async view", "ASGI", "/aoptional/", token)
        case.batch(3)
        self.assertEqual(case.requests, 3)
        hops = case.hops_per_request
        # The stateless check's one hop: the SELECT of its user.
        self.assertEqual(hops["QuerySet.get"], 1)
        # Django's own, for the sync middleware of the test project.
        self.assertEqual(hops["SessionMiddleware.process_request"], 1)

    def test_wsgi_case(self):
        token = get_token(self.user)
        case = asgi.Case("sync view", "WSGI", "/optional/", token)
        self.assertGreater(case.batch(2), 0)
        self.assertEqual(case.requests, 2)
        self.assertEqual(case.hops_per_request, {})

    def test_case_rejects_other_statuses(self):
        case = asgi.Case("forged", "ASGI", "/adecorated/", "forged")
        with self.assertRaises(SystemExit):
            case.batch(1)

    def test_report(self):
        case = asgi.Case("async view", "ASGI", "/aoptional/", get_token(self.user))
        case.samples.append(case.batch(1))
        output: list[str] = []
        asgi.report([case], output.append)
        self.assertIn("async view", output[-1])
        self.assertIn("QuerySet.get 1", output[-1])


class PrintServersTests(TransactionTestCase):
    def test_stored_against_stateless(self):
        def phase(requests: int) -> load.Phase:
            return load.Phase(requests, 1.0, {"200": requests}, 1.0, 2.0)

        reports = {
            "uvicorn": {
                "server": "uvicorn 0.55.0",
                "measured": {
                    "stateless": {"phase": phase(200)},
                    "stored": {"phase": phase(150)},
                },
                "soak": {"phase": phase(170)},
            }
        }
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            load.print_throughputs(reports)
        self.assertIn("uvicorn 0.55.0", output.getvalue())
        self.assertIn("0.75x", output.getvalue())


class OneRoundTripTests(CreateUserMixin, TransactionTestCase):
    # The prototype of benchmarks/one_round_trip.py, which only PostgreSQL
    # can run: SQLite has no data-modifying WITH, and counts a use in two
    # statements.
    def test_one_statement(self):
        from django.db import connection

        from benchmarks import one_round_trip
        from sesame_db.models import IssuedToken, TokenEvent
        from sesame_db.utils import issue_token

        _, record = issue_token(self.user, max_uses=1)
        if connection.vendor != "postgresql":
            with self.assertRaises(ValueError):
                one_round_trip.one_statement("default")
            return
        fetch_and_consume = one_round_trip.make_fetch_and_consume("default")
        with self.assertNumQueries(1):
            loaded, counted = fetch_and_consume(record.pk)
        self.assertTrue(counted)
        self.assertEqual(loaded.user, self.user)
        self.assertEqual(IssuedToken.objects.get(pk=record.pk).use_count, 1)
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="used").count(), 1
        )
        # Used up: not counted again, no event.
        _, counted = fetch_and_consume(record.pk)
        self.assertFalse(counted)
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="used").count(), 1
        )

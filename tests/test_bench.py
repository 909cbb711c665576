"""
Tests of the benchmark's pieces (benchmarks/bench.py), on tiny inputs, so that it can't rot.

Nothing here times anything: the statistics, the order of the rounds, the
durability of the PostgreSQL cluster, the cold tokens and the purge's memory
probe are checked for what they compute, not for how fast.

"""

from __future__ import annotations

import os
import tempfile
from unittest import mock

import pytest
from django.db import connection
from django.test import SimpleTestCase, TransactionTestCase

from benchmarks import bench
from sesame_db.models import IssuedToken
from sesame_db.utils import get_user, issue_token

from .mixins import CreateUserMixin


class SummarizeTests(SimpleTestCase):
    def test_odd_count(self):
        self.assertEqual(
            bench.summarize([5.0, 1.0, 4.0, 2.0, 3.0]),
            bench.Summary(median=3.0, q1=2.0, q3=4.0, low=1.0, high=5.0, count=5),
        )

    def test_even_count(self):
        summary = bench.summarize([4.0, 1.0, 3.0, 2.0])
        self.assertEqual(summary.median, 2.5)
        # Inclusive quartiles: interpolated between the samples.
        self.assertEqual((summary.q1, summary.q3), (1.75, 3.25))
        self.assertEqual((summary.low, summary.high), (1.0, 4.0))

    def test_one_sample(self):
        self.assertEqual(
            bench.summarize([7.0]),
            bench.Summary(median=7.0, q1=7.0, q3=7.0, low=7.0, high=7.0, count=1),
        )

    def test_no_samples(self):
        with self.assertRaises(ValueError):
            bench.summarize([])

    def test_median_not_best(self):
        # One quiet moment doesn't make the figure, unlike best-of-N.
        self.assertEqual(bench.summarize([1.0, 10.0, 10.0, 10.0, 10.0]).median, 10.0)


class InterleaveTests(SimpleTestCase):
    def test_two_operations_alternate(self):
        self.assertEqual(bench.interleave(2, 4), [[0, 1], [1, 0], [0, 1], [1, 0]])

    def test_each_operation_takes_each_place(self):
        rounds = bench.interleave(3, 6)
        self.assertEqual(len(rounds), 6)
        for order in rounds:
            self.assertEqual(sorted(order), [0, 1, 2])
        for place in range(3):
            self.assertEqual(
                sorted(order[place] for order in rounds), [0, 0, 1, 1, 2, 2]
            )


class MeasureTests(TransactionTestCase):
    def test_rounds_are_interleaved_and_sampled(self):
        calls: list[str] = []

        def case(label, **kwargs):
            return bench.Case(
                label,
                "default",
                lambda: calls.append(label),
                lambda result: result is None,
                number=2,
                **kwargs,
            )

        a, b, slow = case("a"), case("b"), case("slow", rounds=1, warm=False)
        bench.measure([a, b, slow], rounds=3, min_time=0)
        self.assertEqual((len(a.samples), len(b.samples), len(slow.samples)), (3, 3, 1))
        self.assertEqual(a.queries, [])
        # Each case is checked and its queries captured; then each round
        # runs a warm-up call and a batch of 2 calls of each case, starting
        # with a different case each round; "slow" only in the first round,
        # without warm-up.
        self.assertEqual(
            calls,
            ["a", "a", "b", "b", "slow", "slow"]
            + ["a"] * 3
            + ["b"] * 3
            + ["slow"] * 2  # a b slow
            + ["b"] * 3
            + ["a"] * 3  # b (slow) a
            + ["a"] * 3
            + ["b"] * 3,  # (slow) a b
        )

    def test_ratio_of_each_round(self):
        case = bench.Case("case", "default", lambda: None, lambda r: True)
        baseline = bench.Case("baseline", "default", lambda: None, lambda r: True)
        # The machine slows down: the ratio of each round stays 2 or 3.
        case.samples = [2.0, 6.0, 30.0]
        baseline.samples = [1.0, 2.0, 10.0, 10.0]
        value, spread = bench.ratio(case, baseline)
        # Paired with the first 3 rounds of the baseline.
        self.assertEqual(value, 3.0)
        self.assertEqual((spread.low, spread.median, spread.high), (2.0, 3.0, 3.0))
        self.assertEqual(spread.count, 3)


class GoalsTests(SimpleTestCase):
    def test_verdicts(self):
        figures = {
            "get_token": "0.85",
            "get_user": "0.95",
            "forged:sqlite": "1 queries",
            "stored:sqlite": "0.6",
            "forged:postgresql": "0.0496 0.04 0.06",
        }
        skipped = {"postgresql": "no server", "stored:postgresql": "not durable"}
        rows = bench.goals_rows(figures, skipped)
        verdicts = {row[0]: row[3] for row in rows[1:]}
        texts = {goal.key: goal.text for goal in bench.GOALS}
        self.assertEqual(verdicts[texts["get_token"]], "met")
        self.assertEqual(verdicts[texts["get_user"]], "not met")
        self.assertEqual(verdicts[texts["forged:sqlite"]], "not met")
        self.assertEqual(verdicts[texts["stored:sqlite"]], "met")
        self.assertEqual(verdicts[texts["stored:postgresql"]], "skipped: not durable")
        self.assertEqual(verdicts[texts["forged:postgresql"]], "met")
        # The prepared-statements figure is skipped with PostgreSQL's reason.
        self.assertEqual(
            verdicts[texts["stored:postgresql-prepared"]], "skipped: no server"
        )
        shown = {row[0]: row[2] for row in rows[1:]}
        self.assertEqual(shown[texts["forged:postgresql"]], "0.050x [0.040-0.060]")
        self.assertEqual(shown[texts["forged:sqlite"]], "1 queries")
        self.assertEqual(len(rows), 1 + len(bench.GOALS) + 1)  # + the load test's

    def test_rst_table(self):
        table = bench.rst_table([("a", "bb"), ("ccc", "d")])
        self.assertEqual(
            table.splitlines(), ["===  ==", "a    bb", "===  ==", "ccc  d", "===  =="]
        )


class UnavailableTests(SimpleTestCase):
    def test_missing_postgresql_is_an_error_in_ci(self):
        # A server can't be made to be missing here: make its start fail.
        def unavailable():
            raise bench.Unavailable("no server here")

        with (
            mock.patch.object(bench, "durable_cluster_settings", unavailable),
            mock.patch.dict(os.environ, {"CI": "true"}),
            self.assertRaises(SystemExit) as caught,
        ):
            bench.main(["--quick", "--db", "postgresql"])
        self.assertEqual(
            str(caught.exception),
            "PostgreSQL is unavailable, and CI is set: no server here",
        )


class ColdTokensTests(CreateUserMixin, TransactionTestCase):
    def test_fill_and_cold_tokens(self):
        _, record = issue_token(self.user)
        added, _ = bench.fill("default", record, 40)
        self.assertEqual(added, 39)
        bench.fill("default", record, 50, purgeable=True)
        self.assertEqual(IssuedToken.objects.count(), 50)
        self.assertEqual(
            IssuedToken.objects.filter(revoked_at__isnull=False).count(), 10
        )
        tokens = bench.cold_tokens("default", 30)
        self.assertGreater(len(set(tokens)), 10)  # random, not one hot token
        for token in tokens:
            self.assertEqual(get_user(token), self.user)


class PurgeProbeTests(SimpleTestCase):
    def test_peak_rss_of_this_process(self):
        self.assertGreater(bench.peak_rss(), 10 * 2**20)

    def test_purge_in_a_child_process(self):
        with tempfile.TemporaryDirectory() as tmpdir:
            database = bench.sqlite_file(os.path.join(tmpdir, "purge.sqlite3"))
            result = bench.measure_purge(database, mode="migrate")
        self.assertGreater(result.peak_rss, 0)
        self.assertIn("Deleted 0 issued links", result.output)

    def test_child_peak_excludes_parent_memory(self):
        # ru_maxrss of a child keeps the peak of the parent it was forked
        # from, before exec: the probe must not report this process's memory.
        ballast = bytearray(256 * 2**20)
        ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
        with tempfile.TemporaryDirectory() as tmpdir:
            database = bench.sqlite_file(os.path.join(tmpdir, "purge.sqlite3"))
            result = bench.measure_purge(database, mode="migrate")
        self.assertLess(result.peak_rss, 256 * 2**20)
        del ballast


@pytest.mark.postgresql
class DurableClusterTests(SimpleTestCase):
    databases = {"default"}

    def test_durable_settings_in_force(self):
        import psycopg

        database = bench.start_durable_cluster()
        with psycopg.connect(
            host=database["HOST"], user=database["USER"], dbname=database["NAME"]
        ) as conn:
            values = bench.show_settings(conn)
        self.assertEqual(
            {name: values[name] for name in bench.DURABLE},
            {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
        )
        self.assertTrue(bench.is_durable(values))
        if not os.environ.get("SESAME_TEST_PGHOST"):
            # The test suite's own cluster isn't durable: the check can tell.
            self.assertFalse(bench.is_durable(bench.show_settings(connection)))

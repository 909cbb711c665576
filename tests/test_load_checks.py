"""
The load test with two app servers (benchmarks/load.py --app-servers 2), so that it can't rot.

The invariants of several servers are checked on made-up results first, to
show that each catches what it must; then a short run of the real thing:
two gunicorn masters sharing PostgreSQL through PgBouncer and Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.test import SimpleTestCase

from benchmarks import load

ROOT = Path(__file__).resolve().parent.parent


def result(number, kind, status, server, start, record_id=None):
    return load.Result(
        number, "soak", kind, record_id, status, start, start + 0.01, None, server
    )


class AppServerChecksTests(SimpleTestCase):
    def timeline(self):
        timeline = load.Timeline(start=0.0, deadline=10.0)
        timeline.revoked_ids = [7]
        timeline.revoke_committed = 5.0
        return timeline

    def results(self, limited_403=200, limited_429=100, late_ok_on=None):
        results = [
            result(1, load.REVOKED, 403, 0, 5.2, 7),
            result(2, load.REVOKED, 200 if late_ok_on == 1 else 403, 1, 5.5, 7),
            # Before the revocation: allowed.
            result(3, load.REVOKED, 200, 1, 4.0, 7),
        ]
        number = 10
        for count, status in [(limited_403, 403), (limited_429, 429)]:
            for _ in range(count):
                results.append(
                    result(number, load.RATE_LIMITED, status, number % 2, 9.0)
                )
                number += 1
        return results

    def violations(self, results):
        return {
            check.label.split(".")[0]: check.violations
            for check in load.check_app_servers(results, [self.timeline()], 2)
        }

    def test_all_hold(self):
        self.assertEqual(self.violations(self.results()), {"6c": 0, "8a": 0, "8b": 0})

    def test_revoked_link_accepted_by_the_other_server(self):
        self.assertEqual(self.violations(self.results(late_ok_on=1))["6c"], 1)

    def test_server_without_revoked_requests_is_a_violation(self):
        results = [r for r in self.results() if not (r.server == 1 and r.start > 5)]
        self.assertEqual(self.violations(results)["6c"], 1)

    def test_limit_per_process_rather_than_shared(self):
        # Six processes counting apart let 300 failures through.
        violations = self.violations(self.results(limited_403=300, limited_429=0))
        self.assertEqual(violations["8a"], 100)
        self.assertEqual(violations["8b"], 2)

    def test_one_server_never_limits(self):
        results = [r for r in self.results() if not (r.status == 429 and r.server == 1)]
        self.assertEqual(self.violations(results)["8b"], 1)


@pytest.mark.postgresql
class TwoAppServersRunTests(SimpleTestCase):
    def test_quick_run_with_two_app_servers(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "load.json"
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.load",
                    "--quick",
                    "--app-servers",
                    "2",
                    "--duration",
                    "8",
                    "--requests",
                    "200",
                    "--links",
                    "300",
                    "--json",
                    str(path),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if run.returncode != 0 and "Cannot start" in run.stderr + run.stdout:
                if os.environ.get("CI"):
                    self.fail(run.stderr + run.stdout)
                self.skipTest((run.stderr + run.stdout).strip().splitlines()[-1])
            self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
            report = json.loads(path.read_text())
        self.assertEqual(report["violations"], 0)
        labels = [check["label"] for check in report["invariants"]]
        for prefix in ("6c.", "8a.", "8b."):
            self.assertTrue(any(label.startswith(prefix) for label in labels))
        shared = report["servers"]["gunicorn"]["app_servers"]
        self.assertEqual(shared["servers"], 2)
        # Both servers served the soak, and the client over the limit got
        # exactly the limit's worth of checks across them.
        for statuses in shared["soak_by_server"].values():
            self.assertGreater(statuses.get("200", 0), 0)
        checked = sum(
            statuses.get("403", 0)
            for statuses in shared["rate_limit"]["by_server"].values()
        )
        self.assertEqual(checked, load.RATE_LIMIT[0])

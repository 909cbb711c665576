"""
The store on connections with Django's server-side binding and prepared statements.

Django binds parameters on the client by default; with ``OPTIONS``
``server_side_binding`` and ``prepare_threshold``, psycopg prepares each
statement that runs often enough, and the server stops parsing and planning
it (docs/performance.rst). The scenarios of ``tests/prepared/scenarios.py``
and the suites of the hot path's SQL, its query budgets and its concurrency
run in a subprocess with those options.

"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.postgresql
def test_with_prepared_statements() -> None:
    result = subprocess.run(
        [
            sys.executable,
            *(f"-W{option}" for option in sys.warnoptions),
            "-m",
            "pytest",
            "tests/prepared/scenarios.py",
            "tests/test_sql.py",
            "tests/test_query_budgets.py",
            "tests/test_concurrency.py",
            "tests/test_guests_concurrency.py",
            "-p",
            "no:randomly",
            "-q",
        ],
        capture_output=True,
        text=True,
        # The subprocess finds the parent's PostgreSQL server through the
        # environment (SESAME_TEST_DB, SESAME_TEST_PGSOCKET).
        env={
            **os.environ,
            "SESAME_TEST_PG_PREPARED": "1",
            "SESAME_TEST_PG_SUBPROCESS": "1",
        },
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    last = result.stdout.splitlines()[-1]
    assert " passed" in last and "skipped" not in last, result.stdout[-2000:]

"""
Every shape of user model, through stateless and stored tokens.

The scenarios are in :mod:`tests.usermodels.scenarios`, the shapes in
:mod:`tests.usermodels.shapes`. IssuedToken's foreign key to
:setting:`AUTH_USER_MODEL` is bound when the models are imported, so
``override_settings(AUTH_USER_MODEL=...)`` can't switch the store to another
user model: shapes with another user model run in a subprocess, on the same
database server, with :mod:`tests.usermodels.settings`. The others run here.

"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import TestCase, override_settings

from sesame_db.tokens import decode_token
from sesame_db.utils import get_token, get_user, issue_token
from tests.usermodels.scenarios import Scenarios
from tests.usermodels.shapes import SHAPE_VARIABLE, SHAPES

ROOT = Path(__file__).resolve().parent.parent

IN_PROCESS = [
    name
    for name, shape in SHAPES.items()
    if shape.user_model == settings.AUTH_USER_MODEL
]
IN_SUBPROCESS = [name for name in SHAPES if name not in IN_PROCESS]


def test_every_shape_runs():
    # The shapes that run here are the three classes below.
    assert IN_PROCESS == [
        "integer primary key",
        "SESAME_PRIMARY_KEY_FIELD",
        "users on another database",
    ]


@override_settings(**SHAPES["integer primary key"].settings)
class IntegerPrimaryKeyTests(Scenarios, TestCase):
    shape = SHAPES["integer primary key"]


@override_settings(**SHAPES["SESAME_PRIMARY_KEY_FIELD"].settings)
class PrimaryKeyFieldTests(Scenarios, TestCase):
    shape = SHAPES["SESAME_PRIMARY_KEY_FIELD"]

    def test_token_holds_the_field(self):
        self.assertEqual(decode_token(get_token(self.user), None).user_key, "john")


@override_settings(**SHAPES["users on another database"].settings)
class OtherDatabaseTests(Scenarios, TestCase):
    shape = SHAPES["users on another database"]
    databases = {"default", "other"}

    def test_nothing_on_default(self):
        with self.assertNumQueries(0, using="default"):
            get_user(get_token(self.user))
            get_user(issue_token(self.user)[0])


@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_user_model(name):
    """Run the scenarios with another user model, in a subprocess."""
    result = subprocess.run(
        [
            sys.executable,
            *(f"-W{option}" for option in sys.warnoptions),
            "-m",
            "pytest",
            "tests/usermodels/scenarios.py",
            "--ds=tests.usermodels.settings",
            "-p",
            "no:randomly",
            "-q",
        ],
        capture_output=True,
        text=True,
        # The subprocess finds the parent's PostgreSQL server through the
        # environment (SESAME_TEST_DB, SESAME_TEST_PGSOCKET).
        env={**os.environ, SHAPE_VARIABLE: name},
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    # The scenarios ran, and as many as for any shape.
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]

"""
Settings of a subprocess of the user-model matrix: tests.settings with one shape.

"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, TEST_DB
from tests.usermodels.shapes import SHAPE_VARIABLE, SHAPES

SHAPE = SHAPES[os.environ[SHAPE_VARIABLE]]
globals().update(SHAPE.settings)

if TEST_DB == "postgresql":
    # The parent's test databases live on the same server.
    for _alias, _database in DATABASES.items():
        _database["TEST"] = {"NAME": f"test_sesame_db_user_models_{_alias}"}

"""
The user models of the matrix, and what each needs.

This module is plain data: the child settings import it before Django is set up.

"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
    # Settings on top of tests.settings; AUTH_USER_MODEL defaults to auth.User.
    settings: dict[str, object]
    # The packer that tokens use for this user model.
    packer: str
    # The database that holds the users and the store.
    database: str = "default"
    # Whether the default manager hides some users (soft delete).
    hides_users: bool = False

    @property
    def user_model(self) -> str:
        return str(self.settings.get("AUTH_USER_MODEL", "auth.User"))


PACKERS = "sesame_db.packers."

SHAPES = {
    "integer primary key": Shape({}, PACKERS + "LongPacker"),
    "big integer primary key": Shape(
        {"AUTH_USER_MODEL": "tests.BigUser"}, PACKERS + "LongLongPacker"
    ),
    "UUID primary key": Shape(
        {"AUTH_USER_MODEL": "tests.UUIDUser"}, PACKERS + "UUIDPacker"
    ),
    "string primary key": Shape(
        {"AUTH_USER_MODEL": "tests.StrUser"}, PACKERS + "StrPacker"
    ),
    "custom USERNAME_FIELD": Shape(
        {"AUTH_USER_MODEL": "usermodels.EmailUser"}, PACKERS + "LongPacker"
    ),
    "SESAME_PRIMARY_KEY_FIELD": Shape(
        {
            "SESAME_PRIMARY_KEY_FIELD": "username",
            "SESAME_PACKER": PACKERS + "StrPacker",
        },
        PACKERS + "StrPacker",
    ),
    "multi-table inheritance": Shape(
        {"AUTH_USER_MODEL": "tests.ChildUser"}, PACKERS + "UUIDPacker"
    ),
    "proxy model": Shape(
        {"AUTH_USER_MODEL": "usermodels.ProxyUser"}, PACKERS + "LongLongPacker"
    ),
    "custom db_table and columns": Shape(
        {"AUTH_USER_MODEL": "usermodels.LegacyUser"}, PACKERS + "LongPacker"
    ),
    "soft delete manager": Shape(
        {"AUTH_USER_MODEL": "usermodels.SoftDeleteUser"},
        PACKERS + "LongPacker",
        hides_users=True,
    ),
    "soft delete manager, multi-table inheritance": Shape(
        {"AUTH_USER_MODEL": "usermodels.SoftDeleteChildUser"},
        PACKERS + "LongPacker",
        hides_users=True,
    ),
    "fixed-length column": Shape(
        {"AUTH_USER_MODEL": "usermodels.FixedCharUser"}, PACKERS + "LongPacker"
    ),
    "users on another database": Shape(
        {"DATABASE_ROUTERS": ["tests.routers.UsersElsewhereRouter"]},
        PACKERS + "LongPacker",
        database="other",
    ),
}

# The child process reads its shape from this environment variable.
SHAPE_VARIABLE = "SESAME_TEST_USER_MODEL"

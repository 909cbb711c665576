"""
Compare sesame_db with django-sesame 3.2 on the hot paths, and measure the database store, in one run.

Usage::

    python -m benchmarks.bench [--quick] [--db sqlite|postgresql|all]

This script configures Django itself, creates throwaway databases with
Django's test-database machinery, then prints:

1. Stateless tokens, on SQLite in memory: each operation timed for both
   libraries, alternating between them. Each library verifies tokens with its
   own backend only.
2. For each database (SQLite in memory, PostgreSQL): the database store next
   to django-sesame's valid stateless verification on the same database, the
   baseline of the ratios, with queries per operation.
3. For each database: the verification time of a stored token with 10^3 and
   10^6 rows in the token table (one database per size, so that the timings
   alternate; file-backed SQLite databases stand in for the in-memory one),
   and the peak memory of ``sesame_db_purge`` deleting 10^4 and 10^6 rows.

Timings are the best of several repeats, as with :mod:`timeit`; the
operations of a table alternate (ABBA...) to spread drift evenly. Nothing
asserts on time: goals are printed next to the figures.

PostgreSQL runs on a throwaway cluster that :mod:`tests.postgres` starts (or
on the server that ``SESAME_TEST_PGHOST`` names) and stops at exit; when it's
unavailable, its parts print why they're skipped.

It needs Django, django-sesame and, for PostgreSQL, psycopg, not the test
dependencies; pytest doesn't collect it.

"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import importlib.metadata
import io
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser
    from django.db.backends.base.base import BaseDatabaseWrapper

    from sesame_db.models import IssuedToken

# A database in memory that every thread shares: aget_user() runs its query
# in a worker thread, which would otherwise get an empty database of its own.
# (Django's test database for it, which the script uses, is shared too.)
DATABASE_NAME = "file:sesame_db_bench?mode=memory&cache=shared"

SQLITE = "default"  # in memory
# Part 3: one database per size of the token table, so that the timings
# alternate between sizes. SQLite's are files in a temporary directory.
SQLITE_SMALL = "sqlite_small"
SQLITE_BIG = "sqlite_big"
POSTGRESQL = "postgresql"
POSTGRESQL_SMALL = "postgresql_small"
POSTGRESQL_BIG = "postgresql_big"

SESAME_BACKEND = "sesame.backends.ModelBackend"
SESAME_DB_BACKEND = "sesame_db.backends.ModelBackend"

BULK_USERS = 1000

# Goals, printed next to the figures.
STORED_GOAL = 2.0  # stored use with audit / django-sesame valid stateless
FORGED_GOAL = 0.2  # forged stored token / django-sesame forged token
SIZE_GOAL = 1.2  # stored use at 10^6 rows / at 10^3 rows
PURGE_GOAL = 1.5  # peak memory of the purge at 10^6 rows / at 10^4 rows

HEADER = """\
sesame_db vs django-sesame benchmark{quick}
Figures move by up to 50% between runs, with the machine's load: compare
only ratios measured in the same run. Each figure is the best of {repeats}
short repeats ({slow} for issue_tokens), interleaved: the operations of a
table alternate, to spread drift evenly.
"""


class Router:
    """Send every query to the database under measurement."""

    def __init__(self) -> None:
        self.alias = SQLITE

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        return self.alias

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return self.alias

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True


ROUTER = Router()


@contextlib.contextmanager
def using(alias: str) -> Iterator[BaseDatabaseWrapper]:
    """Route every query to ``alias`` and yield its connection."""
    from django.db import connections

    previous, ROUTER.alias = ROUTER.alias, alias
    try:
        yield connections[alias]
    finally:
        ROUTER.alias = previous


def configure(tmpdir: str, postgresql: dict[str, object] | None) -> None:
    def sqlite_file(name: str) -> dict[str, Any]:
        path = os.path.join(tmpdir, f"{name}.sqlite3")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "TEST": {"NAME": path},
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
            },
        }

    databases: dict[str, dict[str, Any]] = {
        SQLITE: {"ENGINE": "django.db.backends.sqlite3", "NAME": DATABASE_NAME},
        SQLITE_SMALL: sqlite_file(SQLITE_SMALL),
        SQLITE_BIG: sqlite_file(SQLITE_BIG),
    }
    if postgresql is not None:
        for alias in (POSTGRESQL, POSTGRESQL_SMALL, POSTGRESQL_BIG):
            databases[alias] = {
                **postgresql,
                "TEST": {"NAME": f"test_sesame_db_bench_{alias}"},
            }
    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "sesame_db",
        ],
        DATABASES=databases,
        DATABASE_ROUTERS=[ROUTER],
        AUTHENTICATION_BACKENDS=[SESAME_DB_BACKEND],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()


class Databases:
    """Create test databases on demand; destroy them all at the end."""

    def __init__(self) -> None:
        self.created: dict[str, str] = {}

    def get(self, alias: str) -> BaseDatabaseWrapper:
        from django.db import connections

        connection = connections[alias]
        if alias not in self.created:
            old_name = connection.settings_dict["NAME"]
            connection.creation.create_test_db(
                verbosity=0, autoclobber=True, serialize=False
            )
            self.created[alias] = old_name
        return connection

    def destroy(self) -> None:
        from django.db import connections

        for alias, old_name in reversed(self.created.items()):
            with contextlib.suppress(Exception):
                connections[alias].creation.destroy_test_db(old_name, verbosity=0)
        self.created.clear()
        connections.close_all()


# Timing.


def autorange(func: Callable[[], object], min_time: float) -> int:
    """Return a loop count that makes ``func`` run for at least ``min_time`` seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            func()
        if time.perf_counter() - start >= min_time:
            return number
        number *= 2


def time_loop(func: Callable[[], object], number: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            func()
        return (time.perf_counter() - start) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def compare(
    funcs: dict[str, Callable[[], object]],
    backends: dict[str, str],
    repeats: int,
    min_time: float,
) -> dict[str, float]:
    """
    Time each of ``funcs`` with its library's backend only; return seconds per call.

    The loop count is calibrated on the first function; then the libraries
    alternate (ABBA...) and the best repeat of each is kept.

    """
    from django.test.utils import override_settings

    def backend(name: str) -> override_settings:
        return override_settings(AUTHENTICATION_BACKENDS=[backends[name]])

    names = list(funcs)
    for name in names:  # warm up
        with backend(name):
            funcs[name]()
    with backend(names[0]):
        number = autorange(funcs[names[0]], min_time)
    best = dict.fromkeys(names, float("inf"))
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            with backend(name):
                best[name] = min(best[name], time_loop(funcs[name], number))
    return best


@dataclass
class Case:
    """An operation to time under some settings, and what it must return."""

    label: str
    alias: str
    func: Callable[[], object]
    settings: dict[str, Any]
    check: Callable[[object], bool]
    number: int | None = None  # a fixed loop count, for slow operations
    repeats: int | None = None  # at most this many repeats, for slow operations
    per: int = 1  # the operation handles this many items: report time per item
    seconds: float = float("inf")
    queries: list[str] = field(default_factory=list)


def measure(cases: list[Case], repeats: int, min_time: float) -> None:
    """
    Check, count the queries of, and time each case, on its database.

    Each case gets its own loop count; then the cases run in turn, forward
    and backward (ABC CBA ...), each after an untimed call, and the best
    repeat of each is kept.

    """
    from django.test.utils import override_settings

    numbers = []
    for case in cases:
        with using(case.alias), override_settings(**case.settings):
            result = case.func()  # warm up, and check
            if not case.check(result):
                raise SystemExit(f"{case.alias}: unexpected result for {case.label}")
            case.queries = captured_queries(case.func, case.alias)
            numbers.append(case.number or autorange(case.func, min_time))
    for repeat in range(repeats):
        order = range(len(cases)) if repeat % 2 == 0 else reversed(range(len(cases)))
        for index in order:
            case = cases[index]
            if case.repeats is not None and repeat >= case.repeats:
                continue
            with using(case.alias), override_settings(**case.settings):
                if case.repeats is None:
                    # Warm the caches for this operation, whichever ran
                    # before: at each turn of the order, one runs twice.
                    case.func()
                seconds = time_loop(case.func, numbers[index]) / case.per
            case.seconds = min(case.seconds, seconds)


def captured_queries(func: Callable[[], object], alias: str) -> list[str]:
    """Run ``func`` once, outside any transaction; return the SQL it ran, BEGIN and COMMIT included."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    connection = connections[alias]
    assert connection.get_autocommit() and not connection.in_atomic_block
    with CaptureQueriesContext(connection) as context:
        func()
    return [query["sql"] for query in context.captured_queries]


def count_queries(func: Callable[[], object]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        func()
    return len(context.captured_queries)


async def acount_queries(afunc: Callable[[], Awaitable[object]]) -> int:
    # The ORM queries in a worker thread: capture on that thread's connection.
    from asgiref.sync import sync_to_async
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # connection is a proxy to the current thread's connection: read the
    # captured queries in that thread too.
    context = CaptureQueriesContext(connection)

    def leave() -> int:
        context.__exit__(None, None, None)
        return len(context.captured_queries)

    await sync_to_async(context.__enter__)()
    try:
        await afunc()
    finally:
        num_queries = await sync_to_async(leave)()
    return num_queries


async def atime(
    afunc: Callable[[], Awaitable[object]], repeats: int, min_time: float
) -> float:
    await afunc()  # warm up
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            await afunc()
        if time.perf_counter() - start >= min_time:
            break
        number *= 2
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(number):
                await afunc()
            best = min(best, (time.perf_counter() - start) / number)
        finally:
            gc.enable()
    return best


# Tokens and users.


def forge(token: str) -> str:
    """Flip a bit in the signature of a v2 ``token``: valid shape, wrong signature."""
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


def forge_stored(token: str) -> str:
    """Flip a bit in the MAC of a stored ``token``, the last of its 27 bytes."""
    from sesame_db.tokens_store import PREFIX

    data = bytearray(base64.urlsafe_b64decode(token[len(PREFIX) :]))
    data[-1] ^= 1
    return PREFIX + base64.urlsafe_b64encode(bytes(data)).decode()


def get_user_john() -> AbstractUser:
    """Return the user whose tokens are verified, in the current database."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User._default_manager.filter(username="john").first()
    if user is None:
        user = User._default_manager.create_user(
            "john", email="john@example.com", password="letmein"
        )
    return user


def bulk_users(count: int) -> list[AbstractUser]:
    """Return ``count`` users to issue tokens for, in the current database."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    User = get_user_model()
    users = list(User._default_manager.filter(username__startswith="bulk-"))
    if not users:
        password = make_password(None)  # unusable, and fast to make
        users = User._default_manager.bulk_create(
            [
                User(username=f"bulk-{i:04}", email=f"bulk-{i}@example.com")
                for i in range(count)
            ]
        )
        for user in users:
            user.password = password
        User._default_manager.bulk_update(users, ["password"])
    return users  # type: ignore[return-value]


# Part 1: stateless tokens.


@dataclass
class Result:
    operation: str
    sesame_db: float | None  # seconds per operation
    sesame: float | None
    sesame_db_queries: int | None
    sesame_queries: int | None


def run(repeats: int, min_time: float) -> list[Result]:
    import sesame.utils
    from django.test.utils import override_settings

    import sesame_db.utils

    user = get_user_john()

    token = sesame_db.utils.get_token(user)
    if token != sesame.utils.get_token(user):
        raise SystemExit("sesame_db and django-sesame disagree on the token")
    forged = forge(token)

    backends = {"sesame_db": SESAME_DB_BACKEND, "sesame": SESAME_BACKEND}
    operations: list[tuple[str, dict[str, Callable[[], object]], object]] = [
        (
            "get_token",
            {
                "sesame_db": lambda: sesame_db.utils.get_token(user),
                "sesame": lambda: sesame.utils.get_token(user),
            },
            token,
        ),
        (
            "get_user, valid token",
            {
                "sesame_db": lambda: sesame_db.utils.get_user(token),
                "sesame": lambda: sesame.utils.get_user(token),
            },
            user,
        ),
        (
            "get_user, forged token",
            {
                "sesame_db": lambda: sesame_db.utils.get_user(forged),
                "sesame": lambda: sesame.utils.get_user(forged),
            },
            None,
        ),
    ]
    results = []
    for operation, funcs, expected in operations:
        queries = {}
        for name, func in funcs.items():
            with override_settings(AUTHENTICATION_BACKENDS=[backends[name]]):
                if func() != expected:
                    raise SystemExit(f"{name}: unexpected result for {operation}")
                queries[name] = count_queries(func)
        best = compare(funcs, backends, repeats, min_time)
        results.append(
            Result(
                operation,
                best["sesame_db"],
                best["sesame"],
                queries["sesame_db"],
                queries["sesame"],
            )
        )

    async def valid_async() -> object:
        return await sesame_db.utils.aget_user(token)

    async def main() -> tuple[float, int]:
        if await valid_async() != user:
            raise SystemExit("sesame_db: aget_user rejected a valid token")
        return (
            await atime(valid_async, repeats, min_time),
            await acount_queries(valid_async),
        )

    with override_settings(AUTHENTICATION_BACKENDS=[SESAME_DB_BACKEND]):
        seconds, num_queries = asyncio.run(main())
    results.append(
        Result("aget_user, valid token (asyncio)", seconds, None, num_queries, None)
    )
    return results


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """Print a table: the first row is the header; the first column is left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.1f}"


def print_table(results: list[Result]) -> None:
    def ratio(result: Result) -> str:
        if result.sesame_db is None or result.sesame is None:
            return "n/a"
        return f"{result.sesame_db / result.sesame:.2f}x"

    def queries(result: Result) -> str:
        def fmt(value: int | None) -> str:
            return "-" if value is None else str(value)

        return f"{fmt(result.sesame_db_queries)} / {fmt(result.sesame_queries)}"

    print_rows(
        [
            (
                "operation",
                "sesame_db µs/op",
                "django-sesame µs/op",
                "ratio",
                "queries/op (sesame_db / django-sesame)",
            )
        ]
        + [
            (r.operation, us(r.sesame_db), us(r.sesame), ratio(r), queries(r))
            for r in results
        ]
    )
    print(
        "\nratio = sesame_db / django-sesame; below 1.00x, sesame_db is faster."
        "\ndjango-sesame has no async API: aget_user has no counterpart."
    )


# Part 2: the database store next to django-sesame, on one database.


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


LABELS = {
    "baseline": "django-sesame: get_user, valid stateless token (baseline)",
    "forged": "django-sesame: get_user, forged stateless token",
    "stateless": "sesame_db: get_user, valid stateless token",
    "stored": "sesame_db: get_user, stored token, SESAME_AUDIT=True",
    "stored_no_audit": "sesame_db: get_user, stored token, SESAME_AUDIT=False",
    "stored_forged": "sesame_db: get_user, forged stored token (MAC flipped)",
    "issue": "sesame_db: issue_token, 1 link",
    "issue_many": f"sesame_db: issue_tokens, {BULK_USERS} users, per link",
}


def store_cases(alias: str, slow_repeats: int) -> list[Case]:
    """The operations of part 2, on database ``alias``; call it with ``alias`` routed."""
    import sesame.utils

    import sesame_db.utils

    user = get_user_john()
    users = bulk_users(BULK_USERS)
    token = sesame_db.utils.get_token(user)
    if token != sesame.utils.get_token(user):
        raise SystemExit("sesame_db and django-sesame disagree on the token")
    forged = forge(token)
    stored, _ = sesame_db.utils.issue_token(user)  # unlimited uses, no expiry
    stored_forged = forge_stored(stored)

    sesame_backend = {"AUTHENTICATION_BACKENDS": [SESAME_BACKEND]}
    sesame_db_backend = {"AUTHENTICATION_BACKENDS": [SESAME_DB_BACKEND]}

    def is_user(result: object) -> bool:
        return result == user

    def is_none(result: object) -> bool:
        return result is None

    def is_issued(result: object) -> bool:
        return bool(result)

    def is_issued_many(result: object) -> bool:
        return isinstance(result, list) and len(result) == len(users)

    return [
        Case(
            "baseline",
            alias,
            lambda: sesame.utils.get_user(token),
            sesame_backend,
            is_user,
        ),
        Case(
            "forged",
            alias,
            lambda: sesame.utils.get_user(forged),
            sesame_backend,
            is_none,
        ),
        Case(
            "stateless",
            alias,
            lambda: sesame_db.utils.get_user(token),
            sesame_db_backend,
            is_user,
        ),
        Case(
            "stored",
            alias,
            lambda: sesame_db.utils.get_user(stored),
            {**sesame_db_backend, "SESAME_AUDIT": True},
            is_user,
        ),
        Case(
            "stored_no_audit",
            alias,
            lambda: sesame_db.utils.get_user(stored),
            {**sesame_db_backend, "SESAME_AUDIT": False},
            is_user,
        ),
        Case(
            "stored_forged",
            alias,
            lambda: sesame_db.utils.get_user(stored_forged),
            sesame_db_backend,
            is_none,
        ),
        Case(
            "issue",
            alias,
            lambda: sesame_db.utils.issue_token(user),
            sesame_db_backend,
            is_issued,
        ),
        Case(
            "issue_many",
            alias,
            lambda: sesame_db.utils.issue_tokens(users),
            sesame_db_backend,
            is_issued_many,
            number=1,
            repeats=slow_repeats,
            per=len(users),
        ),
    ]


def describe_queries(case: Case) -> str:
    """Say how many statements ``case`` runs, and which: SELECT, BEGIN, WITH..."""
    if not case.queries:
        return "0"
    runs: list[list[Any]] = []  # [kind, repeats]
    for sql in case.queries:
        kind = sql.split(None, 1)[0].upper()
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    kinds = " ".join(kind if n == 1 else f"{kind}×{n}" for kind, n in runs)
    per = f" per {case.per} links" if case.per > 1 else ""
    return f"{len(case.queries)}{per}: {kinds}"


def store_table(alias: str, repeats: int, min_time: float, slow_repeats: int) -> None:
    with using(alias):
        cases = store_cases(alias, slow_repeats)
    measure(cases, repeats, min_time)
    case = {case.label: case for case in cases}
    baseline = case["baseline"].seconds
    stored = case["stored"].seconds / baseline
    forged = case["stored_forged"].seconds / case["forged"].seconds
    forged_queries = len(case["stored_forged"].queries)
    goals = {
        "stored": f"≤ {STORED_GOAL:.2f}x: {verdict(stored <= STORED_GOAL)}",
        "stored_forged": (
            f"{forged:.2f}x django-sesame forged, ≤ {FORGED_GOAL:.2f}x"
            f" with 0 queries: {verdict(forged <= FORGED_GOAL and not forged_queries)}"
        ),
    }
    print_rows(
        [("operation", "µs/op", "ratio", "queries/op", "goal")]
        + [
            (
                LABELS[c.label],
                us(c.seconds),
                f"{c.seconds / baseline:.2f}x",
                describe_queries(c),
                goals.get(c.label, ""),
            )
            for c in cases
        ]
    )
    print(
        "\nratio = µs/op / django-sesame's valid stateless get_user on this database,"
        "\nthe baseline. queries: statements of one call in autocommit mode, so BEGIN"
        "\nand COMMIT show when a transaction is opened; on PostgreSQL, WITH is the"
        "\nsingle statement that counts the use and inserts the audit event."
        "\nThe stored token allows unlimited uses: each timed call counts one more."
        "\nIssuing records an `issued` event (SESAME_AUDIT=True, the default)."
    )


# Part 3: size of the token table, and purge.


def fill(alias: str, record: IssuedToken, total: int) -> tuple[int, float]:
    """
    Add tokens revoked long ago until the token table holds ``total`` rows.

    Every row copies ``record``, so points at its user with its user digest,
    but was revoked 100 days ago: all are purgeable. One ``INSERT ...
    SELECT`` over ``generate_series`` on PostgreSQL, without foreign key
    checks when allowed, and followed by ``VACUUM ANALYZE``; over a recursive
    CTE on SQLite. Return how many rows were added and the time it took.

    """
    import datetime

    from django.db import connections, transaction
    from django.utils import timezone

    connection = connections[alias]
    model = type(record)
    missing = total - model._default_manager.using(alias).count()
    if missing <= 0:
        return 0, 0.0
    long_ago = timezone.now() - datetime.timedelta(days=100)
    overrides = {
        "created": long_ago - datetime.timedelta(days=1),
        "modified": long_ago,
        "revoked_at": long_ago,
        "revoke_reason": "benchmark",
    }
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    params = [
        f.get_db_prep_save(
            overrides.get(f.name, getattr(record, f.attname)), connection
        )
        for f in fields
    ]
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    columns = ", ".join(qn(str(f.column)) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    start = time.perf_counter()
    if connection.vendor == "postgresql":
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute("SHOW is_superuser")
            if cursor.fetchone()[0] == "on":
                # Skip the foreign key triggers, about 40% of the time: every
                # row points at users that exist.
                cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"SELECT {placeholders} FROM generate_series(1, %s)",
                [*params, missing],
            )
        with connection.cursor() as cursor:
            # Statistics and visibility as autovacuum would leave them.
            cursor.execute(f"VACUUM ANALYZE {table}")
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH RECURSIVE seq(n) AS "
                "(SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
                f"INSERT INTO {table} ({columns}) SELECT {placeholders} FROM seq",
                [missing, *params],
            )
    return missing, time.perf_counter() - start


def trim(alias: str, record: IssuedToken) -> None:
    """Delete every token but ``record``."""
    from django.db import connections

    connection = connections[alias]
    model = type(record)
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {qn(model._meta.db_table)} WHERE {qn(str(model._meta.pk.column))} <> %s",
            [record.pk],
        )


def table_sizes(alias: str) -> str:
    """Describe the rows and disk space of the event and token tables."""
    from django.db import connections

    from sesame_db.models import IssuedToken, TokenEvent

    connection = connections[alias]
    parts = []
    with connection.cursor() as cursor:
        for model in (TokenEvent, IssuedToken):
            table = model._meta.db_table
            rows = model._default_manager.using(alias).count()
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            else:
                cursor.execute(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = %s OR name IN "
                    "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s)",
                    [table, table],
                )
            (size,) = cursor.fetchone()
            parts.append(f"{table} {rows:,} rows, {(size or 0) / 2**20:.1f} MiB")
    return "; ".join(parts)


def traced_purge() -> tuple[int, float, str]:
    """Run sesame_db_purge under tracemalloc; return its peak, its time and its output."""
    from django.core.management import call_command

    output = io.StringIO()
    gc.collect()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        call_command("sesame_db_purge", stdout=output)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, elapsed, output.getvalue().strip()


def power(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


@dataclass
class Prepared:
    """A database of part 3: its user, a stateless token and a stored one."""

    alias: str
    user: AbstractUser
    token: str
    stored: str
    record: IssuedToken


def prepare(alias: str) -> Prepared:
    import sesame_db.utils

    with using(alias):
        user = get_user_john()
        stored, record = sesame_db.utils.issue_token(user)
        trim(alias, record)
        return Prepared(alias, user, sesame_db.utils.get_token(user), stored, record)


def size_cases(db: Prepared) -> list[Case]:
    import sesame.utils

    import sesame_db.utils

    def is_user(result: object) -> bool:
        return result == db.user

    return [
        Case(
            "stored",
            db.alias,
            lambda: sesame_db.utils.get_user(db.stored),
            {"AUTHENTICATION_BACKENDS": [SESAME_DB_BACKEND]},
            is_user,
        ),
        Case(
            "baseline",
            db.alias,
            lambda: sesame.utils.get_user(db.token),
            {"AUTHENTICATION_BACKENDS": [SESAME_BACKEND]},
            is_user,
        ),
    ]


def size_and_purge(
    small_alias: str,
    big_alias: str,
    sizes: tuple[int, int],
    purge_sizes: tuple[int, int],
    repeats: int,
    min_time: float,
) -> None:
    """
    Time a stored token's use with a small and a big token table; measure the purge's memory.

    Each size has its own database, so that the timings alternate between
    the sizes, as between the libraries elsewhere.

    """
    small, big = prepare(small_alias), prepare(big_alias)
    purges = []
    fills = []
    with using(small.alias):
        # The small purge before the small table is filled for the timings.
        fills.append(fill(small.alias, small.record, purge_sizes[0] + 1))
        purges.append(traced_purge())
        fills.append(fill(small.alias, small.record, sizes[0]))
    with using(big.alias):
        fills.append(fill(big.alias, big.record, sizes[1]))
    small_cases, big_cases = size_cases(small), size_cases(big)
    measure(small_cases + big_cases, repeats, min_time)
    with using(small.alias):
        small_tables = table_sizes(small.alias)
    with using(big.alias):
        big_tables = table_sizes(big.alias)
        # The timed token is the only active row: add one purgeable row.
        fills.append(fill(big.alias, big.record, purge_sizes[1] + 1))
        purges.append(traced_purge())

    rows = [
        (size, cases[0].seconds, cases[1].seconds)
        for size, cases in zip(sizes, (small_cases, big_cases), strict=True)
    ]
    print_rows(
        [
            (
                "token table",
                "stored get_user µs/op",
                "django-sesame valid µs/op",
                "stored / django-sesame",
            )
        ]
        + [
            (
                f"{power(size)} rows",
                us(stored),
                us(baseline),
                f"{stored / baseline:.2f}x",
            )
            for size, stored, baseline in rows
        ]
    )
    (_, small_time, small_base), (_, big_time, big_base) = rows
    growth = big_time / small_time
    normalized = (big_time / big_base) / (small_time / small_base)
    size_verdict = {
        (True, True): "met",
        (True, False): "met on raw times, not once normalized",
        (False, True): "met once normalized, not on raw times",
        (False, False): "NOT MET",
    }[growth <= SIZE_GOAL, normalized <= SIZE_GOAL]
    drift = big_base / small_base
    print(
        f"\nstored get_user, {power(sizes[1])} rows / {power(sizes[0])} rows: {growth:.2f}x;"
        f" {normalized:.2f}x once each is divided by django-sesame's time"
        f"\non its database (goal ≤ {SIZE_GOAL:.2f}x: {size_verdict})."
        + (
            f"\ndjango-sesame's query doesn't touch the token table, yet its time moved"
            f"\n{drift:.2f}x between the databases: the machine's load changed during"
            "\nthe timings, and the normalized ratio is the better estimate."
            if abs(drift - 1) > 0.1
            else ""
        )
        + "\nSESAME_AUDIT=True: every timed use adds an event. Tables after the timings:"
        f"\n- {power(sizes[0])}: {small_tables}"
        f"\n- {power(sizes[1])}: {big_tables}"
        "\nRows added, one INSERT ... SELECT each, all purgeable (revoked 100 days ago): "
        + ", ".join(
            f"{added:,} in {seconds:.1f} s" for added, seconds in fills if added
        )
        + ".\n"
    )
    print_rows(
        [
            (
                "purgeable rows",
                "peak traced memory",
                "elapsed s (under tracemalloc)",
                "sesame_db_purge output",
            )
        ]
        + [
            (power(size), f"{peak / 2**20:.2f} MiB", f"{elapsed:.1f}", message)
            for size, (peak, elapsed, message) in zip(purge_sizes, purges, strict=True)
        ]
    )
    (small_peak, _, _), (big_peak, _, _) = purges
    growth = big_peak / small_peak
    print(
        f"\npeak memory, {power(purge_sizes[1])} rows / {power(purge_sizes[0])} rows: "
        f"{growth:.2f}x (goal: about the same, ≤ {PURGE_GOAL:.1f}x, as batches keep it "
        f"flat: {verdict(growth <= PURGE_GOAL)})."
        "\nThe elapsed times include tracemalloc's overhead, several-fold on this"
        "\nPython-bound loop of batches."
    )


# Main.


def section(title: str) -> None:
    print(f"\n== {title} ==\n")


def database_notes(connection: BaseDatabaseWrapper) -> str:
    if connection.vendor != "postgresql":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}."
    values = {}
    with connection.cursor() as cursor:
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
        ):
            cursor.execute(f"SHOW {name}")
            (values[name],) = cursor.fetchone()
    where = (
        f"the server at {connection.settings_dict['HOST']}"
        if os.environ.get("SESAME_TEST_PGHOST")
        else "a throwaway cluster on a Unix socket, as tests/postgres.py starts it"
    )
    notes = (
        f"PostgreSQL {values['server_version']} on {where}:"
        f"\nfsync={values['fsync']}, synchronous_commit={values['synchronous_commit']}, "
        f"full_page_writes={values['full_page_writes']}, shared_buffers={values['shared_buffers']}."
    )
    if values["fsync"] == "off":
        notes += (
            "\nWith fsync off, commits don't wait for the disk: writes cost less than on"
            "\na durable server, so the write paths (stored uses, issuing) look cheaper."
        )
    return notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run a short benchmark: fewer and shorter repeats, 10^4 rows instead of 10^6",
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgresql", "all"],
        default="all",
        help="the databases of the store's measurements (default: all)",
    )
    args = parser.parse_args(argv)
    # Many short repeats: more chances to time each operation in a quiet
    # moment of the machine, and a finer interleaving of the operations.
    if args.quick:
        repeats, min_time, slow_repeats = 60, 0.0005, 3
        sizes, purge_sizes = (10**3, 10**4), (10**3, 10**4)
    else:
        repeats, min_time, slow_repeats = 180, 0.005, 9
        sizes, purge_sizes = (10**3, 10**6), (10**4, 10**6)

    start = time.perf_counter()
    postgresql: dict[str, object] | None = None
    skipped = ""
    if args.db in ("postgresql", "all"):
        from tests.postgres import Unavailable, database_settings

        try:
            postgresql = database_settings()
        except Unavailable as exc:
            skipped = str(exc)

    tmpdir = tempfile.mkdtemp(prefix="sesame_db_bench_")
    databases = Databases()
    try:
        configure(tmpdir, postgresql)
        quick = (
            f" (--quick: fewer and shorter repeats, at most {power(sizes[1])} rows)"
            if args.quick
            else ""
        )
        print(HEADER.format(repeats=repeats, slow=slow_repeats, quick=quick))
        print(
            f"Python {platform.python_version()}, Django {django.get_version()}, "
            f"django-sesame {importlib.metadata.version('django-sesame')}, "
            f"{os.cpu_count()} CPUs, default SESAME_* settings."
        )

        section("Stateless tokens: sesame_db vs django-sesame, SQLite in memory")
        databases.get(SQLITE)
        with using(SQLITE):
            results = run(repeats, min_time)
        print_table(results)

        if args.db in ("sqlite", "all"):
            section("Database store: SQLite in memory")
            print(database_notes(databases.get(SQLITE)) + "\n")
            store_table(SQLITE, repeats, min_time, slow_repeats)

            section(
                f"Token table size and purge: SQLite files, {power(sizes[0])} and {power(sizes[1])} rows"
            )
            databases.get(SQLITE_SMALL)
            print(
                database_notes(databases.get(SQLITE_BIG))
                + " One file-backed database per size, in a temporary directory,"
                "\nwith journal_mode=WAL and synchronous=NORMAL, the usual production"
                "\npragmas: a big table belongs on disk, and with the default pragmas"
                "\nevery autocommit write waits for an fsync (about 1.2 ms here), which"
                "\nwould drown the cost of the lookup being measured.\n"
            )
            size_and_purge(
                SQLITE_SMALL, SQLITE_BIG, sizes, purge_sizes, repeats, min_time
            )

        if args.db in ("postgresql", "all"):
            for part in ("store", "size"):
                if part == "store":
                    section("Database store: PostgreSQL")
                else:
                    section(
                        f"Token table size and purge: PostgreSQL, {power(sizes[0])} and {power(sizes[1])} rows"
                    )
                if postgresql is None:
                    print(f"PostgreSQL: skipped: {skipped}")
                    continue
                aliases = (
                    [POSTGRESQL]
                    if part == "store"
                    else [POSTGRESQL_SMALL, POSTGRESQL_BIG]
                )
                try:
                    connections = [databases.get(alias) for alias in aliases]
                except Exception as exc:  # any reason to skip is printed
                    skipped = " ".join(f"cannot create a test database: {exc}".split())
                    postgresql = None
                    print(f"PostgreSQL: skipped: {skipped}")
                    continue
                if part == "store":
                    print(database_notes(connections[0]) + "\n")
                    store_table(POSTGRESQL, repeats, min_time, slow_repeats)
                else:
                    print(
                        "One database per size on the same server. Fills skip the foreign"
                        "\nkey checks when the role is a superuser (session_replication_role ="
                        "\nreplica) and end with VACUUM ANALYZE, as autovacuum would leave the"
                        "\ntable.\n"
                    )
                    size_and_purge(
                        POSTGRESQL_SMALL,
                        POSTGRESQL_BIG,
                        sizes,
                        purge_sizes,
                        repeats,
                        min_time,
                    )
    finally:
        databases.destroy()
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"\nTotal time: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

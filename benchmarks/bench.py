"""
Compare sesame_db with django-sesame 3.2 on the hot paths, and measure the database store, in one run.

Usage::

    python -m benchmarks.bench [--quick] [--db sqlite|postgresql|all] [--non-durable] [--rst]

This script configures Django itself, creates throwaway databases with
Django's test-database machinery and prints, from one run:

1. A summary of the machine: CPUs, Python, Django, django-sesame, SQLite,
   PostgreSQL and the durability settings in force on it (``SHOW fsync``...).
2. Stateless tokens, on SQLite in memory: ``get_token`` and ``get_user``
   of both libraries.
3. For each database: the database store next to django-sesame's valid
   stateless ``get_user`` on the same database, the baseline of the ratios,
   with the statements of each operation. On PostgreSQL, the floor: a bare
   ``SELECT 1`` round trip and a bare durable commit.
4. For each database: a stored use with random cold tokens over a table of
   10^3 links and one of 10^6, and the peak RSS of a process running
   ``sesame_db_purge`` over 10^4 and 10^6 purgeable links.
5. Every goal of issue 13, "met" or "not met", with its figure.

Method (docs/performance.rst): both libraries run with the two backends that
projects configure, Django's ``ModelBackend`` and their own. The operations
of a table are timed in interleaved rounds: each round times a batch of calls
of every operation, starting with a different one each round, so that a drift
of the machine's load hits all of them. Each figure is the median over the
rounds, with its interquartile range; a ratio is the median of the ratios of
the batches of each round, with their interquartile range.

PostgreSQL runs on a throwaway cluster that :func:`tests.postgres.start_cluster`
starts with fsync, synchronous_commit and full_page_writes on, PostgreSQL's
defaults (or on the server that ``SESAME_TEST_PGHOST`` names), and stops at
exit. ``--non-durable`` adds a column measured with ``synchronous_commit =
off``, labelled as such; the goals never use it. Another column, always
measured, runs both libraries on connections with Django's
``server_side_binding`` and ``prepare_threshold`` options (prepared
statements), with a goal of its own; the durable goal of the default
column stays as it is. When PostgreSQL is
unavailable, its parts print "skipped" and why; when ``CI`` is set, that's an
error.

It needs Django, django-model-utils, django-sesame and psycopg, not the test
dependencies (``make bench`` installs them); pytest doesn't collect it.
Nothing asserts on time: a run fails only if something crashes.

"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser
    from django.db.backends.base.base import BaseDatabaseWrapper

    from sesame_db.models import IssuedToken

# A database in memory that every thread shares.
DATABASE_NAME = "file:sesame_db_bench?mode=memory&cache=shared"

SQLITE = "default"  # in memory: stateless tokens and the store
# Part 4: one database per size of the token table, so that the timings
# interleave between sizes. SQLite's are files in a temporary directory.
SQLITE_SMALL = "sqlite_small"
SQLITE_BIG = "sqlite_big"
POSTGRESQL = "postgresql"  # the store
POSTGRESQL_SMALL = "postgresql_small"
POSTGRESQL_BIG = "postgresql_big"
POSTGRESQL_ASYNC = "postgresql_async"  # --non-durable: synchronous_commit=off
# Durable, with Django's opt-in server-side binding: psycopg prepares a
# statement on its PREPARE_THRESHOLD-th execution (psycopg's default).
POSTGRESQL_PREPARED = "postgresql_prepared"
PREPARE_THRESHOLD = 5

DJANGO_BACKEND = "django.contrib.auth.backends.ModelBackend"
# The two backends that projects configure, as django-sesame's docs say.
SESAME_BACKENDS = [DJANGO_BACKEND, "sesame.backends.ModelBackend"]
SESAME_DB_BACKENDS = [DJANGO_BACKEND, "sesame_db.backends.ModelBackend"]

# The settings that make PostgreSQL durable: its defaults, stated.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
SHOWN_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
)

BULK_USERS = 1000
STORE_LINKS = 1000  # links of the store table and of the small table


@dataclasses.dataclass(frozen=True)
class Goal:
    """A goal of issue 13: the ratio of ``key`` to its baseline must be at most ``limit``."""

    key: str
    text: str
    limit: float


GOALS = [
    Goal(
        "get_token",
        "stateless get_token / django-sesame's get_token (SQLite)",
        0.9,
    ),
    Goal(
        "get_user",
        "stateless get_user / django-sesame's get_user (SQLite)",
        0.9,
    ),
    Goal(
        "forged:sqlite",
        "forged stored token, 0 queries / django-sesame's valid get_user (SQLite)",
        0.05,
    ),
    Goal(
        "forged:postgresql",
        "forged stored token, 0 queries / django-sesame's valid get_user (PostgreSQL)",
        0.05,
    ),
    Goal(
        "stored:sqlite",
        "stored use with audit / django-sesame's valid get_user (SQLite)",
        0.6,
    ),
    Goal(
        "stored:postgresql",
        "stored use with audit / django-sesame's valid get_user (durable PostgreSQL)",
        1.3,
    ),
    Goal(
        "stored:postgresql-prepared",
        "the same, both with prepared statements (server_side_binding)",
        1.3,
    ),
]
LOAD_GOAL = "stored use with audit under gunicorn, req/s / stateless req/s (load test)"


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


INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "sesame_db"]


def sqlite_file(path: str) -> dict[str, Any]:
    """Settings of a file-backed SQLite database with the usual production pragmas."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "TEST": {"NAME": path},
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
        },
    }


def configure(tmpdir: str, postgresql: dict[str, Any] | None) -> None:
    databases: dict[str, dict[str, Any]] = {
        SQLITE: {"ENGINE": "django.db.backends.sqlite3", "NAME": DATABASE_NAME},
        SQLITE_SMALL: sqlite_file(os.path.join(tmpdir, "small.sqlite3")),
        SQLITE_BIG: sqlite_file(os.path.join(tmpdir, "big.sqlite3")),
    }
    if postgresql is not None:
        for alias in (POSTGRESQL, POSTGRESQL_SMALL, POSTGRESQL_BIG):
            databases[alias] = {
                **postgresql,
                "TEST": {"NAME": f"test_sesame_db_bench_{alias}"},
            }
        # The same database as POSTGRESQL, on connections that don't wait
        # for the WAL flush at commit: not durable, only with --non-durable.
        databases[POSTGRESQL_ASYNC] = {
            **postgresql,
            "OPTIONS": {"options": "-c synchronous_commit=off"},
            "TEST": {"MIRROR": POSTGRESQL},
        }
        databases[POSTGRESQL_PREPARED] = {
            **postgresql,
            "OPTIONS": {
                "server_side_binding": True,
                "prepare_threshold": PREPARE_THRESHOLD,
            },
            "TEST": {"MIRROR": POSTGRESQL},
        }
    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=INSTALLED_APPS,
        DATABASES=databases,
        DATABASE_ROUTERS=[ROUTER],
        AUTHENTICATION_BACKENDS=SESAME_DB_BACKENDS,
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

    def mirror(self, alias: str, of: str) -> BaseDatabaseWrapper:
        """Point ``alias`` at the test database of ``of``, as Django's TEST MIRROR does."""
        from django.db import connections

        connection = connections[alias]
        connection.close()
        connection.settings_dict["NAME"] = connections[of].settings_dict["NAME"]
        return connection

    def destroy(self) -> None:
        from django.db import connections

        connections.close_all()
        for alias, old_name in reversed(self.created.items()):
            with contextlib.suppress(Exception):
                connections[alias].creation.destroy_test_db(old_name, verbosity=0)
        self.created.clear()
        connections.close_all()


# PostgreSQL.


class Unavailable(Exception):
    """PostgreSQL can't be used here; the message says why."""


def start_durable_cluster() -> dict[str, Any]:
    """
    Start a throwaway PostgreSQL cluster with durable settings; return database settings for it.

    :func:`tests.postgres.start_cluster` starts it, with fsync,
    synchronous_commit and full_page_writes on (PostgreSQL's defaults, which
    the test suite turns off) and autovacuum on, as on a real server. It's
    destroyed when the process exits. Raise :exc:`Unavailable` if it can't
    start.

    """
    from tests import postgres

    try:
        cluster = postgres.start_cluster(settings={**DURABLE, "autovacuum": "on"})
    except postgres.Unavailable as exc:
        raise Unavailable(str(exc)) from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": cluster.socket_dir,
        "USER": "postgres",
        "NAME": "postgres",
    }


def durable_cluster_settings() -> dict[str, Any]:
    """
    Return database settings for PostgreSQL: a durable throwaway cluster, or the given server.

    Use the server that ``SESAME_TEST_PGHOST`` names, as it is (its settings
    are printed), or else :func:`start_durable_cluster`. Raise
    :exc:`Unavailable` if the driver or the server is missing.

    """
    from tests import postgres

    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable(
            "psycopg isn't installed: pip install 'psycopg[binary]'"
        ) from None
    if os.environ.get("SESAME_TEST_PGHOST"):
        try:
            return postgres.database_settings()
        except postgres.Unavailable as exc:
            raise Unavailable(str(exc)) from None
    return start_durable_cluster()


def show_settings(connection: Any) -> dict[str, str]:
    """Return the values of :data:`SHOWN_SETTINGS` in force on a PostgreSQL connection (Django's or psycopg's)."""
    values = {}
    with connection.cursor() as cursor:
        for name in SHOWN_SETTINGS:
            cursor.execute(f"SHOW {name}")
            (values[name],) = cursor.fetchone()
    return values


def is_durable(values: dict[str, str]) -> bool:
    return all(values[name] == value for name, value in DURABLE.items())


# Statistics and timing.


@dataclasses.dataclass(frozen=True)
class Summary:
    """The median of samples, with their quartiles and extremes."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    count: int


def summarize(samples: Sequence[float]) -> Summary:
    """Return the median, quartiles (inclusive method) and extremes of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Summary(
        statistics.median(ordered), q1, q3, ordered[0], ordered[-1], len(ordered)
    )


def interleave(count: int, rounds: int) -> list[list[int]]:
    """
    Return the order of ``count`` operations in each of ``rounds`` rounds.

    Every round runs each operation once; round ``r`` starts with operation
    ``r % count`` and goes on in order (A B, B A, A B... for two; A B C, B C
    A, C A B... for three), so each operation takes each place as often, and
    a drift of the machine's load spreads over all of them.

    """
    return [[(r + i) % count for i in range(count)] for r in range(rounds)]


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
    """Return the seconds per call of ``number`` calls of ``func``, garbage collection off."""
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


@dataclasses.dataclass
class Case:
    """An operation to time under some settings, and what it must return."""

    label: str
    alias: str
    func: Callable[[], object]
    check: Callable[[object], bool]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    number: int | None = None  # a fixed loop count, e.g. for slow operations
    rounds: int | None = None  # at most this many rounds, for slow operations
    per: int = 1  # the operation handles this many items: report time per item
    warm: bool = True  # an untimed call before each batch
    samples: list[float] = dataclasses.field(default_factory=list)
    queries: list[str] = dataclasses.field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return summarize(self.samples)


def measure(cases: list[Case], rounds: int, min_time: float) -> None:
    """
    Check, count the statements of, and time each case, on its database.

    Each case gets its own loop count, so that a batch lasts ``min_time``;
    then the cases run in interleaved rounds (:func:`interleave`), one batch
    each per round, after an untimed call. Each batch gives a sample, the
    seconds per call.

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
    for round_number, order in enumerate(interleave(len(cases), rounds)):
        for index in order:
            case = cases[index]
            if case.rounds is not None and round_number >= case.rounds:
                continue
            with using(case.alias), override_settings(**case.settings):
                if case.warm:
                    case.func()
                case.samples.append(time_loop(case.func, numbers[index]) / case.per)


def ratio(case: Case, baseline: Case) -> tuple[float, Summary]:
    """
    Return the median of the ratios of ``case`` to ``baseline`` in each round, and their summary.

    Each ratio pairs two batches of the same round, timed a moment apart, so
    that a drift of the machine's load cancels out; a case with fewer rounds
    is paired with the first rounds of the baseline.

    """
    rounds = min(len(case.samples), len(baseline.samples))
    spread = summarize([case.samples[i] / baseline.samples[i] for i in range(rounds)])
    return spread.median, spread


def captured_queries(func: Callable[[], object], alias: str) -> list[str]:
    """Run ``func`` once, outside any transaction; return the SQL it ran, BEGIN and COMMIT included."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    connection = connections[alias]
    assert connection.get_autocommit() and not connection.in_atomic_block
    with CaptureQueriesContext(connection) as context:
        func()
    return [query["sql"] for query in context.captured_queries]


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
    kinds = " ".join(kind if n == 1 else f"{kind}x{n}" for kind, n in runs)
    per = f" per {case.per} links" if case.per > 1 else ""
    return f"{len(case.queries)}{per}: {kinds}"


# Formatting.


def us(summary: Summary) -> str:
    """A time in µs, its median with the interquartile range."""
    return f"{summary.median * 1e6:.1f} [{summary.q1 * 1e6:.1f}-{summary.q3 * 1e6:.1f}]"


def times(value: float, spread: Summary | None = None) -> str:
    text = f"{value:.2f}x"
    if spread is not None:
        text += f" [{spread.q1:.2f}-{spread.q3:.2f}]"
    return text


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


def rst_table(rows: Sequence[Sequence[str]]) -> str:
    """Return a reStructuredText simple table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * width for width in widths)
    lines = [rule]
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)


def section(title: str) -> None:
    print(f"\n== {title} ==\n")


def power(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


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
                User(
                    username=f"bulk-{i:04}",
                    email=f"bulk-{i}@example.com",
                    password=password,
                )
                for i in range(count)
            ]
        )
    return users  # type: ignore[return-value]


def fill(
    alias: str, record: IssuedToken, total: int, *, purgeable: bool = False
) -> tuple[int, float]:
    """
    Add links until the token table holds ``total`` rows; return how many and the time it took.

    Every row copies ``record`` (its user, its user digest, no expiry, no use
    limit), so its token is valid, unless ``purgeable``: then it was revoked
    100 days ago. One ``INSERT ... SELECT`` over ``generate_series`` on
    PostgreSQL, followed by ``VACUUM ANALYZE``, as autovacuum would leave the
    table; over a recursive CTE on SQLite.

    """
    from django.db import connections

    connection = connections[alias]
    model = type(record)
    missing = total - model._default_manager.using(alias).count()
    if missing <= 0:
        return 0, 0.0
    overrides: dict[str, Any] = {}
    if purgeable:
        long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            days=100
        )
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
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"SELECT {placeholders} FROM generate_series(1, %s)",
                [*params, missing],
            )
            cursor.execute(f"VACUUM ANALYZE {table}")
        else:
            cursor.execute(
                "WITH RECURSIVE seq(n) AS "
                "(SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
                f"INSERT INTO {table} ({columns}) SELECT {placeholders} FROM seq",
                [missing, *params],
            )
    return missing, time.perf_counter() - start


def cold_tokens(alias: str, count: int, seed: int = 13) -> list[str]:
    """
    Return the tokens of ``count`` links of the table drawn at random (with replacement).

    The links are valid, unrevoked copies made by :func:`fill` (no scope, no
    expiry); revoked ones are left out.

    """
    from sesame_db.models import IssuedToken
    from sesame_db.tokens_store import create_token

    pks = list(
        IssuedToken._default_manager.using(alias)
        .filter(revoked_at__isnull=True)
        .values_list("pk", flat=True)
    )
    rng = random.Random(seed)
    return [create_token(pk, "", None) for pk in rng.choices(pks, k=count)]


# Part 2: stateless tokens.


def stateless_cases() -> list[Case]:
    import sesame.utils

    import sesame_db.utils

    user = get_user_john()
    token = sesame_db.utils.get_token(user)
    if token != sesame.utils.get_token(user):
        raise SystemExit("sesame_db and django-sesame disagree on the token")

    def is_token(result: object) -> bool:
        return isinstance(result, str) and len(result) == len(token)

    def is_user(result: object) -> bool:
        return result == user

    sesame_db_backends = {"AUTHENTICATION_BACKENDS": SESAME_DB_BACKENDS}
    sesame_backends = {"AUTHENTICATION_BACKENDS": SESAME_BACKENDS}
    return [
        Case(
            "sesame_db get_token",
            SQLITE,
            lambda: sesame_db.utils.get_token(user),
            is_token,
            sesame_db_backends,
        ),
        Case(
            "django-sesame get_token",
            SQLITE,
            lambda: sesame.utils.get_token(user),
            is_token,
            sesame_backends,
        ),
        Case(
            "sesame_db get_user",
            SQLITE,
            lambda: sesame_db.utils.get_user(token),
            is_user,
            sesame_db_backends,
        ),
        Case(
            "django-sesame get_user",
            SQLITE,
            lambda: sesame.utils.get_user(token),
            is_user,
            sesame_backends,
        ),
    ]


def stateless_table(rounds: int, min_time: float, figures: dict[str, str]) -> None:
    with using(SQLITE):
        cases = stateless_cases()
    measure(cases, rounds, min_time)
    rows = [("operation", "sesame_db µs", "django-sesame µs", "ratio [IQR]")]
    for operation, (mine, theirs) in {
        "get_token": (cases[0], cases[1]),
        "get_user": (cases[2], cases[3]),
    }.items():
        value, spread = ratio(mine, theirs)
        figures[operation] = figure(value, spread)
        rows.append(
            (operation, us(mine.summary), us(theirs.summary), times(value, spread))
        )
    print_rows(rows)
    print(
        "\nµs: median per call [interquartile range] over the rounds; ratio:"
        "\nsesame_db / django-sesame, the median [IQR] of the ratios of each round."
    )


# Part 3: the database store next to django-sesame.

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


def store_cases(alias: str, calls: int, slow_rounds: int) -> list[Case]:
    """
    The operations of part 3 on database ``alias``; call it with ``alias`` routed.

    Stored uses take random tokens of :data:`STORE_LINKS` links, a new one
    for each of ``calls`` calls at most.

    """
    import sesame.utils

    import sesame_db.utils

    user = get_user_john()
    users = bulk_users(BULK_USERS)
    token = sesame_db.utils.get_token(user)
    if token != sesame.utils.get_token(user):
        raise SystemExit("sesame_db and django-sesame disagree on the token")
    forged = forge(token)
    stored, record = sesame_db.utils.issue_token(user)  # unlimited uses, no expiry
    fill(alias, record, STORE_LINKS)
    audited = iter(cold_tokens(alias, calls, seed=1))
    unaudited = iter(cold_tokens(alias, calls, seed=2))
    stored_forged = forge_stored(stored)

    sesame_backends = {"AUTHENTICATION_BACKENDS": SESAME_BACKENDS}

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
            is_user,
            sesame_backends,
        ),
        Case(
            "forged",
            alias,
            lambda: sesame.utils.get_user(forged),
            is_none,
            sesame_backends,
        ),
        Case("stateless", alias, lambda: sesame_db.utils.get_user(token), is_user),
        Case(
            "stored",
            alias,
            lambda: sesame_db.utils.get_user(next(audited)),
            is_user,
            {"SESAME_AUDIT": True},
        ),
        Case(
            "stored_no_audit",
            alias,
            lambda: sesame_db.utils.get_user(next(unaudited)),
            is_user,
            {"SESAME_AUDIT": False},
        ),
        Case(
            "stored_forged",
            alias,
            lambda: sesame_db.utils.get_user(stored_forged),
            is_none,
        ),
        Case("issue", alias, lambda: sesame_db.utils.issue_token(user), is_issued),
        Case(
            "issue_many",
            alias,
            lambda: sesame_db.utils.issue_tokens(users),
            is_issued_many,
            number=1,
            rounds=slow_rounds,
            per=len(users),
            warm=False,
        ),
    ]


# Loop counts are fixed where a call takes a token from a pool, so that the
# pool is known in advance: 1 check + 1 count of queries + a warm-up call and
# a batch per round.
def store_numbers(alias: str, min_time: float) -> int:
    """Return a loop count for the batches of the store's operations on ``alias``."""
    import sesame.utils

    import sesame_db.utils

    with using(alias):
        user = get_user_john()
        token = sesame_db.utils.get_token(user)
        return autorange(lambda: sesame.utils.get_user(token), min_time)


def store_table(
    alias: str,
    rounds: int,
    min_time: float,
    slow_rounds: int,
    figures: dict[str, str],
    extras: Sequence[tuple[str, str]] = (),
) -> float:
    """Time the store's operations on ``alias``, and on each alias of ``extras`` (alias, column header): a labelled extra column."""
    number = store_numbers(alias, min_time)
    calls = 2 + (number + 1) * rounds
    aliases = [alias, *(name for name, _ in extras)]
    cases: dict[str, list[Case]] = {}
    for name in aliases:
        with using(name):
            cases[name] = store_cases(name, calls, slow_rounds)
        for case in cases[name]:
            case.number = case.number or number
    measure([case for name in aliases for case in cases[name]], rounds, min_time)
    columns = {name: {case.label: case for case in cases[name]} for name in aliases}
    main = columns[alias]
    vendor = "postgresql" if alias == POSTGRESQL else "sqlite"
    baseline = main["baseline"]
    header = ["operation", "µs [IQR]", "ratio [IQR]", "statements"]
    header += [title for _, title in extras]
    rows = [tuple(header)]
    for label, case in main.items():
        value, spread = ratio(case, baseline)
        row = [LABELS[label], us(case.summary), times(value, spread)]
        row.append(describe_queries(case))
        for name, _ in extras:
            other = columns[name][label]
            row.append(times(*ratio(other, columns[name]["baseline"])))
        rows.append(tuple(row))
    print_rows(rows)
    figures[f"stored:{vendor}"] = figure(*ratio(main["stored"], baseline))
    if POSTGRESQL_PREPARED in columns:
        prepared = columns[POSTGRESQL_PREPARED]
        figures["stored:postgresql-prepared"] = figure(
            *ratio(prepared["stored"], prepared["baseline"])
        )
    # A forged token that costs a query misses the goal, whatever its time.
    figures[f"forged:{vendor}"] = (
        figure(*ratio(main["stored_forged"], baseline))
        if not main["stored_forged"].queries
        else f"{len(main['stored_forged'].queries)} queries"
    )
    print(
        "\nratio: to django-sesame's valid stateless get_user on this database, the"
        "\nbaseline, the median [IQR] of the ratios of each round. statements:"
        "\nthose of one call in autocommit mode, so BEGIN and COMMIT show when a"
        "\ntransaction is opened; on PostgreSQL, the second SELECT calls the"
        "\nfunction whose single statement counts the use and inserts the audit"
        f"\nevent (docs/store.rst). Stored uses take a random"
        f"\ntoken of {STORE_LINKS:,} links (unlimited uses, no expiry) per call."
        "\nIssuing records an `issued` event (SESAME_AUDIT=True, the default)."
    )
    if POSTGRESQL_PREPARED in columns:
        print(
            "\nprepared statements: the same durable server, both libraries on"
            "\nconnections with Django's OPTIONS server_side_binding=True and"
            f"\nprepare_threshold={PREPARE_THRESHOLD}: psycopg prepares a statement"
            "\nonce it has run that often, and the server stops parsing and"
            "\nplanning it on each use. Django's default is client-side binding."
        )
    return baseline.summary.median * 1e6


def floor_table(alias: str, async_alias: str, baseline_us: float, rounds: int) -> None:
    """
    Measure the floor of a durable stored use on PostgreSQL: a round trip and a WAL flush.

    Time a bare ``SELECT 1``, and a one-row ``INSERT`` committed in
    autocommit mode, with synchronous_commit on (one round trip and one WAL
    flush) and off (on ``async_alias``: no flush), on the driver's cursor.

    """
    from django.db import connections

    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_floor (n integer)")
    raw = connection.connection
    other = connections[async_alias]
    other.ensure_connection()
    raw_async = other.connection
    assert raw is not None and raw_async is not None
    with raw_async.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("off",)

    def select() -> None:
        with raw.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    def commit() -> None:
        with raw.cursor() as cursor:
            cursor.execute("INSERT INTO bench_floor VALUES (1)")

    def no_flush() -> None:
        with raw_async.cursor() as cursor:
            cursor.execute("INSERT INTO bench_floor VALUES (1)")

    cases = [
        Case("SELECT 1: one round trip", alias, select, lambda r: True),
        Case(
            "INSERT, durable commit: round trip + WAL flush",
            alias,
            commit,
            lambda r: True,
        ),
        Case(
            "INSERT, synchronous_commit=off: round trip, no flush",
            alias,
            no_flush,
            lambda r: True,
        ),
    ]
    measure(cases, rounds, 0.01)
    rows = [("statement", "µs [IQR]", "/ django-sesame get_user")]
    for case in cases:
        rows.append(
            (
                case.label,
                us(case.summary),
                f"{case.summary.median * 1e6 / baseline_us:.2f}x",
            )
        )
    print_rows(rows)
    flush = cases[1].summary.median - cases[0].summary.median
    print(
        f"\nThe durable commit costs {flush * 1e6:.0f} µs more than a round trip here."
        "\nA durable stored use pays at least one round trip and one WAL flush;"
        "\ndjango-sesame's get_user pays one round trip and no flush. Driver"
        "\ncursors in autocommit mode, without Django: the bare cost of the server."
    )


def statements_table(alias: str, prepared_alias: str, rounds: int) -> None:
    """
    Time the two statements of a stored use on ``alias``, as they are and in their functions, and on ``prepared_alias`` (prepared).

    :func:`sesame_db.sql.fetch` and :func:`sesame_db.sql.consume` (through
    the store's ``_consume()``), with the audit, on Django's cursor as a use
    runs them: what the server's parsing and planning of each statement
    costs, which the functions and prepared statements skip.

    """
    import datetime

    import sesame_db.utils
    from sesame_db import sql, store

    with using(alias):
        _, issued = sesame_db.utils.issue_token(get_user_john())

    def fetch(db: str) -> Callable[[], object]:
        return lambda: sql.fetch(db, issued.pk)

    def consume(db: str) -> Callable[[], object]:
        record = sql.fetch(db, issued.pk)
        assert record is not None

        def call() -> bool:
            # What redeem() calls: the audit, without a request's fields.
            now = datetime.datetime.now(datetime.timezone.utc)
            return store._consume(record, now, "", None, db)

        return call

    def is_true(result: object) -> bool:
        return bool(result)

    def as_it_is(db: str, func: Callable[[], object]) -> Callable[[], object]:
        # As if the database lacked the functions: the statement itself.
        def call() -> object:
            installed = sql._installed.get(db)
            sql._installed[db] = frozenset()
            try:
                return func()
            finally:
                if installed is None:
                    del sql._installed[db]
                else:
                    sql._installed[db] = installed

        return call

    cases = []
    for label, make in [
        ("SELECT of a use", fetch),
        ("WITH of a use (durable commit)", consume),
    ]:
        cases += [
            Case(
                f"{label}, as it is, client-side binding",
                alias,
                as_it_is(alias, make(alias)),
                is_true,
            ),
            Case(f"{label}, in its function", alias, make(alias), is_true),
            Case(
                f"{label}, in its function, prepared",
                prepared_alias,
                make(prepared_alias),
                is_true,
            ),
        ]
    measure(cases, rounds, 0.01)
    rows = [("statement, on Django's cursor", "µs [IQR]")]
    rows += [(case.label, us(case.summary)) for case in cases]
    print()
    print_rows(rows)
    print(
        "\nThe two statements of a stored use (sesame_db.sql.fetch and consume,"
        "\nwith the audit): as they are, with Django's default client-side"
        "\nbinding, which the server parses and plans at each use; in the"
        "\nfunctions that migrate installs, whose statements the server plans"
        "\nonce per connection; and those functions' calls prepared as well"
        f"\n(server_side_binding, prepare_threshold={PREPARE_THRESHOLD})."
    )


# Part 4: the size of the token table, and purge.


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    peak_rss: int  # bytes
    seconds: float
    output: str


def purge_child(database: dict[str, Any], mode: str) -> None:
    """In a child process: configure Django on ``database``, run the purge (or not), report."""
    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        USE_TZ=True,
        INSTALLED_APPS=INSTALLED_APPS,
        DATABASES={"default": database},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()
    import io

    from django.core.management import call_command
    from django.db import connection

    if mode == "migrate":  # for tests/test_bench.py: an empty database
        call_command("migrate", verbosity=0)
    connection.ensure_connection()
    output = io.StringIO()
    start = time.perf_counter()
    if mode != "idle":
        call_command("sesame_db_purge", stdout=output)
    elapsed = time.perf_counter() - start
    report = {"rss": peak_rss(), "seconds": elapsed, "output": output.getvalue()}
    print(json.dumps(report))


def peak_rss() -> int:
    """
    Return the peak resident set size of this process, in bytes.

    On Linux, VmHWM of /proc/self/status: it starts afresh at exec, unlike
    ``ru_maxrss``, which keeps the peak of the process before exec, that is,
    of the parent it was forked from. Elsewhere, ``ru_maxrss``.

    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # in kB
    except OSError:
        pass
    import resource

    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_purge(database: dict[str, Any], mode: str = "purge") -> PurgeResult:
    """
    Run ``sesame_db_purge`` on ``database`` in a child process; return the child's peak RSS.

    ``mode`` "idle" sets up Django and connects without purging, for the
    resident memory of Django alone; "migrate" migrates an empty database
    first.

    """
    settings_json = json.dumps(
        {
            key: database[key]
            for key in ("ENGINE", "NAME", "HOST", "PORT", "USER", "PASSWORD", "OPTIONS")
            if key in database
        }
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--purge-child",
            mode,
            settings_json,
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return PurgeResult(report["rss"], report["seconds"], report["output"].strip())


def size_and_purge(
    small_alias: str,
    big_alias: str,
    sizes: tuple[int, int],
    purge_sizes: tuple[int, int],
    rounds: int,
    min_time: float,
) -> None:
    """
    Time stored uses with random cold tokens over a small and a big token table; measure the purge's peak RSS.

    Each size has its own database, so that the timings interleave between
    the sizes, as between the libraries elsewhere.

    """
    import sesame.utils
    from django.db import connections

    import sesame_db.utils

    number = store_numbers(small_alias, min_time)
    calls = 2 + (number + 1) * rounds
    fills = []
    prepared = []
    for alias, size in zip((small_alias, big_alias), sizes, strict=True):
        with using(alias):
            user = get_user_john()
            _, record = sesame_db.utils.issue_token(user)
            fills.append((alias, *fill(alias, record, size)))
            count = type(record)._default_manager.using(alias).count()
            if count != size:
                raise SystemExit(f"{alias}: {count:,} links, not {size:,}")
            prepared.append((user, record, iter(cold_tokens(alias, calls))))
    user = prepared[0][0]
    token = sesame_db.utils.get_token(user)

    def use(tokens: Iterator[str]) -> Callable[[], object]:
        return lambda: sesame_db.utils.get_user(next(tokens))

    cases = [
        Case(
            f"stored use, {power(size)} links",
            alias,
            use(tokens),
            lambda result: result is not None,
            number=number,
        )
        for alias, size, (_, _, tokens) in zip(
            (small_alias, big_alias), sizes, prepared, strict=True
        )
    ]
    cases.append(
        Case(
            "django-sesame get_user (baseline)",
            small_alias,
            lambda: sesame.utils.get_user(token),
            lambda result: result == user,
            {"AUTHENTICATION_BACKENDS": SESAME_BACKENDS},
            number=number,
        )
    )
    measure(cases, rounds, min_time)
    rows = [("operation", "µs [IQR]", "ratio [IQR]")]
    for case in cases:
        rows.append((case.label, us(case.summary), times(*ratio(case, cases[-1]))))
    print_rows(rows)
    growth, spread = ratio(cases[1], cases[0])
    print(
        f"\nstored use, {power(sizes[1])} / {power(sizes[0])} links: {times(growth, spread)}"
        " (information: no goal)."
        f"\nEach call uses the token of a link drawn at random, a new draw each call:"
        f"\nover {power(sizes[1])} links, most aren't in any cache. ratio: to django-sesame, per round."
        "\nRows added, one INSERT ... SELECT each: "
        + ", ".join(
            f"{added:,} in {seconds:.1f} s" for _, added, seconds in fills if added
        )
        + ".\n"
    )

    # The purge: add purgeable rows, then purge in a child process.
    results = [measure_purge(connections[small_alias].settings_dict, mode="idle")]
    for alias, size in zip((small_alias, big_alias), purge_sizes, strict=True):
        with using(alias):
            record = prepared[0 if alias == small_alias else 1][1]
            total = type(record)._default_manager.using(alias).count() + size
            fill(alias, record, total, purgeable=True)
        connections[alias].close()
        results.append(measure_purge(connections[alias].settings_dict))
    purge_rows: list[tuple[str, ...]] = [
        ("process", "peak RSS", "seconds", "sesame_db_purge output")
    ]
    purge_rows.append(
        (
            "Django set up and connected, no purge",
            f"{results[0].peak_rss / 2**20:.1f} MiB",
            "",
            "",
        )
    )
    for size, result in zip(purge_sizes, results[1:], strict=True):
        purge_rows.append(
            (
                f"sesame_db_purge, {power(size)} purgeable links",
                f"{result.peak_rss / 2**20:.1f} MiB",
                f"{result.seconds:.1f}",
                result.output.replace("\n", " "),
            )
        )
    print_rows(purge_rows)
    print(
        f"\npeak RSS, {power(purge_sizes[1])} / {power(purge_sizes[0])} links:"
        f" {results[2].peak_rss / results[1].peak_rss:.2f}x (information: batches"
        "\nshould keep it flat). Peak RSS of the whole child process (VmHWM):"
        "\nthe interpreter, Django and the driver included."
    )


# Goals.


def figure(value: float, spread: Summary) -> str:
    """Encode a ratio and the quartiles of its spread for :func:`goals_rows`."""
    return f"{value} {spread.q1} {spread.q3}"


def goals_rows(
    figures: dict[str, str], skipped: dict[str, str]
) -> list[tuple[str, str, str, str]]:
    rows = [("goal (issue 13)", "limit", "figure [IQR]", "verdict")]
    for goal in GOALS:
        vendor = goal.key.partition(":")[2].partition("-")[0]
        text = figures.get(goal.key)
        if text is None:
            reason = skipped.get(goal.key) or skipped.get(vendor, "not measured")
            rows.append((goal.text, f"<= {goal.limit}x", "-", f"skipped: {reason}"))
            continue
        if text.endswith("queries"):
            rows.append((goal.text, f"<= {goal.limit}x", text, "not met"))
            continue
        # The median ratio, then maybe the quartiles of its spread,
        # with enough digits to tell 0.049x from 0.051x.
        value, *quartiles = (float(part) for part in text.split())
        digits = 3 if value < 0.1 else 2
        shown = f"{value:.{digits}f}x"
        if quartiles:
            shown += f" [{quartiles[0]:.{digits}f}-{quartiles[1]:.{digits}f}]"
        rows.append(
            (
                goal.text,
                f"<= {goal.limit}x",
                shown,
                "met" if value <= goal.limit else "not met",
            )
        )
    rows.append((LOAD_GOAL, ">= 0.95x", "-", "not measured here: see docs/load.rst"))
    return rows


def machine_summary(postgresql: dict[str, str] | None, skipped: str) -> str:
    import sqlite3

    lines = [
        f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, Django {django.get_version()},"
        f" django-sesame {importlib.metadata.version('django-sesame')},"
        f" SQLite {sqlite3.sqlite_version}",
    ]
    if postgresql is None:
        lines.append(f"PostgreSQL: skipped: {skipped}")
    else:
        lines.append(
            f"PostgreSQL {postgresql['server_version']}: "
            + ", ".join(
                f"{name}={postgresql[name]}"
                for name in SHOWN_SETTINGS
                if name != "server_version"
            )
            + (" (durable)" if is_durable(postgresql) else " (NOT DURABLE)")
        )
    return "\n".join(lines)


# Main.


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a run of at most about 3 minutes: fewer and shorter rounds, a smaller purge",
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgresql", "all"],
        default="all",
        help="the databases of the store's measurements (default: all)",
    )
    parser.add_argument(
        "--non-durable",
        action="store_true",
        help="add a column measured with synchronous_commit=off (not durable) on PostgreSQL",
    )
    parser.add_argument(
        "--rst",
        action="store_true",
        help="also print the goals as a reStructuredText table, for docs/performance.rst",
    )
    parser.add_argument("--purge-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.purge_child:
        mode, database = args.purge_child
        purge_child(json.loads(database), mode)
        return

    if args.quick:
        rounds, min_time, slow_rounds = 21, 0.01, 3
        sizes, purge_sizes = (STORE_LINKS, 10**6), (10**3, 10**5)
    else:
        rounds, min_time, slow_rounds = 41, 0.03, 7
        sizes, purge_sizes = (STORE_LINKS, 10**6), (10**4, 10**6)
    ci = os.environ.get("CI", "") not in ("", "0", "false")

    start = time.perf_counter()
    postgresql: dict[str, Any] | None = None
    skipped: dict[str, str] = {}
    if args.db == "sqlite":
        skipped["postgresql"] = "--db sqlite"
    else:
        try:
            postgresql = durable_cluster_settings()
        except Unavailable as exc:
            if ci:
                raise SystemExit(
                    f"PostgreSQL is unavailable, and CI is set: {exc}"
                ) from None
            skipped["postgresql"] = str(exc)
    if args.db == "postgresql":
        skipped["sqlite"] = "--db postgresql"

    tmpdir = tempfile.mkdtemp(prefix="sesame_db_bench_")
    databases = Databases()
    figures: dict[str, str] = {}
    try:
        configure(tmpdir, postgresql)
        pg_settings = None
        if postgresql is not None:
            pg_settings = show_settings(databases.get(POSTGRESQL))
        summary = machine_summary(pg_settings, skipped.get("postgresql", ""))
        print(
            "sesame_db vs django-sesame benchmark"
            + (" (--quick)" if args.quick else "")
            + f"\n\n{summary}\n\n"
            f"Both libraries with two backends: Django's ModelBackend and their own."
            f"\nTimes: the median of {rounds} interleaved rounds ({slow_rounds} for"
            "\nissue_tokens) [interquartile range]. Figures move between runs with"
            "\nthe machine's load: compare ratios measured in the same run."
        )

        section("Stateless tokens: sesame_db vs django-sesame, SQLite in memory")
        databases.get(SQLITE)
        stateless_table(rounds, min_time, figures)

        if args.db in ("sqlite", "all"):
            section("Database store: SQLite in memory")
            store_table(SQLITE, rounds, min_time, slow_rounds, figures)
            section(
                f"Token table size and purge: SQLite files (WAL, synchronous=NORMAL),"
                f" {power(sizes[0])} and {power(sizes[1])} links"
            )
            databases.get(SQLITE_SMALL)
            databases.get(SQLITE_BIG)
            size_and_purge(
                SQLITE_SMALL, SQLITE_BIG, sizes, purge_sizes, rounds, min_time
            )

        if args.db in ("postgresql", "all"):
            if postgresql is None:
                for title in ("Database store", "Token table size and purge"):
                    section(f"{title}: PostgreSQL")
                    print(f"PostgreSQL: skipped: {skipped['postgresql']}")
            else:
                durable = pg_settings is not None and is_durable(pg_settings)
                kind = "durable PostgreSQL" if durable else "PostgreSQL, NOT DURABLE"
                section(f"Database store: {kind}")
                databases.mirror(POSTGRESQL_ASYNC, POSTGRESQL)
                databases.mirror(POSTGRESQL_PREPARED, POSTGRESQL)
                extras = [(POSTGRESQL_PREPARED, "ratio, prepared statements")]
                if args.non_durable:
                    extras.append(
                        (
                            POSTGRESQL_ASYNC,
                            "ratio, synchronous_commit=off (NOT durable)",
                        )
                    )
                baseline_us = store_table(
                    POSTGRESQL, rounds, min_time, slow_rounds, figures, extras
                )
                if not durable:
                    # The goals are for a durable server only.
                    for key in ("stored:postgresql", "stored:postgresql-prepared"):
                        figures.pop(key, None)
                        skipped[key] = "the server isn't durable"
                section(f"The floor: {kind}")
                floor_table(POSTGRESQL, POSTGRESQL_ASYNC, baseline_us, rounds)
                statements_table(POSTGRESQL, POSTGRESQL_PREPARED, rounds)
                section(
                    f"Token table size and purge: {kind},"
                    f" {power(sizes[0])} and {power(sizes[1])} links"
                )
                databases.get(POSTGRESQL_SMALL)
                databases.get(POSTGRESQL_BIG)
                size_and_purge(
                    POSTGRESQL_SMALL,
                    POSTGRESQL_BIG,
                    sizes,
                    purge_sizes,
                    rounds,
                    min_time,
                )

        section("Goals of issue 13, from this run")
        rows = goals_rows(figures, skipped)
        print_rows(rows)
        if args.rst:
            print(f"\nreStructuredText:\n\n{rst_summary(summary)}\n\n{rst_table(rows)}")
    finally:
        databases.destroy()
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"\nTotal time: {time.perf_counter() - start:.1f} s", file=sys.stderr)


def rst_summary(summary: str) -> str:
    return ".. code-block:: text\n\n" + "\n".join(
        f"    {line}" for line in summary.splitlines()
    )


if __name__ == "__main__":
    main()

"""
Measure the audit trail at volume, on PostgreSQL: its documented queries and its purge.

Usage::

    python -m benchmarks.audit_bench [--events N]

This script starts a throwaway PostgreSQL server (tests/postgres.py),
configures Django itself, fills the event table with ``--events`` events (ten
million by default) over 400 days with ``INSERT ... SELECT generate_series``,
10 per link, 100 per user and 10 per client address, and runs ``ANALYZE``.
Then it prints, for each query of docs/scale.rst, the index that its plan
uses and the best time of a few runs; and it runs ``sesame_db_purge`` with a
retention of 365 days, printing the rate of its batches from the first to
the last and the peak of Python's allocations meanwhile, to show that it
deletes at a steady rate in flat memory.

It needs Django, psycopg and Debian's postgresql package; pytest doesn't
collect it. Ten million events take a few minutes and about 3 GB of disk.

"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings

REPEATS = 5
DAYS = 400
CHUNK = 1_000_000


def configure() -> None:
    from tests.postgres import database_settings

    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "sesame_db",
        ],
        DATABASES={"default": database_settings()},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()


def fill(events: int, now: datetime.datetime) -> None:
    """Insert ``events`` events over DAYS days before ``now``, the oldest first, in chunks."""
    from django.db import connection

    step = DAYS * 86400 / events  # seconds
    start = now - datetime.timedelta(days=DAYS)
    with connection.cursor() as cursor:
        for first in range(0, events, CHUNK):
            last = min(events, first + CHUNK) - 1
            cursor.execute(
                """
                INSERT INTO sesame_db_tokenevent
                    (created_at, kind, reason, token_id, user_id, actor_id, scope,
                     detail, ip, user_agent, method, path)
                SELECT %s + i * %s * interval '1 second',
                       (ARRAY['issued', 'used', 'used', 'rejected'])[1 + i %% 4],
                       CASE WHEN i %% 4 = 3 THEN 'expired' ELSE '' END,
                       i / 10, (i * 7919) %% (%s / 100), NULL, '', '',
                       ('10.0.0.0'::inet + ((i * 104729) %% (%s / 10))),
                       'Mozilla/5.0', 'GET', '/login/'
                FROM generate_series(%s::bigint, %s::bigint) AS i
                """,
                [start, step, events, events, first, last],
            )
            print(f"  {last + 1:>12,} events", file=sys.stderr)
        cursor.execute("ANALYZE sesame_db_tokenevent")


def best_time(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def evaluate(queryset: Any) -> list[Any]:
    # all(): a new query set each time, not the cached rows of the last.
    return list(queryset.all())


def index_of(plan: str) -> str:
    for line in plan.splitlines():
        for marker in (
            "Index Scan using ",
            "Index Only Scan using ",
            "Bitmap Index Scan on ",
        ):
            if marker in line:
                return line.split(marker, 1)[1].split()[0]
        if "Seq Scan" in line:
            return "SEQUENTIAL SCAN"
    return "?"


def queries(events: int, now: datetime.datetime) -> list[tuple[str, Any]]:
    from sesame_db.models import TokenEvent

    day = now - datetime.timedelta(days=42)
    return [
        (
            "Events of a link",
            TokenEvent.objects.filter(token_id=events // 20).order_by("-created_at")[
                :50
            ],
        ),
        (
            "Events of a user",
            TokenEvent.objects.filter(user_id=42).order_by("-created_at")[:50],
        ),
        (
            "Events of a client address",
            TokenEvent.objects.filter(ip="10.0.16.5").order_by("-created_at")[:50],
        ),
        (
            "Events of an hour",
            TokenEvent.objects.filter(
                created_at__gte=day, created_at__lt=day + datetime.timedelta(hours=1)
            ).order_by("-created_at"),
        ),
        (
            "Rejections of a day",
            TokenEvent.objects.filter(
                kind="rejected",
                created_at__gte=day,
                created_at__lt=day + datetime.timedelta(days=1),
            ).order_by("-created_at"),
        ),
        ("Latest 100 events", TokenEvent.objects.order_by("-created_at")[:100]),
    ]


def purge() -> tuple[int, list[tuple[float, float]], int, float]:
    """
    Run sesame_db_purge on the events; return the rows deleted, the batches, the peak of allocations and the total time.

    Each batch is (seconds of the query of its boundary, seconds of its
    DELETE); the last one's query finds no boundary, and its DELETE takes
    what remains.

    """
    from django.core.management import call_command
    from django.db import connection

    batches: list[tuple[float, float]] = []
    boundary = [0.0]

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            seconds = time.perf_counter() - start
            if sql.startswith('SELECT "sesame_db_tokenevent"."id"'):
                boundary[0] = seconds
            elif sql.startswith('DELETE FROM "sesame_db_tokenevent"'):
                batches.append((boundary[0], seconds))

    output = io.StringIO()
    tracemalloc.start()
    start = time.perf_counter()
    with connection.execute_wrapper(record):
        call_command("sesame_db_purge", "--event-retention=365", stdout=output)
    total = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    deleted = int(output.getvalue().split(" and ")[1].split()[0])
    return deleted, batches, peak, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[1])
    parser.add_argument(
        "--events",
        type=int,
        default=10_000_000,
        help="events to create (default: ten million)",
    )
    args = parser.parse_args(argv)
    if args.events < 1000:
        parser.error("--events must be at least 1000")

    configure()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    now = timezone.now()
    start = time.perf_counter()
    fill(args.events, now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('sesame_db_tokenevent')")
        (size,) = cursor.fetchone()
    print(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"PostgreSQL {'.'.join(map(str, connection.get_database_version()))}; "
        f"{args.events:,} events over {DAYS} days, {size / 2**20:,.0f} MiB with indexes, "
        f"filled and analyzed in {time.perf_counter() - start:.0f} s"
    )
    print(f"\n{'query':<28} {'rows':>5} {'best ms':>8}  index")
    for name, queryset in queries(args.events, now):
        plan = queryset.explain()
        rows = len(list(queryset))
        seconds = best_time(functools.partial(evaluate, queryset))
        print(f"{name:<28} {rows:>5} {seconds * 1000:>8.2f}  {index_of(plan)}")

    deleted, batches, peak, total = purge()
    print(
        f"\nsesame_db_purge --event-retention=365: {deleted:,} events in {total:.1f} s,"
        f" {len(batches)} batches of up to 1000 rows;"
        f" peak of Python allocations {peak / 2**20:.1f} MiB"
    )
    full = batches[:-1]
    if full:
        tenth = max(1, len(full) // 10)
        parts = {
            "first tenth": full[:tenth],
            "middle tenth": full[len(full) // 2 - tenth // 2 :][:tenth],
            "last tenth": full[-tenth:],
        }
        for name, part in parts.items():
            select = sum(s for s, _ in part) / len(part)
            delete = sum(d for _, d in part) / len(part)
            print(
                f"  {name:<13} of the full batches: {select * 1000:5.1f} ms to find the"
                f" boundary, {delete * 1000:5.1f} ms to delete, {1 / (select + delete):,.0f} batches/s"
            )
    select, delete = batches[-1]
    print(
        f"  the last batch: {select * 1000:.1f} ms to find no boundary, reading the"
        f" index past the cutoff, {delete * 1000:.1f} ms to delete the rest"
    )


if __name__ == "__main__":
    main()

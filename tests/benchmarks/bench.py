"""
Compare sesame_db with django-sesame 3.2 on the hot paths, in one run.

Usage::

    python -m tests.benchmarks.bench [--quick]

This script configures Django itself (in-memory SQLite, default ``SESAME_*``
settings), creates a user, then times each operation for both libraries,
alternating between them, and keeps the best of several repeats, as
:mod:`timeit` does. Each library verifies tokens with its own backend only.

It needs Django and django-sesame, not the test dependencies; pytest doesn't
collect it.

"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import importlib.metadata
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import django
from django.conf import settings

# A database in memory that every thread shares: aget_user() runs its query
# in a worker thread, which would otherwise get an empty database of its own.
DATABASE_NAME = "file:sesame_db_bench?mode=memory&cache=shared"

SESAME_BACKEND = "sesame.backends.ModelBackend"
SESAME_DB_BACKEND = "sesame_db.backends.ModelBackend"

HEADER = """\
sesame_db vs django-sesame benchmark
Figures move by up to 50% between runs, with the machine's load: compare
only ratios measured in the same run. Best of {repeats} repeats; the two
libraries alternate to spread drift evenly.
"""


def configure() -> None:
    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "sesame_db",
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATABASE_NAME}
        },
        AUTHENTICATION_BACKENDS=[SESAME_DB_BACKEND],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()


@dataclass
class Result:
    operation: str
    sesame_db: float | None  # seconds per operation
    sesame: float | None
    sesame_db_queries: int | None
    sesame_queries: int | None


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


def forge(token: str) -> str:
    """Flip a bit in the signature of a v2 ``token``: valid shape, wrong signature."""
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


def run(repeats: int, min_time: float) -> list[Result]:
    import sesame.utils
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test.utils import override_settings

    import sesame_db.utils

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(
        "john", email="john@example.com", password="letmein"
    )

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


def print_table(results: list[Result]) -> None:
    def us(seconds: float | None) -> str:
        return "n/a" if seconds is None else f"{seconds * 1e6:.1f}"

    def ratio(result: Result) -> str:
        if result.sesame_db is None or result.sesame is None:
            return "n/a"
        return f"{result.sesame_db / result.sesame:.2f}x"

    def queries(result: Result) -> str:
        def fmt(value: int | None) -> str:
            return "-" if value is None else str(value)

        return f"{fmt(result.sesame_db_queries)} / {fmt(result.sesame_queries)}"

    rows = [
        (
            "operation",
            "sesame_db µs/op",
            "django-sesame µs/op",
            "ratio",
            "queries/op (sesame_db / django-sesame)",
        )
    ] + [
        (r.operation, us(r.sesame_db), us(r.sesame), ratio(r), queries(r))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(
        "\nratio = sesame_db / django-sesame; below 1.00x, sesame_db is faster."
        "\ndjango-sesame has no async API: aget_user has no counterpart."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--quick", action="store_true", help="run a short benchmark (a few seconds)"
    )
    args = parser.parse_args(argv)
    repeats, min_time = (3, 0.02) if args.quick else (9, 0.2)

    configure()
    print(HEADER.format(repeats=repeats))
    print(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"django-sesame {importlib.metadata.version('django-sesame')}, "
        "SQLite in memory, default SESAME_* settings\n"
    )
    start = time.perf_counter()
    results = run(repeats, min_time)
    print_table(results)
    print(f"\nTotal time: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

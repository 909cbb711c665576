"""
Where a request's time goes under ASGI: thread hops, counted, and time per request, in one process.

Usage::

    python -m benchmarks.asgi [--quick] [--requests N] [--rounds N]

The load test (:mod:`benchmarks.load`) serves the demo site about three
times slower under uvicorn than under gunicorn. This script takes the
server, the network and the client out: it sends requests straight to
Django's handlers, ``ASGIHandler`` and ``WSGIHandler``, in this process,
with the demo site's settings and middleware on SQLite (without a flush to
disk at commit: ``synchronous = OFF``), and counts the
``sync_to_async`` calls of each request by wrapping
:meth:`asgiref.sync.SyncToAsync.__call__`, as ``tests/test_hops.py`` does.
Each hop runs sync code in another thread and waits for it.

The cases, on the demo's report page:

- sesame_db's async view (``benchmarks/load_site.py``), the one the load
  test serves under uvicorn, with a stored link and with a stateless link;
- the demo's sync view, with the same links, under ASGI (Django runs it in
  a thread) and under WSGI;
- django-sesame 3.2's decorator on the same sync view, with a stateless link,
  under ASGI and WSGI, with django-sesame's backends.

Rounds interleave the cases; each figure is the median over the rounds of
the mean time per request of a batch. Nothing here is a pass/fail gate.

"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"

SESAME_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "sesame.backends.ModelBackend",
]


@contextlib.contextmanager
def count_hops() -> Iterator[collections.Counter[str]]:
    """Count the ``sync_to_async`` calls of the block, by the name of their function."""
    from asgiref.sync import SyncToAsync

    hops: collections.Counter[str] = collections.Counter()
    original = SyncToAsync.__call__

    async def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        func = self.func
        hops[getattr(func, "__qualname__", None) or type(func).__qualname__] += 1
        return await original(self, *args, **kwargs)

    with mock.patch.object(SyncToAsync, "__call__", __call__):
        yield hops


def setup(directory: str) -> None:
    """Configure Django with the demo site's settings on SQLite, in ``directory``, and migrate."""
    import django
    from django.core.management import call_command

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "demo_site.settings",
            "DEMO_DEBUG": "0",
            "DEMO_SQLITE_PATH": os.path.join(directory, "asgi.sqlite3"),
            "DEMO_SESAME_LOG_LEVEL": "WARNING",
            "DEMO_URLCONF": "benchmarks.asgi_site",
        }
    )
    for path in (str(ROOT), str(DEMO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    from django.conf import settings

    # Without a flush to disk at each commit: a stored link's write would
    # take most of the time and hide the handlers' share. The load test and
    # the bench measure durable writes.
    database: dict[str, Any] = settings.DATABASES["default"]
    options = database.setdefault("OPTIONS", {})
    options["init_command"] = "PRAGMA synchronous = OFF"
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


class Case:
    """Requests to ``path`` through one of Django's handlers."""

    def __init__(
        self,
        name: str,
        handler: str,
        path: str,
        token: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.path = path
        self.query = f"sesame={token}"
        self.settings = settings or {}
        self.samples: list[float] = []
        self.hops: collections.Counter[str] = collections.Counter()
        self.requests = 0

    def batch(self, count: int) -> float:
        """Send ``count`` requests; return the mean time per request, in seconds."""
        from django.test import override_settings

        with override_settings(**self.settings):
            if self.handler == "ASGI":
                return asyncio.run(self._asgi(count))
            return self._wsgi(count)

    async def _asgi(self, count: int) -> float:
        from django.core.handlers.asgi import ASGIHandler

        handler = ASGIHandler()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": self.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        statuses: list[int] = []
        never = asyncio.Event()

        def receiver() -> Callable[[], Any]:
            # The body, then nothing until Django cancels its wait for a
            # disconnect, once the response is sent.
            messages = [{"type": "http.request", "body": b"", "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await never.wait()
                raise AssertionError("unreachable")

            return receive

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        with count_hops() as hops:
            start = time.perf_counter()
            for _ in range(count):
                await handler(dict(scope), receiver(), send)
            elapsed = time.perf_counter() - start
        self._check(statuses, count)
        self.hops.update(hops)
        return elapsed / count

    def _wsgi(self, count: int) -> float:
        from django.core.handlers.wsgi import WSGIHandler
        from django.test import RequestFactory

        handler = WSGIHandler()
        environ = RequestFactory()._base_environ(  # type: ignore[attr-defined]
            PATH_INFO=self.path,
            QUERY_STRING=self.query,
            REQUEST_METHOD="GET",
            HTTP_HOST="127.0.0.1",
        )
        statuses: list[int] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(int(status.split()[0]))
            return None

        start = time.perf_counter()
        for _ in range(count):
            response = handler(dict(environ), start_response)
            response.close()
        elapsed = time.perf_counter() - start
        self._check(statuses, count)
        return elapsed / count

    def _check(self, statuses: list[int], count: int) -> None:
        if statuses != [200] * count:
            raise SystemExit(
                f"{self.name} ({self.handler}): expected 200s, got {collections.Counter(statuses)}"
            )
        self.requests += count

    @property
    def hops_per_request(self) -> dict[str, float]:
        if self.handler == "WSGI":
            return {}
        return {name: n / self.requests for name, n in self.hops.items()}


def make_cases() -> list[Case]:
    from django.contrib.auth import get_user_model

    from sesame_db.utils import get_token

    User = get_user_model()
    user = User._default_manager.create_user("asgi", password="asgi")
    scope = "report:1"
    stored = get_token(user, scope, store=True)
    stateless = get_token(user, scope, store=False)
    sesame = {"AUTHENTICATION_BACKENDS": SESAME_BACKENDS}
    return [
        Case("sesame_db async view, stored", "ASGI", "/async/reports/1/", stored),
        Case("sesame_db async view, stateless", "ASGI", "/async/reports/1/", stateless),
        Case("sesame_db sync view, stored", "ASGI", "/reports/1/", stored),
        Case("sesame_db sync view, stateless", "ASGI", "/reports/1/", stateless),
        Case(
            "django-sesame sync view", "ASGI", "/sesame/reports/1/", stateless, sesame
        ),
        Case("sesame_db sync view, stored", "WSGI", "/reports/1/", stored),
        Case("sesame_db sync view, stateless", "WSGI", "/reports/1/", stateless),
        Case(
            "django-sesame sync view", "WSGI", "/sesame/reports/1/", stateless, sesame
        ),
    ]


def run(cases: Sequence[Case], rounds: int, requests: int) -> None:
    for case in cases:
        case.batch(5)  # Warm up: imports, connections, templates.
        case.hops.clear()
        case.requests = 0
    for index in range(rounds):
        # Each round starts with another case, so that drift spreads evenly.
        order = list(cases[index % len(cases) :]) + list(cases[: index % len(cases)])
        for case in order:
            case.samples.append(case.batch(requests))


def report(cases: Sequence[Case], out: Callable[[str], None] = print) -> None:
    out(
        f"\n{'case':<34}{'handler':>8}{'µs/request':>12}{'hops':>6}  "
        "hops per request, by function"
    )
    for case in cases:
        hops = case.hops_per_request
        described = ", ".join(
            f"{name} {count:g}"
            for name, count in sorted(hops.items(), key=lambda i: -i[1])
        )
        total = f"{sum(hops.values()):g}" if case.handler == "ASGI" else "-"
        out(
            f"{case.name:<34}{case.handler:>8}"
            f"{statistics.median(case.samples) * 1e6:>12.0f}{total:>6}  {described}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 50 requests")
    parser.add_argument("--requests", type=int, default=200, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of batches")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 50, 3
    with tempfile.TemporaryDirectory() as directory:
        setup(directory)
        cases = make_cases()
        run(cases, args.rounds, args.requests)
        report(cases)
        print(
            f"\n{args.rounds} rounds of {args.requests} requests per case, interleaved;"
            "\nµs/request: median of the rounds; hops: sync_to_async calls per request."
        )


if __name__ == "__main__":
    main()

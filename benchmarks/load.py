"""
Load and soak the demo site with stored links, on PostgreSQL, under a multi-process server.

Usage::

    python -m benchmarks.load [--quick] [--server gunicorn|uvicorn|both]
        [--duration SECONDS] [--requests N] [--concurrency N] [--workers N]
        [--links N] [--no-restart] [--seed N] [--json PATH] [--app-servers 2]
        [--durable] [--prepared]

This script starts a throwaway PostgreSQL server with ``pg_stat_statements``
(:func:`tests.postgres.start_cluster`, on 127.0.0.1), migrates the demo site
(``demo/demo_site``, switched by ``DEMO_*`` environment variables to
PostgreSQL, DEBUG off, persistent connections with health checks), creates
users, issues stored links with various use limits and makes stateless
links. Then, for each server, it starts the site under gunicorn's sync
workers, or uvicorn's ASGI workers with an async view and a pool of
connections, and sends requests from an asyncio HTTP client, each with a
unique ``User-Agent`` that the audit trail records:

1. prepare: uses up some links before the soak;
2. stateless, stored: valid links of each kind, in alternating halves, for
   throughput and latency side by side;
3. forged: stored links with a wrong MAC, then stateless links with a wrong
   signature;
4. soak: a mix of valid, forged, wrong-scope, used-up and soon-revoked links
   for ``--duration`` seconds; 30% of the way in, the script revokes a
   subset of the links; at 55%, it restarts PostgreSQL.

Phases 2 and 3 run alone on the server: the script counts the statements
that PostgreSQL ran meanwhile in the site's database (``pg_stat_statements``,
read from another database).

Finally it checks invariants against the database and the responses, prints
them with their number of violations, writes every figure to
``artifacts/load.json``, and exits with status 1 if any invariant is violated.
Nothing asserts on time.

PostgreSQL runs as the test suite's does, with fsync and synchronous_commit
off, unless ``--durable`` turns them on (with full_page_writes), as the
benchmark's (benchmarks/bench.py) are. ``--prepared`` gives the site's
connections Django's opt-in server-side binding with prepared statements
(``DEMO_PG_PREPARED=1``, docs/performance.rst).

With ``--app-servers 2``, two servers run side by side, as two machines
behind a load balancer would: separate masters with their own workers,
sharing PostgreSQL through PgBouncer in transaction pooling mode
(tests/pgbouncer.py) and a Redis server (tests/redis.py) that counts
:data:`SESAME_RATE_LIMIT` failures. The client sends each request to one of
them in turn, with an ``X-Forwarded-For`` address of its own, which the site
trusts. Two more invariants are checked: each server refuses the revoked
links from the second of their revocation on, and a client that sends
forged links to both servers gets the limit once, not once per process
(docs/scale.rst).

It needs Django, django-model-utils, psycopg, gunicorn, uvicorn and Debian's
postgresql package (and with ``--app-servers 2``, redis and Debian's
pgbouncer and redis-server packages); ``make load`` installs the Python packages. pytest
doesn't collect it.

"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

    from tests.pgbouncer import Bouncer
    from tests.postgres import Cluster
    from tests.redis import Server as RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
ARTIFACTS = ROOT / "artifacts"
DATABASE = "sesame_load"
USER_AGENT = "sesame-load/"  # followed by the number of the request
TIMEOUT = 30.0  # seconds to wait for a response

# What a request sends; the soak mixes them.
STORED = "stored"  # a stored link, used until its limit
HOT = "hot"  # a stored link with a low limit that many clients share
REVOKED = "revoked"  # a stored link that the soak revokes
EXHAUSTED = "exhausted"  # a stored link used up before the soak
WRONG_SCOPE = "wrong scope"  # a stored link for another report
UNLIMITED = "unlimited"  # a stored link without a limit, for the measured phase
FORGED = "forged"  # a stored link with a wrong MAC
STATELESS = "stateless"  # a stateless link
FORGED_STATELESS = "forged stateless"  # a stateless link with a wrong signature

# Stored links that identify a record: each use or rejection is audited.
IDENTIFIABLE = {STORED, HOT, REVOKED, EXHAUSTED, WRONG_SCOPE, UNLIMITED}

SOAK_MIX = {
    STORED: 36,
    HOT: 10,
    REVOKED: 12,
    EXHAUSTED: 8,
    WRONG_SCOPE: 4,
    FORGED: 10,
    STATELESS: 15,
    FORGED_STATELESS: 5,
}
REVOKE_AT = 0.3  # of the soak's duration
RESTART_AT = 0.55
AFTERMATH = 2.0  # seconds of soak at least after each event, however short --duration

# Use limits of the stored links of each pool, in turn; None is unlimited.
LIMITS = {
    STORED: (1, 2, 3, 5, 10, None),
    HOT: (1, 2, 3, 5, 10),
    REVOKED: (None, 10, 5, 3),
    EXHAUSTED: (1, 2, 3),
    UNLIMITED: (None,),
}
# Shares of --links; the rest are STORED.
SHARES = {HOT: 0.01, REVOKED: 0.1, EXHAUSTED: 0.1, UNLIMITED: 0.05}
USERS = 100

SERVERS = ("gunicorn", "uvicorn")

# With --app-servers 2: SESAME_RATE_LIMIT of the site, and the client that
# sends forged links to both servers until it's limited.
RATE_LIMIT = (200, 3600)
RATE_LIMITED = "rate limited"  # a forged stored link from the limited client
LIMITED_CLIENT = "192.0.2.77"
RATE_LIMIT_EXTRA = 100  # requests beyond the limit
SAME_SECOND = 1.0  # seconds after a revocation, for invariant 6c


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run, from the command line."""

    servers: tuple[str, ...]
    workers: int
    concurrency: int
    requests: int
    duration: float
    links: int
    restart: bool
    seed: int
    json_path: Path
    quick: bool
    app_servers: int = 1
    durable: bool = False
    prepared: bool = False


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=(__doc__ or "").strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a run of about 30 s: shorter soak, fewer requests and links",
    )
    parser.add_argument(
        "--server",
        choices=[*SERVERS, "both"],
        default="gunicorn",
        help="gunicorn (sync workers), uvicorn (ASGI, async view) or both in turn (default: gunicorn)",
    )
    parser.add_argument(
        "--workers", type=int, default=3, help="server processes (default: 3)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight at any time (default: 8)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="requests of each measured phase (default: 3000, --quick: 600)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds of the soak (default: 90, --quick: 20)",
    )
    parser.add_argument(
        "--links",
        type=int,
        help="stored links to issue per server (default: 3000, --quick: 600)",
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="don't restart PostgreSQL during the soak",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the request mix (default: 0)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ARTIFACTS / "load.json",
        help="where to write the figures (default: artifacts/load.json)",
    )
    parser.add_argument(
        "--app-servers",
        type=int,
        choices=[1, 2],
        default=1,
        help="1, or 2 servers sharing PostgreSQL through PgBouncer and Redis (default: 1)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="run PostgreSQL with fsync, synchronous_commit and full_page_writes on",
    )
    parser.add_argument(
        "--prepared",
        action="store_true",
        help="server-side binding with prepared statements on the site's connections",
    )
    args = parser.parse_args(argv)
    if args.prepared and args.app_servers > 1:
        # The PgBouncer that it starts (Debian's, 1.18) can't keep prepared
        # statements in transaction pooling mode: each transaction may get
        # another server connection, which doesn't have them.
        parser.error("--prepared doesn't go through PgBouncer: use one app server")
    for name in ("workers", "concurrency", "requests", "duration", "links"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive")
    return Options(
        servers=SERVERS if args.server == "both" else (args.server,),
        workers=args.workers,
        concurrency=args.concurrency,
        requests=args.requests or (600 if args.quick else 3000),
        duration=args.duration or (20.0 if args.quick else 90.0),
        links=args.links or (600 if args.quick else 3000),
        restart=args.restart,
        seed=args.seed,
        json_path=args.json,
        durable=args.durable,
        prepared=args.prepared,
        quick=args.quick,
        app_servers=args.app_servers,
    )


# PostgreSQL and Django.


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_postgresql(durable: bool = False) -> tuple[Cluster, int]:
    """Start a throwaway cluster on 127.0.0.1 with pg_stat_statements, and create the site's database."""
    from benchmarks.bench import DURABLE
    from tests.postgres import Unavailable, start_cluster

    port = free_port()
    try:
        cluster = start_cluster(
            port=port,
            settings={
                "shared_preload_libraries": "pg_stat_statements",
                # The statements that the site sends, not those that run
                # inside the functions they call (docs/store.rst).
                "pg_stat_statements.track": "top",
                "pg_stat_statements.max": "10000",
                **(DURABLE if durable else {}),
            },
        )
    except Unavailable as exc:
        raise SystemExit(f"Cannot start PostgreSQL: {exc}") from None
    # The extension lives in the "postgres" database, where the script
    # measures, so its own queries never count against the site's.
    with measuring_connection(port) as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")
        connection.execute("CREATE EXTENSION pg_stat_statements")
    return cluster, port


@contextlib.contextmanager
def measuring_connection(port: int) -> Iterator[Any]:
    """Connect to the "postgres" database, which the site never uses."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        yield connection


def statement_calls(port: int) -> collections.Counter[str]:
    """Return how many times PostgreSQL ran each statement in the site's database."""
    with measuring_connection(port) as connection:
        rows = connection.execute(
            "SELECT s.query, sum(s.calls) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s GROUP BY s.query",
            [DATABASE],
        ).fetchall()
    return collections.Counter({query: int(calls) for query, calls in rows})


def server_settings(port: int) -> dict[str, str]:
    """Return the values of the server settings that matter to the figures."""
    names = ["server_version", "fsync", "synchronous_commit", "max_connections"]
    with measuring_connection(port) as connection:
        return {
            name: connection.execute(f"SHOW {name}").fetchone()[0] for name in names
        }


def site_environment(
    pg_port: int, server: str = "gunicorn", prepared: bool = False
) -> dict[str, str]:
    """
    Return the environment that switches the demo to production-like settings on PostgreSQL.

    Under uvicorn, the site uses a pool of connections rather than persistent
    connections, which Django doesn't reuse under ASGI: each request would
    open its own and leave it open.

    """
    return {
        "DEMO_PG_POOL": "1" if server == "uvicorn" else "0",
        "DEMO_PG_PREPARED": "1" if prepared else "0",
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "DEMO_DEBUG": "0",
        "DEMO_PGHOST": "127.0.0.1",
        "DEMO_PGPORT": str(pg_port),
        "DEMO_PGDATABASE": DATABASE,
        "DEMO_PGUSER": "postgres",
        "DEMO_SESAME_LOG_LEVEL": "WARNING",
        "DEMO_URLCONF": "benchmarks.load_site",
        # The checkout's sesame_db and demo_site, installed or not.
        "PYTHONPATH": os.pathsep.join([str(DEMO), str(ROOT)]),
    }


def setup_django(environment: dict[str, str]) -> None:
    """Configure Django in this process with the site's settings, and migrate."""
    import django
    from django.core.management import call_command

    os.environ.update(environment)
    for path in (str(ROOT), str(DEMO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


@dataclasses.dataclass
class Shared:
    """What several app servers share besides PostgreSQL: PgBouncer and Redis."""

    bouncer: Bouncer
    redis: RedisServer

    def environment(self) -> dict[str, str]:
        return {
            "DEMO_PGPORT": str(self.bouncer.port),
            "DEMO_PGBOUNCER": "1",
            "DEMO_REDIS_URL": self.redis.url,
            "DEMO_RATE_LIMIT": "/".join(map(str, RATE_LIMIT)),
            "DEMO_TRUSTED_PROXIES": "1",
        }


def start_shared(cluster: Cluster, pg_port: int) -> Shared:
    """Start PgBouncer in front of the cluster, and Redis."""
    from tests.pgbouncer import start_pooler
    from tests.postgres import Unavailable
    from tests.redis import Unavailable as RedisUnavailable
    from tests.redis import start_server

    try:
        return Shared(start_pooler(cluster, pg_port), start_server())
    except (Unavailable, RedisUnavailable) as exc:
        raise SystemExit(f"Cannot start --app-servers 2: {exc}") from None


def close_connections() -> None:
    """Close this thread's database connections: Django doesn't check them outside requests."""
    from django.db import connections

    connections.close_all()


# Links.


@dataclasses.dataclass(frozen=True)
class Link:
    """A link to a report: a token, and the record of a stored one."""

    token: str
    report: int
    record_id: int | None = None
    max_uses: int | None = None


@dataclasses.dataclass
class Links:
    """The links of one server's run, by pool."""

    stored: dict[str, list[Link]]
    stateless: list[Link]

    def ids(self, pool: str) -> list[int]:
        return [link.record_id for link in self.stored[pool] if link.record_id]


def create_users(prefix: str) -> Sequence[AbstractBaseUser]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    User = get_user_model()
    password = make_password(None)  # unusable, and fast to make
    return User._default_manager.bulk_create(
        [
            User(
                username=f"{prefix}-{index}",
                email=f"{prefix}-{index}@example.com",
                password=password,
            )
            for index in range(USERS)
        ]
    )


def issue_pool(
    users: Sequence[AbstractBaseUser], count: int, limits: Sequence[int | None]
) -> list[Link]:
    """Issue ``count`` stored links, alternating between reports 1 and 2 and cycling through ``limits``."""
    from sesame_db.store import issue_many

    groups: dict[tuple[int, int | None], list[AbstractBaseUser]] = {}
    for index in range(count):
        key = (1 + index % 2, limits[(index // 2) % len(limits)])
        groups.setdefault(key, []).append(users[index % len(users)])
    links = []
    for (report, max_uses), group in groups.items():
        for token, record in issue_many(
            group, f"report:{report}", max_uses=max_uses, label="load test"
        ):
            links.append(Link(token, report, record.pk, max_uses))
    return links


def make_links(prefix: str, count: int) -> Links:
    """Create users, issue ``count`` stored links in pools, and make stateless links."""
    from sesame_db.utils import get_token

    users = create_users(prefix)
    sizes = {pool: max(10, int(count * share)) for pool, share in SHARES.items()}
    sizes[STORED] = max(10, count - sum(sizes.values()))
    stored = {
        pool: issue_pool(users, size, LIMITS[pool]) for pool, size in sizes.items()
    }
    stateless = [
        Link(get_token(user, f"report:{report}", store=False), report)
        for user in users
        for report in (1, 2)
    ]
    close_connections()
    return Links(stored, stateless)


def forge_stored(token: str) -> str:
    """Flip a bit in the MAC of a stored ``token``, the last of its 27 bytes."""
    data = bytearray(base64.urlsafe_b64decode(token[1:]))
    data[-1] ^= 1
    return token[0] + base64.urlsafe_b64encode(bytes(data)).decode()


def forge_stateless(token: str) -> str:
    """Flip a bit in the signature of a stateless ``token``, at its end."""
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


def revoke(ids: list[int]) -> tuple[int, float]:
    """Revoke links ``ids``; return how many, and the monotonic time once committed."""
    from sesame_db.models import IssuedToken

    try:
        revoked = IssuedToken.objects.filter(pk__in=ids).revoke(reason="load test")
        # revoke() commits each batch before returning.
        return revoked, time.monotonic()
    finally:
        close_connections()


# The server.


class Server:
    """The demo site under gunicorn or uvicorn, in a process group of its own."""

    def __init__(
        self, kind: str, workers: int, environment: dict[str, str], log: Path
    ) -> None:
        self.kind = kind
        self.workers = workers
        self.port = free_port()
        self.environment = environment
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> str:
        """The path of the reports: the async twin of the view under uvicorn."""
        return "/async/reports/" if self.kind == "uvicorn" else "/reports/"

    def command(self) -> list[str]:
        address = ["127.0.0.1", str(self.port)]
        if self.kind == "gunicorn":
            return [
                *(sys.executable, "-m", "gunicorn", "--worker-class", "sync"),
                *("--workers", str(self.workers), "--bind", ":".join(address)),
                *("--backlog", "2048", "--graceful-timeout", "5"),
                *("--log-level", "warning"),
                "django.core.wsgi:get_wsgi_application()",
            ]
        return [
            *(sys.executable, "-m", "uvicorn", "--factory"),
            *("--workers", str(self.workers), "--host", address[0]),
            *("--port", address[1], "--backlog", "2048", "--lifespan", "off"),
            *("--no-access-log", "--log-level", "warning"),
            *("--timeout-graceful-shutdown", "5"),
            "django.core.asgi:get_asgi_application",
        ]

    def version(self) -> str:
        return f"{self.kind} {importlib.metadata.version(self.kind)}"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env={**os.environ, **self.environment},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.kind} exited: see {self.log}")
            status, _ = asyncio.run(self.probe())
            if status == 200:
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.kind} didn't answer within 30 s: see {self.log}")

    async def probe(self) -> tuple[int, str | None]:
        with contextlib.suppress(OSError, ValueError):
            return await fetch(self.port, "/", "sesame-load-probe")
        return 0, None

    def worker_pids(self) -> set[int]:
        """Return the ids of the server's worker processes: its master's children, on Linux."""
        if self.process is None:
            return set()
        pid = self.process.pid
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            return {int(child) for child in children.split()}
        return set()

    def stop(self) -> None:
        """Stop the server's process group: its master and workers."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


# The client.


async def fetch(
    port: int, path: str, user_agent: str, forwarded_for: str | None = None
) -> tuple[int, str | None]:
    """
    Send ``GET path`` to 127.0.0.1:``port`` on a new connection.

    Return the status and the ``Retry-After`` header, if any; raise
    :exc:`OSError` if the connection fails and :exc:`ValueError` if the
    response is malformed.

    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    forwarded = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"User-Agent: {user_agent}\r\n{forwarded}Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {head[0]!r}")
    retry_after = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after":
            retry_after = value.strip()
    return int(parts[1]), retry_after


@dataclasses.dataclass(frozen=True)
class Planned:
    """A request to send: what kind, where, and the stored link it uses."""

    kind: str
    path: str
    record_id: int | None = None
    # With several app servers, the client address; by default, one per request.
    client: str | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    """A request that was sent; ``status`` is 0 when no response came."""

    number: int
    phase: str
    kind: str
    record_id: int | None
    status: int
    start: float
    end: float
    retry_after: str | None
    server: int = 0  # which of the app servers answered

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Client:
    """Send planned requests to the server, numbering them in their ``User-Agent``."""

    def __init__(
        self, server: Server, counter: Iterator[int], others: Sequence[Server] = ()
    ) -> None:
        self.server = server
        # With --app-servers 2, requests go to each server in turn, each
        # from a client address of its own.
        self.servers = [server, *others]
        self.counter = counter
        self.results: list[Result] = []

    def worker_pids(self) -> set[int]:
        return set().union(*(server.worker_pids() for server in self.servers))

    def plan(
        self, kind: str, link: Link, *, token: str = "", report: int = 0
    ) -> Planned:
        """Plan a request of ``link``, or of ``token`` on ``report`` instead of its own."""
        from sesame_db.conf import conf

        query = urlencode({conf.TOKEN_NAME: token or link.token})
        path = f"{self.server.prefix}{report or link.report}/?{query}"
        return Planned(kind, path, link.record_id)

    async def send(self, phase: str, planned: Planned) -> Result:
        number = next(self.counter)
        index = number % len(self.servers)
        forwarded_for = None
        if len(self.servers) > 1:
            forwarded_for = planned.client or client_address(number)
        start = time.monotonic()
        try:
            status, retry_after = await asyncio.wait_for(
                fetch(
                    self.servers[index].port,
                    planned.path,
                    f"{USER_AGENT}{number}",
                    forwarded_for,
                ),
                TIMEOUT,
            )
        except (OSError, ValueError, asyncio.TimeoutError):
            status, retry_after = 0, None
        result = Result(
            number,
            phase,
            planned.kind,
            planned.record_id,
            status,
            start,
            time.monotonic(),
            retry_after,
            index,
        )
        self.results.append(result)
        return result

    async def drive(
        self,
        phase: str,
        next_request: Callable[[], Planned | None],
        concurrency: int,
        running: Callable[[], bool] | None = None,
    ) -> list[Result]:
        """Keep ``concurrency`` requests in flight until ``next_request`` returns None or ``running()`` False."""
        results: list[Result] = []

        async def loop() -> None:
            while running is None or running():
                planned = next_request()
                if planned is None:
                    return
                results.append(await self.send(phase, planned))

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return results

    def run(
        self, phase: str, requests: Iterable[Planned], concurrency: int
    ) -> list[Result]:
        """Send ``requests``, ``concurrency`` at a time."""
        iterator = iter(requests)
        return asyncio.run(self.drive(phase, lambda: next(iterator, None), concurrency))


def client_address(number: int) -> str:
    """Return the address of the client of request ``number``: one per request, in 10.0.0.0/8."""
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


# Phases.


@dataclasses.dataclass
class Phase:
    """The figures of a phase: requests, throughput, latency, statuses."""

    requests: int
    seconds: float
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]


def histogram(results: Iterable[Result]) -> dict[str, int]:
    counts = collections.Counter(
        str(result.status) if result.status else "no response" for result in results
    )
    return dict(sorted(counts.items()))


def summarize(results: Sequence[Result], seconds: float) -> Phase:
    latencies = sorted(result.end - result.start for result in results)
    return Phase(
        requests=len(results),
        seconds=seconds,
        statuses=histogram(results),
        p50_ms=percentile(latencies, 0.5) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def timed(func: Callable[[], list[Result]]) -> tuple[list[Result], float]:
    start = time.monotonic()
    results = func()
    return results, time.monotonic() - start


def prepare(
    client: Client, links: Links, concurrency: int, rng: random.Random
) -> list[Result]:
    """Use up the EXHAUSTED links, each as often as it allows."""
    planned = [
        client.plan(EXHAUSTED, link)
        for link in links.stored[EXHAUSTED]
        for _ in range(link.max_uses or 1)
    ]
    rng.shuffle(planned)
    return client.run("prepare", planned, concurrency)


@dataclasses.dataclass
class Measured:
    """A phase alone on the server, and the statements that PostgreSQL ran meanwhile."""

    phase: Phase
    statements: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.statements.values())

    @property
    def per_request(self) -> float:
        return self.total / self.phase.requests if self.phase.requests else 0.0


def run_measured(
    client: Client,
    parts: Sequence[tuple[str, list[Planned]]],
    options: Options,
    pg_port: int,
) -> dict[str, Measured]:
    """
    Send each part's requests in turn, alone on the server; return the figures of each kind.

    Nothing else uses the site's database meanwhile: the statements that
    PostgreSQL ran in it between the two ends of a part are that part's.

    """
    results: dict[str, list[Result]] = collections.defaultdict(list)
    seconds: dict[str, float] = collections.defaultdict(float)
    statements: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for kind, planned in parts:
        before = statement_calls(pg_port)
        start = time.monotonic()
        results[kind] += client.run(kind, planned, options.concurrency)
        seconds[kind] += time.monotonic() - start
        statements[kind].update(statement_calls(pg_port) - before)
    return {
        kind: Measured(summarize(results[kind], seconds[kind]), dict(statements[kind]))
        for kind in results
    }


def measure(
    client: Client, links: Links, options: Options, pg_port: int, rng: random.Random
) -> dict[str, Measured]:
    """Time valid stateless and valid stored links in alternating halves (ABBA)."""
    pools = {STATELESS: links.stateless, UNLIMITED: links.stored[UNLIMITED]}
    half = max(1, options.requests // 2)
    parts = [
        (kind, [client.plan(kind, rng.choice(pools[kind])) for _ in range(half)])
        for kind in (STATELESS, UNLIMITED, UNLIMITED, STATELESS)
    ]
    return run_measured(client, parts, options, pg_port)


def forged(
    client: Client, links: Links, options: Options, pg_port: int, rng: random.Random
) -> dict[str, Measured]:
    """Send forged stored links, then forged stateless links, alone, counting statements."""
    stored = [link for pool in (STORED, UNLIMITED) for link in links.stored[pool]]
    parts = []
    for kind, pool, forge in (
        (FORGED, stored, forge_stored),
        (FORGED_STATELESS, links.stateless, forge_stateless),
    ):
        planned = []
        for _ in range(options.requests):
            link = rng.choice(pool)
            # A forged link identifies no record: don't attach the real one.
            planned.append(
                dataclasses.replace(
                    client.plan(kind, link, token=forge(link.token)), record_id=None
                )
            )
        parts.append((kind, planned))
    return run_measured(client, parts, options, pg_port)


@dataclasses.dataclass
class Timeline:
    """When the soak revoked links and restarted PostgreSQL, in monotonic seconds."""

    start: float
    deadline: float
    end: float = 0.0
    revoked_ids: list[int] = dataclasses.field(default_factory=list)
    revoked: int = 0
    revoke_committed: float | None = None
    restart_started: float | None = None
    restart_finished: float | None = None
    # The server's worker processes before and after the soak.
    workers_before: set[int] = dataclasses.field(default_factory=set)
    workers_after: set[int] = dataclasses.field(default_factory=set)

    def extend(self) -> None:
        """Keep the soak going for AFTERMATH seconds at least."""
        self.deadline = max(self.deadline, time.monotonic() + AFTERMATH)

    def running(self) -> bool:
        return time.monotonic() < self.deadline


async def scenario(
    timeline: Timeline, duration: float, cluster: Cluster | None, ids: list[int]
) -> None:
    """Revoke ``ids`` at REVOKE_AT of the soak; restart the cluster at RESTART_AT."""
    await asyncio.sleep(
        max(0.0, timeline.start + REVOKE_AT * duration - time.monotonic())
    )
    timeline.revoked_ids = ids
    timeline.revoked, timeline.revoke_committed = await asyncio.to_thread(revoke, ids)
    timeline.extend()
    if cluster is None:
        return
    await asyncio.sleep(
        max(0.0, timeline.start + RESTART_AT * duration - time.monotonic())
    )
    timeline.restart_started = time.monotonic()
    await asyncio.to_thread(cluster.restart)
    timeline.restart_finished = time.monotonic()
    timeline.extend()


def soak(
    client: Client,
    links: Links,
    options: Options,
    cluster: Cluster,
    rng: random.Random,
) -> tuple[list[Result], Timeline]:
    """Send the mix of SOAK_MIX for ``--duration`` seconds, revoking and restarting meanwhile."""
    kinds = list(SOAK_MIX)
    weights = list(SOAK_MIX.values())
    pools = {kind: links.stored.get(kind, []) for kind in kinds}

    def next_request() -> Planned:
        kind = rng.choices(kinds, weights)[0]
        if kind in (STATELESS, FORGED_STATELESS):
            link = rng.choice(links.stateless)
            if kind == STATELESS:
                return client.plan(kind, link)
            return client.plan(kind, link, token=forge_stateless(link.token))
        if kind in (FORGED, WRONG_SCOPE):
            link = rng.choice(links.stored[STORED])
            if kind == WRONG_SCOPE:
                return client.plan(kind, link, report=3 - link.report)
            planned = client.plan(kind, link, token=forge_stored(link.token))
            return dataclasses.replace(planned, record_id=None)
        return client.plan(kind, rng.choice(pools[kind]))

    async def run() -> tuple[list[Result], Timeline]:
        start = time.monotonic()
        timeline = Timeline(start, start + options.duration, workers_before=workers)
        results, _ = await asyncio.gather(
            client.drive("soak", next_request, options.concurrency, timeline.running),
            scenario(
                timeline,
                options.duration,
                cluster if options.restart else None,
                links.ids(REVOKED),
            ),
        )
        timeline.end = time.monotonic()
        timeline.workers_after = client.worker_pids()
        return results, timeline

    workers = client.worker_pids()
    return asyncio.run(run())


def rate_limit(
    client: Client, links: Links, options: Options, rng: random.Random
) -> list[Result]:
    """Send forged stored links from one client to each server in turn, past SESAME_RATE_LIMIT."""
    planned = []
    for _ in range(RATE_LIMIT[0] + RATE_LIMIT_EXTRA):
        link = rng.choice(links.stored[STORED])
        planned.append(
            dataclasses.replace(
                client.plan(RATE_LIMITED, link, token=forge_stored(link.token)),
                record_id=None,
                client=LIMITED_CLIENT,
            )
        )
    return client.run("rate limit", planned, options.concurrency)


def restart_window(results: Sequence[Result], timeline: Timeline) -> dict[str, Any]:
    """
    Describe the outage: from the first 5xx response to the first 200 of a request sent after it.

    Times are seconds from the start of the restart.

    """
    if timeline.restart_started is None or timeline.restart_finished is None:
        return {}
    origin = timeline.restart_started
    errors = sorted(
        (r for r in results if r.status >= 500 and r.end >= origin), key=lambda r: r.end
    )
    window: dict[str, Any] = {
        "restart_seconds": timeline.restart_finished - origin,
        "errors": histogram(errors),
        "errors_before": histogram(
            r for r in results if r.status >= 500 and r.end < origin
        ),
        "retry_after": dict(
            collections.Counter(r.retry_after or "none" for r in errors)
        ),
    }
    during = [
        r.end - r.start
        for r in results
        if r.start <= timeline.restart_finished and r.end >= origin
    ]
    window["slowest_during"] = max(during, default=0.0)
    if not errors:
        return window
    first = errors[0].end
    recovered = [r.end for r in results if r.status == 200 and r.start >= first]
    window["first_error"] = first - origin
    window["last_error"] = errors[-1].end - origin
    if recovered:
        window["first_200_after"] = min(recovered) - origin
        window["seconds"] = min(recovered) - first
    return window


# Invariants.


@dataclasses.dataclass(frozen=True)
class Check:
    """An invariant and how many times it was violated; some cases are only counted."""

    label: str
    violations: int
    checked: int
    enforced: bool = True


@dataclasses.dataclass(frozen=True)
class Record:
    """The final state of a stored link in the database."""

    max_uses: int | None
    use_count: int
    revoked: bool
    used_events: int

    @property
    def used_up(self) -> bool:
        return self.max_uses is not None and self.use_count >= self.max_uses


@dataclasses.dataclass
class Audit:
    """What the database says: the links, and the events of the script's requests."""

    records: dict[int, Record]
    # Request number -> (kind, reason, token id) of its used and rejected events.
    events: dict[int, list[tuple[str, str, int | None]]]
    used_after_revocation: int


def read_audit() -> Audit:
    """Read the final state of every link and the audit events of every request."""
    from django.db.models import Count, F, Q

    from sesame_db.models import IssuedToken, TokenEvent

    close_connections()  # the restart broke this thread's connection
    used = TokenEvent.Kind.USED
    records = {
        pk: Record(max_uses, use_count, revoked_at is not None, used_events)
        for pk, max_uses, use_count, revoked_at, used_events in IssuedToken.objects.annotate(
            used_events=Count("events", filter=Q(events__kind=used))
        ).values_list("pk", "max_uses", "use_count", "revoked_at", "used_events")
    }
    events: dict[int, list[tuple[str, str, int | None]]] = collections.defaultdict(list)
    for user_agent, kind, reason, token_id in TokenEvent.objects.filter(
        user_agent__startswith=USER_AGENT,
        kind__in=[used, TokenEvent.Kind.REJECTED],
    ).values_list("user_agent", "kind", "reason", "token_id"):
        events[int(user_agent.removeprefix(USER_AGENT))].append(
            (kind, reason, token_id)
        )
    used_after_revocation = TokenEvent.objects.filter(
        kind=used,
        token__revoked_at__isnull=False,
        created_at__gte=F("token__revoked_at"),
    ).count()
    close_connections()
    return Audit(records, dict(events), used_after_revocation)


def reason_fits(reason: str, kind: str, record: Record) -> bool:
    """Tell whether a rejection of a link of ``kind`` for ``reason`` matches the link's final state."""
    if kind == WRONG_SCOPE:
        return reason == "wrong_scope"
    if reason == "revoked":
        return record.revoked
    if reason == "used_up":
        return record.used_up
    return False


def check_records(audit: Audit) -> list[Check]:
    """Invariants 1 and 2: per link, uses within the limit, and counted once each."""
    records = audit.records.values()
    over = sum(
        1
        for r in records
        if r.max_uses is not None and max(r.use_count, r.used_events) > r.max_uses
    )
    miscounted = sum(1 for r in records if r.use_count != r.used_events)
    return [
        Check("1. accepted uses never exceed max_uses", over, len(records)),
        Check(
            "2. use_count = accepted (used) events, per link", miscounted, len(records)
        ),
    ]


def check_requests(results: Sequence[Result], audit: Audit) -> list[Check]:
    """Invariants 3 and 4: each response matches its audit events; each request got one, not a 500."""
    accepted = rejected_ok = missing = lost = stray = 0
    refused_links: set[int | None] = set()
    audited_links: set[int | None] = set()
    ok_count = not_ok_count = forbidden_count = other_count = 0
    for result in results:
        events = audit.events.get(result.number, [])
        used = [e for e in events if e[0] == "used"]
        rejected = [e for e in events if e[0] == "rejected"]
        if result.kind not in IDENTIFIABLE:
            other_count += 1
            stray += bool(events)
            continue
        if result.ok:
            ok_count += 1
            accepted += not (len(used) == 1 and used[0][2] == result.record_id)
        elif result.status == 503:
            # The database may have committed the use as the connection
            # dropped: the answer is lost, not the audit (docs/store.rst).
            lost += bool(used)
        else:
            not_ok_count += 1
            missing += bool(used)
        if result.status == 403:
            forbidden_count += 1
            record = audit.records.get(result.record_id or 0)
            # The audit trail keeps the first rejection of a link for a
            # reason from each client, per window (docs/store.rst): a 403
            # has at most one rejected event, and every refused link has one.
            rejected_ok += not (
                len(rejected) <= 1
                and record is not None
                and all(
                    event[2] == result.record_id
                    and reason_fits(event[1], result.kind, record)
                    for event in rejected
                )
            )
            refused_links.add(result.record_id)
            if rejected:
                audited_links.add(result.record_id)
    errors = sum(1 for result in results if result.status == 500)
    unanswered = sum(1 for result in results if result.status == 0)
    return [
        Check(
            "3a. each 2xx for a stored link has exactly one used event",
            accepted,
            ok_count,
        ),
        Check(
            "3b. each non-2xx for a stored link has no used event, 503 apart",
            missing,
            not_ok_count,
        ),
        Check(
            "    503 for a stored link with a used event (a lost answer: allowed)",
            lost,
            sum(1 for r in results if r.status == 503 and r.kind in IDENTIFIABLE),
            enforced=False,
        ),
        Check(
            "3c. each 403 for a stored link has at most one rejected event, fitting",
            rejected_ok,
            forbidden_count,
        ),
        Check(
            "3e. each stored link answered 403 has a rejected event for it",
            len(refused_links - audited_links),
            len(refused_links),
        ),
        Check("3d. forged and stateless links left no event", stray, other_count),
        Check("4a. no response was 500", errors, len(results)),
        Check(
            "4b. every request got a response (no reset, no timeout)",
            unanswered,
            len(results),
        ),
    ]


def check_revocations(
    results: Sequence[Result], timelines: Sequence[Timeline], audit: Audit
) -> list[Check]:
    """Invariant 6: no revoked link worked once its revocation had committed."""
    late = checked = 0
    for timeline in timelines:
        if timeline.revoke_committed is None:
            continue
        revoked = set(timeline.revoked_ids)
        for result in results:
            if result.record_id in revoked and result.start > timeline.revoke_committed:
                checked += 1
                late += result.ok
    return [
        Check(
            "6a. no 2xx for a revoked link sent after the revocation committed",
            late,
            checked,
        ),
        Check(
            "6b. no used event recorded at or after its link's revocation",
            audit.used_after_revocation,
            sum(1 for r in audit.records.values() if r.revoked),
        ),
    ]


def check_recovery(
    results: Sequence[Result], timelines: Sequence[Timeline]
) -> list[Check]:
    """Invariant 7: the site served again after the restart, with the same worker processes."""
    restarts = [t for t in timelines if t.restart_finished is not None]
    unrecovered = sum(
        not any(
            r.status == 200 and r.start >= (t.restart_finished or 0.0) for r in results
        )
        for t in restarts
    )
    replaced = sum(len(t.workers_before - t.workers_after) for t in timelines)
    return [
        Check(
            "7a. the site answered 200 again after the restart of PostgreSQL",
            unrecovered,
            len(restarts),
        ),
        Check(
            "7b. no server worker was replaced during the soak",
            replaced,
            sum(len(t.workers_before) for t in timelines),
        ),
    ]


def check_app_servers(
    results: Sequence[Result], timelines: Sequence[Timeline], app_servers: int
) -> list[Check]:
    """Invariants 6c and 8, with several app servers: revocations and the rate limit hold across them."""
    late = 0
    for timeline in timelines:
        committed = timeline.revoke_committed
        if committed is None:
            continue
        revoked = set(timeline.revoked_ids)
        for index in range(app_servers):
            sent = [
                r
                for r in results
                if r.server == index
                and r.record_id in revoked
                and committed < r.start <= committed + SAME_SECOND
            ]
            # No request to tell is a violation too: the check must check.
            late += not sent or any(r.ok for r in sent)
    limited = [r for r in results if r.kind == RATE_LIMITED]
    checked = sum(r.status == 403 for r in limited)
    servers_429 = {r.server for r in limited if r.status == 429}
    return [
        Check(
            "6c. each server refused the revoked links sent in the second after",
            late,
            app_servers * sum(t.revoke_committed is not None for t in timelines),
        ),
        Check(
            f"8a. one client's failures across servers stay within the limit ({RATE_LIMIT[0]})",
            max(0, checked - RATE_LIMIT[0] * len(timelines)),
            len(limited),
        ),
        Check(
            "8b. every server answered 429 to the client over the limit",
            app_servers - len(servers_429),
            app_servers,
        ),
    ]


def check_forged(forged_phases: Sequence[dict[str, Measured]]) -> Check:
    """Invariant 5: forged stored links cost no statement."""
    phases = [phases[FORGED] for phases in forged_phases]
    return Check(
        "5. forged stored links ran no SQL statement",
        sum(phase.total for phase in phases),
        sum(phase.phase.requests for phase in phases),
    )


# Output.


def print_phases(title: str, phases: dict[str, Phase | Measured]) -> None:
    """Print a table of phases; measured ones show the SQL statements per request."""
    print(f"\n{title}")
    print(
        f"  {'':<18}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'SQL/req':>9}  statuses"
    )
    for name, item in phases.items():
        phase = item.phase if isinstance(item, Measured) else item
        per_request = f"{item.per_request:.2f}" if isinstance(item, Measured) else ""
        statuses = ", ".join(f"{status}: {n}" for status, n in phase.statuses.items())
        print(
            f"  {name:<18}{phase.requests:>9}{phase.rps:>8.0f}{phase.p50_ms:>8.1f}"
            f"{phase.p99_ms:>8.1f}{per_request:>9}  {statuses}"
        )


def print_statements(phases: dict[str, Measured]) -> None:
    """Print the statements that PostgreSQL ran during each measured phase, most frequent first."""
    print(
        "\nStatements in the site's database during each phase (pg_stat_statements,"
        "\nread from another database)"
    )
    for kind, measured in phases.items():
        print(f"  {kind}: {measured.total} for {measured.phase.requests} requests")
        for query, calls in sorted(measured.statements.items(), key=lambda i: -i[1]):
            print(f"    {calls:>7}  {' '.join(query.split())[:90]}")


def print_kinds(results: Sequence[Result]) -> None:
    """Print the statuses of the soak's requests by kind of link."""
    statuses = sorted({r.status for r in results})
    names = [str(s) if s else "none" for s in statuses]
    print(f"  {'':<18}" + "".join(f"{name:>8}" for name in names))
    counts = collections.Counter((r.kind, r.status) for r in results)
    for kind in SOAK_MIX:
        print(f"  {kind:<18}" + "".join(f"{counts[kind, s]:>8}" for s in statuses))


def print_soak(phase: Phase, results: Sequence[Result], window: dict[str, Any]) -> None:
    served = sum(n for status, n in phase.statuses.items() if status != "no response")
    print(
        f"\nSoak: {phase.seconds:.0f} s, {phase.requests} requests, {served} served,"
        f" {phase.rps:.1f} req/s, p50 {phase.p50_ms:.1f} ms, p99 {phase.p99_ms:.1f} ms"
    )
    print("  statuses: " + ", ".join(f"{s}: {n}" for s, n in phase.statuses.items()))
    print_kinds(results)
    if not window:
        print("  no restart (--no-restart)")
        return
    print(
        f"  PostgreSQL restart: pg_ctl restart took {window['restart_seconds']:.2f} s;"
        f" 5xx responses since it began: {window['errors'] or 'none'}"
        f" (before it: {window['errors_before'] or 'none'});"
        f" slowest request in flight meanwhile: {window['slowest_during'] * 1000:.0f} ms"
    )
    if "first_error" in window:
        print(
            f"  first 5xx at +{window['first_error']:.2f} s, last at"
            f" +{window['last_error']:.2f} s; Retry-After: {window['retry_after']}"
        )
    if "seconds" in window:
        print(
            f"  first 200 sent after it at +{window['first_200_after']:.2f} s:"
            f" restart window {window['seconds']:.2f} s"
        )


def print_servers(results: Sequence[Result], limited: Sequence[Result]) -> None:
    """Print the statuses of each app server, in the soak and for the client over the rate limit."""
    for index in sorted({r.server for r in results}):
        soaked = histogram(r for r in results if r.server == index)
        over = histogram(r for r in limited if r.server == index)
        print(
            f"  server {index + 1}: soak {', '.join(f'{s}: {n}' for s, n in soaked.items())};"
            f" client over the limit {', '.join(f'{s}: {n}' for s, n in over.items())}"
        )


def print_checks(checks: Sequence[Check]) -> None:
    print("\nInvariants" + " " * 70 + "checked  violations")
    for check in checks:
        violations = check.violations if check.enforced else f"({check.violations})"
        print(f"  {check.label:<78}{check.checked:>7}{violations:>12}")


def environment_line(options: Options, pg: dict[str, str]) -> str:
    import django

    return (
        f"Python {platform.python_version()}, Django {django.get_version()},"
        f" PostgreSQL {pg['server_version'].split()[0]} on 127.0.0.1"
        f" (fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}),"
        + (
            " prepared statements (server_side_binding),"
            if options.prepared
            else " client-side binding (Django's default),"
        )
        + f" {os.cpu_count()} CPUs shared by client, server and database;"
        f" {options.workers} workers, {options.concurrency} requests in flight."
        + (
            f" {options.app_servers} app servers, through PgBouncer (transaction pooling), with Redis."
            if options.app_servers > 1
            else ""
        )
    )


def shown(path: Path) -> Path:
    """Return ``path`` relative to the checkout if it's inside."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=to_json) + "\n")


def to_json(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = dataclasses.asdict(value)
        if isinstance(value, Phase):
            data["rps"] = value.rps
        return data
    raise TypeError(f"cannot serialize {type(value).__name__}")


def print_throughputs(reports: dict[str, Any]) -> None:
    """Print the valid links' throughput of each server side by side: stored against stateless."""
    print("\nValid links by server (req/s of the measured phase; stored / stateless)")
    print(f"  {'':<28}{'stateless':>10}{'stored':>8}{'ratio':>8}{'soak':>8}")
    for report in reports.values():
        measured = report["measured"]
        stateless = measured["stateless"]["phase"].rps
        stored = measured["stored"]["phase"].rps
        soak = report["soak"]["phase"].rps
        ratio = f"{stored / stateless:.2f}x" if stateless else "-"
        print(
            f"  {report['server']:<28}{stateless:>10.0f}{stored:>8.0f}{ratio:>8}{soak:>8.0f}"
        )


# The run.


def run_server(
    kind: str,
    options: Options,
    cluster: Cluster,
    pg_port: int,
    counter: Iterator[int],
    shared: Shared | None = None,
) -> tuple[dict[str, Any], list[Result], Timeline, dict[str, Measured]]:
    """Issue links, start the server ``kind``, run every phase on it and stop it."""
    rng = random.Random(options.seed)
    links = make_links(f"load-{kind}", options.links)
    environment = site_environment(pg_port, kind, options.prepared)
    if shared is not None:
        environment.update(shared.environment())
    servers = [
        Server(
            kind,
            options.workers,
            environment,
            ARTIFACTS / (f"load-{kind}-{i + 1}.log" if shared else f"load-{kind}.log"),
        )
        for i in range(options.app_servers if shared else 1)
    ]
    server = servers[0]
    client = Client(server, counter, servers[1:])
    if shared is None:
        print(
            f"\n== {server.version()}: {options.workers} workers, log in {shown(server.log)}"
        )
    else:
        print(
            f"\n== {server.version()}: {len(servers)} servers of {options.workers} workers each,"
            f" through PgBouncer {shown(Path(shared.bouncer.base))} and Redis on port {shared.redis.port};"
            f" logs in {', '.join(str(shown(s.log)) for s in servers)}"
        )
    for each in servers[1:]:
        each.start()
    server.start()
    limited: list[Result] = []
    try:
        prepared, elapsed = timed(
            lambda: prepare(client, links, options.concurrency, rng)
        )
        print_phases(
            "Prepare: use up links before the soak",
            {EXHAUSTED: summarize(prepared, elapsed)},
        )
        measured = measure(client, links, options, pg_port, rng)
        valid = {"stateless": measured[STATELESS], "stored": measured[UNLIMITED]}
        print_phases(
            "Valid links, in alternating halves (stateless, stored, stored, stateless)",
            dict(valid),
        )
        forged_phases = forged(client, links, options, pg_port, rng)
        print_phases("Forged links, alone on the server", dict(forged_phases))
        print_statements({**valid, **forged_phases})
        results, timeline = soak(client, links, options, cluster, rng)
        if shared is not None:
            limited, elapsed_limited = timed(
                lambda: rate_limit(client, links, options, rng)
            )
            print_phases(
                f"One client over the rate limit ({RATE_LIMIT[0]} failures), across servers",
                {RATE_LIMITED: summarize(limited, elapsed_limited)},
            )
    finally:
        for each in servers:
            each.stop()
    soak_phase = summarize(results, timeline.end - timeline.start)
    window = restart_window(results, timeline)
    print(
        f"\nRevoked {timeline.revoked} links at +{(timeline.revoke_committed or timeline.start) - timeline.start:.1f} s of the soak"
    )
    print_soak(soak_phase, results, window)
    if shared is not None:
        print_servers(results, limited)
    report = {
        "server": server.version(),
        "prepare": summarize(prepared, elapsed),
        "measured": {
            kind: {
                "phase": item.phase,
                "statements": item.total,
                "statements_per_request": item.per_request,
                "by_statement": item.statements,
            }
            for kind, item in {**valid, **forged_phases}.items()
        },
        "soak": {
            "phase": soak_phase,
            "by_kind": {
                kind: histogram(r for r in results if r.kind == kind)
                for kind in SOAK_MIX
            },
            "revoked": timeline.revoked,
            "revoked_at": (timeline.revoke_committed or timeline.start)
            - timeline.start,
            "restart": window,
        },
    }
    if shared is not None:
        report["app_servers"] = {
            "servers": len(servers),
            "soak_by_server": {
                str(i + 1): histogram(r for r in results if r.server == i)
                for i in range(len(servers))
            },
            "rate_limit": {
                "failures": RATE_LIMIT[0],
                "requests": len(limited),
                "by_server": {
                    str(i + 1): histogram(r for r in limited if r.server == i)
                    for i in range(len(servers))
                },
            },
        }
    return report, client.results, timeline, forged_phases


def check_all(
    results: Sequence[Result],
    timelines: Sequence[Timeline],
    forged_phases: Sequence[dict[str, Measured]],
    app_servers: int = 1,
) -> list[Check]:
    """Check every invariant against the database and the responses."""
    audit = read_audit()
    return [
        *check_records(audit),
        *check_requests(results, audit),
        check_forged(forged_phases),
        *check_revocations(results, timelines, audit),
        *check_recovery(results, timelines),
        *(
            check_app_servers(results, timelines, app_servers)
            if app_servers > 1
            else []
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    cluster, pg_port = start_postgresql(options.durable)
    pg = server_settings(pg_port)
    shared = start_shared(cluster, pg_port) if options.app_servers > 1 else None
    try:
        setup_django(site_environment(pg_port, prepared=options.prepared))
        print(
            "sesame_db load test"
            + (" (--quick)" if options.quick else "")
            + ": the demo site on PostgreSQL, one HTTP/1.1 connection per request."
            "\nFigures move by up to 50% between runs: compare those of one run."
        )
        print(environment_line(options, pg))
        counter = itertools.count(1)
        reports: dict[str, Any] = {}
        results: list[Result] = []
        timelines: list[Timeline] = []
        forged_phases: list[dict[str, Measured]] = []
        for kind in options.servers:
            report, server_results, timeline, forged_phase = run_server(
                kind, options, cluster, pg_port, counter, shared
            )
            reports[kind] = report
            results += server_results
            timelines.append(timeline)
            forged_phases.append(forged_phase)
        checks = check_all(results, timelines, forged_phases, options.app_servers)
    finally:
        with contextlib.suppress(OSError):
            shutil.copy(cluster.log, ARTIFACTS / "load-postgresql.log")
    print_throughputs(reports)
    print(f"\nAll requests: {len(results)}; statuses: {histogram(results)}")
    print_checks(checks)
    violations = sum(check.violations for check in checks if check.enforced)
    write_json(
        options.json_path,
        {
            "options": {
                **dataclasses.asdict(options),
                "json_path": str(options.json_path),
            },
            "environment": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "postgresql": pg,
            },
            "servers": reports,
            "statuses": histogram(results),
            "invariants": checks,
            "violations": violations,
            "seconds": time.monotonic() - started,
        },
    )
    outcome = (
        f"FAILED: {violations} violations" if violations else "All invariants hold"
    )
    print(
        f"\n{outcome}; figures in {shown(options.json_path)};"
        f" total time {time.monotonic() - started:.0f} s"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

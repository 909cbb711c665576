"""
Start a throwaway PostgreSQL cluster for the test suite.

tests/settings.py calls :func:`database_settings` when SESAME_TEST_DB is
"postgresql". The cluster lives in a temporary directory, listens on a Unix
socket in that directory only (no TCP port), trusts local connections, and
is stopped and deleted when the test process exits. When tests run as root,
the server runs as the ``postgres`` user, which PostgreSQL requires.

Set SESAME_TEST_PGHOST (and PGUSER, PGPASSWORD, PGPORT as usual) to use an
existing server instead.

"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import os
import pwd
import shutil
import subprocess
import tempfile


class Unavailable(Exception):
    """PostgreSQL can't be started here; the message says why."""


def find_bindir() -> str:
    for candidate in [
        os.environ.get("SESAME_TEST_PGBIN", ""),
        *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True),
    ]:
        if candidate and os.path.exists(os.path.join(candidate, "pg_ctl")):
            return candidate
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return os.path.dirname(os.path.realpath(pg_ctl))
    raise Unavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package"
    )


def _run(args: list[str], user: str | None) -> None:
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise Unavailable(
            f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )


@dataclasses.dataclass
class Cluster:
    """A PostgreSQL cluster in a temporary directory, run by ``user`` (or the current user)."""

    bindir: str
    base: str
    user: str | None

    @property
    def data(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def log(self) -> str:
        return os.path.join(self.base, "log")

    @property
    def socket_dir(self) -> str:
        return self.base

    def pg_ctl(self, *args: str) -> None:
        _run(
            [
                os.path.join(self.bindir, "pg_ctl"),
                "-D",
                self.data,
                "-l",
                self.log,
                *args,
            ],
            self.user,
        )

    def restart(self, mode: str = "fast") -> None:
        """Restart the server: ``fast`` aborts open transactions and closes every connection."""
        # pg_ctl restart reuses the options of the last start (postmaster.opts).
        self.pg_ctl("-m", mode, "-w", "restart")

    def destroy(self) -> None:
        subprocess.run(
            (["runuser", "-u", self.user, "--"] if self.user else [])
            + [
                os.path.join(self.bindir, "pg_ctl"),
                "-D",
                self.data,
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "running as root but there's no postgres user to run the server"
        ) from None
    return "postgres"


def start_cluster(
    *, port: int | None = None, settings: dict[str, str] | None = None
) -> Cluster:
    """
    Start a cluster and return it; it's destroyed when the process exits.

    It listens on a Unix socket in its directory and, if ``port`` is set, on
    127.0.0.1:``port`` too. ``settings`` are more server settings
    (``-c name=value``), for example ``shared_preload_libraries``.

    """
    bindir = find_bindir()
    user = _server_user()
    base = tempfile.mkdtemp(prefix="sesame_db_pg_")
    if user is not None:
        shutil.chown(base, user=user)
    cluster = Cluster(bindir, base, user)
    _run(
        [
            os.path.join(bindir, "initdb"),
            "-D",
            cluster.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user,
    )
    options = {
        "listen_addresses": "127.0.0.1" if port is not None else "",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
        # Autovacuum can truncate a table's empty pages between a test's
        # ANALYZE and its reading of the planner's row estimate.
        "autovacuum": "off",
        **({"port": str(port)} if port is not None else {}),
        **(settings or {}),
    }
    arguments = " ".join(f"-c {name}='{value}'" for name, value in options.items())
    atexit.register(cluster.destroy)
    cluster.pg_ctl("-o", f"-k {base} {arguments}", "-w", "start")
    return cluster


def current_cluster() -> Cluster | None:
    """
    Return the throwaway cluster that this test run started, or :obj:`None` for a given server.

    Subprocesses of the tests find their parent's through SESAME_TEST_PGSOCKET.

    """
    socket_dir = os.environ.get("SESAME_TEST_PGSOCKET")
    if not socket_dir or os.environ.get("SESAME_TEST_PGHOST"):
        return None
    return Cluster(find_bindir(), socket_dir, _server_user())


def database_settings() -> dict[str, object]:
    """Return settings for the "default" database on a throwaway (or given) PostgreSQL server."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable(
            "psycopg isn't installed: pip install 'psycopg[binary]'"
        ) from None
    host = os.environ.get("SESAME_TEST_PGHOST")
    if host:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": host,
            "PORT": os.environ.get("PGPORT", ""),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "NAME": os.environ.get("PGDATABASE", "postgres"),
        }
    # Start the cluster once per process tree: pytest-xdist workers or
    # subprocesses of the tests reuse the parent's.
    socket_dir = os.environ.get("SESAME_TEST_PGSOCKET")
    if not socket_dir:
        socket_dir = start_cluster().socket_dir
        os.environ["SESAME_TEST_PGSOCKET"] = socket_dir
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": socket_dir,
        "USER": "postgres",
        "NAME": "postgres",
    }

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


def start_cluster() -> str:
    """Start a cluster and return the directory of its socket."""
    bindir = find_bindir()
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable(
                "running as root but there's no postgres user to run the server"
            ) from None
        user = "postgres"
    base = tempfile.mkdtemp(prefix="sesame_db_pg_")
    if user is not None:
        shutil.chown(base, user=user)
    data = os.path.join(base, "data")
    _run(
        [
            os.path.join(bindir, "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user,
    )
    options = f"-k {base} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    _run(
        [
            os.path.join(bindir, "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(base, "log"),
            "-w",
            "start",
        ],
        user,
    )

    def stop() -> None:
        subprocess.run(
            (["runuser", "-u", user, "--"] if user else [])
            + [
                os.path.join(bindir, "pg_ctl"),
                "-D",
                data,
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    return base


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
        socket_dir = start_cluster()
        os.environ["SESAME_TEST_PGSOCKET"] = socket_dir
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": socket_dir,
        "USER": "postgres",
        "NAME": "postgres",
    }

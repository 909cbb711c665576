"""
Start a throwaway PostgreSQL primary and a streaming hot-standby replica of it.

The primary is a cluster of tests/postgres.py started with
``wal_level=replica``; the replica is a copy taken with ``pg_basebackup -R``,
which streams the primary's changes from then on. Both listen on Unix
sockets in their own temporary directories and are destroyed when the test
process exits. :meth:`Pair.pause` freezes what the replica shows, as a
replica that lags; :meth:`Pair.resume` lets it catch up.

"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import time

from .postgres import Cluster, Unavailable, _run, _server_user, start_cluster

__all__ = ["Pair", "Unavailable", "start_pair"]


@dataclasses.dataclass
class Pair:
    primary: Cluster
    replica: Cluster

    def settings(self, cluster: Cluster) -> dict[str, object]:
        """Return the database settings for ``cluster``."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": cluster.socket_dir,
            "USER": "postgres",
            "NAME": "postgres",
        }

    def _query(self, connection_alias: str, sql: str) -> object:
        from django.db import connections

        with connections[connection_alias].cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
        return None if row is None else row[0]

    def pause(self, replica_alias: str) -> None:
        """Stop replaying the primary's changes on the replica."""
        self._query(replica_alias, "SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 10
        while (
            self._query(replica_alias, "SELECT pg_get_wal_replay_pause_state()")
            != "paused"
        ):
            if time.monotonic() > deadline:  # pragma: no cover
                raise AssertionError("the replica didn't pause")
            time.sleep(0.01)

    def resume(self, replica_alias: str) -> None:
        """Replay the primary's changes on the replica again."""
        self._query(replica_alias, "SELECT pg_wal_replay_resume()")

    def catch_up(self, primary_alias: str, replica_alias: str) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        lsn = self._query(primary_alias, "SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.monotonic() + 30
        while not self._query(
            replica_alias,
            f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn",
        ):
            if time.monotonic() > deadline:  # pragma: no cover
                raise AssertionError("the replica didn't catch up within 30 s")
            time.sleep(0.01)


def start_pair() -> Pair:
    """Start a primary and a replica of it; they're destroyed when the process exits."""
    # With asynchronous commits, a committed change may not be written to
    # the WAL yet, which catch_up() would miss.
    primary = start_cluster(
        settings={
            "wal_level": "replica",
            "max_wal_senders": "4",
            "synchronous_commit": "on",
        }
    )
    user = _server_user()
    base = tempfile.mkdtemp(prefix="sesame_db_replica_")
    if user is not None:
        shutil.chown(base, user=user)
    replica = Cluster(primary.bindir, base, user)
    atexit.register(replica.destroy)
    _run(
        [
            os.path.join(primary.bindir, "pg_basebackup"),
            "-h",
            primary.socket_dir,
            "-U",
            "postgres",
            "-D",
            replica.data,
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ],
        user,
    )
    replica.pg_ctl(
        "-o",
        f"-k {base} -c listen_addresses='' -c hot_standby=on",
        "-w",
        "start",
    )
    return Pair(primary, replica)


def add_database(alias: str, settings_dict: dict[str, object]) -> None:
    """Make ``alias`` a database of ``django.db.connections``, outside settings.DATABASES, until :func:`remove_database`."""
    from django.db import connections

    configured = connections.configure_settings(
        {"default": {}, alias: dict(settings_dict)}
    )
    connections.settings[alias] = configured[alias]


def remove_database(alias: str) -> None:
    from django.db import connections

    local = connections._connections  # type: ignore[attr-defined]
    if hasattr(local, alias):
        getattr(local, alias).close()
        delattr(local, alias)
    connections.settings.pop(alias, None)

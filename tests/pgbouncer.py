"""
Start a throwaway PgBouncer in transaction pooling mode, in front of a throwaway PostgreSQL.

The cluster comes from tests/postgres.py and listens on 127.0.0.1 on a free
port; PgBouncer listens on another, trusts every local client, and pools
server connections per transaction (``pool_mode = transaction``), as large
sites run it. Both are stopped, by pid, when the test process exits. When
tests run as root, PgBouncer runs as the ``postgres`` user, like the server.

"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .postgres import Cluster, Unavailable, _server_user, start_cluster
from .redis import free_port

__all__ = ["Bouncer", "Unavailable", "start_bouncer"]

POOL_SIZE = 20


@dataclasses.dataclass
class Bouncer:
    cluster: Cluster
    cluster_port: int
    base: str
    port: int

    def settings(self) -> dict[str, object]:
        """Return the database settings for a connection through PgBouncer."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "USER": "postgres",
            "NAME": "postgres",
            # Transaction pooling: a cursor can't outlive its transaction.
            "DISABLE_SERVER_SIDE_CURSORS": True,
        }

    def direct_settings(self) -> dict[str, object]:
        """Return the database settings for a direct connection to the server."""
        return {**self.settings(), "PORT": str(self.cluster_port)}

    def stop(self) -> None:
        pidfile = os.path.join(self.base, "pgbouncer.pid")
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile) as file:
                pid = int(file.read().strip())
            os.kill(pid, signal.SIGTERM)  # ProcessLookupError is an OSError
        shutil.rmtree(self.base, ignore_errors=True)


def start_bouncer() -> Bouncer:
    """Start PostgreSQL and PgBouncer in front of it; both stop when the process exits."""
    cluster_port = free_port()
    cluster = start_cluster(port=cluster_port, settings={"max_connections": "60"})
    return start_pooler(cluster, cluster_port)


def start_pooler(cluster: Cluster, cluster_port: int) -> Bouncer:
    """Start PgBouncer in front of ``cluster``, which listens on 127.0.0.1:``cluster_port``; it stops when the process exits."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if binary is None:
        raise Unavailable("pgbouncer not found: install Debian's pgbouncer package")
    user = _server_user()
    base = tempfile.mkdtemp(prefix="sesame_db_pgbouncer_")
    bouncer = Bouncer(cluster, cluster_port, base, free_port())
    with open(os.path.join(base, "users.txt"), "w") as file:
        file.write('"postgres" ""\n')
    config = os.path.join(base, "pgbouncer.ini")
    with open(config, "w") as file:
        file.write(
            f"""[databases]
* = host=127.0.0.1 port={cluster_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {bouncer.port}
unix_socket_dir = {base}
auth_type = trust
auth_file = {base}/users.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = {POOL_SIZE}
; After a failed connection to the server, such as during its restart, try
; again after 1 s rather than 15.
server_login_retry = 1
pidfile = {base}/pgbouncer.pid
logfile = {base}/pgbouncer.log
"""
        )
    if user is not None:
        for path in [base, *(os.path.join(base, name) for name in os.listdir(base))]:
            shutil.chown(path, user=user)
    args = [binary, "-d", config]
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise Unavailable(f"pgbouncer failed: {result.stderr.strip()}")
    atexit.register(bouncer.stop)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise Unavailable("pgbouncer didn't listen within 10 seconds") from None
            time.sleep(0.02)
    return bouncer

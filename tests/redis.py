"""
Start a throwaway Redis server for the tests of the shared cache.

Like tests/postgres.py for PostgreSQL: the server runs from a temporary
directory, listens on 127.0.0.1 on a free port, keeps nothing on disk, and is
stopped (by its pid) when the test process exits. Tests that need it call
:func:`start_server` and skip, with the reason, when :exc:`Unavailable` is
raised, except in CI, where every test must run.

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


class Unavailable(Exception):
    """Redis can't be started here; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Server:
    """A redis-server process listening on 127.0.0.1:``port``."""

    binary: str
    base: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server, on the same port if it ran before, and wait until it answers."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.base,
                "--logfile",
                os.path.join(self.base, "log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(
                    f"redis-server exited with status {self.process.returncode}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.kill()
        raise Unavailable("redis-server didn't answer within 10 seconds")

    def kill(self) -> None:
        """Kill the server at once, as a crash would, and wait until it's gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def find_binary() -> str:
    binary = os.environ.get("SESAME_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise Unavailable(
            "redis-server not found: install Debian's redis-server package"
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        raise Unavailable("redis isn't installed: pip install redis") from None
    return binary


def start_server() -> Server:
    """Start a server and return it; it's killed when the process exits."""
    server = Server(
        find_binary(), tempfile.mkdtemp(prefix="sesame_db_redis_"), free_port()
    )
    atexit.register(server.destroy)
    server.start()
    return server


def cache_settings(server: Server) -> dict[str, object]:
    """Return the settings of a RedisCache on ``server`` that gives up quickly when it's down."""
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": server.url,
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }

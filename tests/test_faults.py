"""
Real database faults during redemptions, on PostgreSQL.

Requests go over HTTP to Django's WSGI handler, served by a small server
whose worker threads keep their database connections between requests
(:setting:`CONN_MAX_AGE`), as gunicorn's threaded workers do. So Django's own
recovery is what's tested: nothing restarts the server after a fault.

The faults are real: PostgreSQL terminates the connection in the middle of
the use-count update, a statement times out behind a row lock, the server
restarts under concurrent requests. tests/test_unavailable.py checks every
entry point against simulated driver errors, on every database;
benchmarks/load.py repeats the restart under load with gunicorn.

"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections, transaction
from django.test import TransactionTestCase, override_settings

from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_token, issue_token

from .mixins import CreateUserMixin
from .postgres import current_cluster

pytestmark = pytest.mark.postgresql


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class PooledWSGIServer(WSGIServer):
    """A WSGI server whose requests run on a fixed pool of threads, which keep their connections."""

    def __init__(self, workers):
        super().__init__(("127.0.0.1", 0), QuietHandler)
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="wsgi")
        self.set_app(WSGIHandler())

    def process_request(self, request, client_address):
        self.pool.submit(self._process, request, client_address)

    def _process(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def close_connections(self):
        # One task per thread, held at a barrier until each thread has one,
        # so that every thread closes its own connections.
        barrier = threading.Barrier(self.workers)

        def close():
            connections.close_all()
            barrier.wait(timeout=10)

        for future in [self.pool.submit(close) for _ in range(self.workers)]:
            future.result(timeout=10)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}"


@dataclasses.dataclass
class Result:
    link: str
    agent: str
    started: float
    status: int
    body: bytes


class FaultTestCase(CreateUserMixin, TransactionTestCase):
    """Serve the test site with persistent connections; request it like a browser would."""

    workers = 1
    health_checks = False
    agents = itertools.count()

    def setUp(self):
        super().setUp()
        if connection.vendor != "postgresql":  # pragma: no cover - deselected
            self.skipTest("needs PostgreSQL")
        self.settings_dict(
            {"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": self.health_checks}
        )
        self.server = PooledWSGIServer(self.workers)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(self.stop_server, thread)

    def stop_server(self, thread):
        self.server.shutdown()
        thread.join()
        self.server.close_connections()
        self.server.pool.shutdown()
        self.server.server_close()

    def settings_dict(self, changes):
        """Change the settings of the default database for connections opened from now on."""
        settings_dict = connection.settings_dict
        saved = {key: settings_dict.get(key) for key in changes}
        settings_dict.update(changes)
        self.addCleanup(settings_dict.update, saved)

    def get(self, path, token, link=""):
        agent = f"faults/{next(self.agents)}"
        request = urllib.request.Request(
            f"{self.server.url}{path}?sesame={token}", headers={"User-Agent": agent}
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return Result(link or token, agent, started, status, body)

    def assertUsableOnce(self, token, record):
        """Check that the one-time link ``token`` wasn't used by the fault: it works once, and once only."""
        self.assertEqual(self.get("/report/1/", token).status, 200)
        self.assertEqual(self.get("/report/1/", token).status, 403)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(self.events(record), [("used", ""), ("rejected", "used_up")])

    def events(self, record):
        return list(
            TokenEvent.objects.filter(token=record)
            .exclude(kind="issued")
            .order_by("pk")
            .values_list("kind", "reason")
        )


@override_settings(ROOT_URLCONF="tests.store_urls")
class KilledConnectionTests(FaultTestCase):
    def test_connection_killed_between_lookup_and_update(self):
        token, record = issue_token(self.user, "report:1", max_uses=1)
        # The first UPDATE of this link's row terminates its own connection:
        # the SELECT has read the row, the UPDATE never completes. A sequence
        # counts the kills, because it isn't rolled back with the update.
        with connection.cursor() as cursor:
            cursor.execute("CREATE SEQUENCE faults_kills")
            cursor.execute(
                """
                CREATE FUNCTION faults_kill() RETURNS trigger AS $$
                BEGIN
                    IF nextval('faults_kills') = 1 THEN
                        PERFORM pg_terminate_backend(pg_backend_pid());
                    END IF;
                    RETURN NEW;
                END
                $$ LANGUAGE plpgsql
                """
            )
            cursor.execute(
                "CREATE TRIGGER faults_kill BEFORE UPDATE ON sesame_db_issuedtoken "
                f"FOR EACH ROW WHEN (OLD.id = {int(record.pk)}) EXECUTE FUNCTION faults_kill()"
            )
        self.addCleanup(self.drop_trigger)

        with self.assertLogs("sesame_db", "ERROR") as logs:
            result = self.get("/report/1/", token)
        self.assertEqual(result.status, 503, result.body)
        self.assertIn("terminating connection", "\n".join(logs.output))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertEqual(self.events(record), [])

        # The same server, its connection replaced by Django at the end of
        # the failed request: the link works once, and once only.
        self.assertUsableOnce(token, record)
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_value FROM faults_kills")
            self.assertEqual(cursor.fetchone()[0], 2)

    def drop_trigger(self):
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS faults_kill ON sesame_db_issuedtoken"
            )
            cursor.execute("DROP FUNCTION IF EXISTS faults_kill()")
            cursor.execute("DROP SEQUENCE IF EXISTS faults_kills")


@override_settings(ROOT_URLCONF="tests.store_urls")
class StatementTimeoutTests(FaultTestCase):
    def test_statement_timeout_behind_a_lock(self):
        options = connection.settings_dict.get("OPTIONS", {})
        self.settings_dict(
            {"OPTIONS": {**options, "options": "-c statement_timeout=1500"}}
        )
        token, record = issue_token(self.user, "report:1", max_uses=1)
        # Another transaction holds the row: the SELECT reads it, the UPDATE
        # waits until the statement times out. The timeout applies to every
        # statement of the server: leave slow machines some room.
        with self.assertLogs("sesame_db", "ERROR") as logs, transaction.atomic():
            IssuedToken.objects.select_for_update().get(pk=record.pk)
            result = self.get("/report/1/", token)
        self.assertEqual(result.status, 503, result.body)
        self.assertIn("statement timeout", "\n".join(logs.output))
        self.assertEqual(
            result.body,
            b"The link can't be checked right now. Try again in a moment.\n",
        )
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertEqual(self.events(record), [])
        # Once the lock is released, the link works once, and once only.
        self.assertUsableOnce(token, record)


class LoadTestCase(FaultTestCase):
    """Several clients request links concurrently until told to stop."""

    workers = 4
    clients = 6
    health_checks = True

    @contextlib.contextmanager
    def load(self, links):
        """Request ``links`` (token, link name) round-robin from several threads; yield the results."""
        results: list[Result] = []
        stop = threading.Event()
        turn = itertools.count()

        def client():
            while not stop.is_set():
                token, link = links[next(turn) % len(links)]
                try:
                    results.append(self.get("/report/1/", token, link))
                except OSError as exc:  # pragma: no cover - reported below
                    results.append(
                        Result(link, "", time.monotonic(), 0, repr(exc).encode())
                    )

        threads = [threading.Thread(target=client) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            yield results
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def check_uses(self, results, records):
        """Check the database against the responses: no link over-used, no use counted twice or lost."""
        by_link = collections.defaultdict(list)
        for result in results:
            by_link[result.link].append(result)
        for record in IssuedToken.objects.filter(pk__in=[r.pk for r in records]):
            used = list(
                TokenEvent.objects.filter(token=record, kind="used").values_list(
                    "user_agent", flat=True
                )
            )
            self.assertEqual(record.use_count, len(used), record)
            if record.max_uses is not None:
                self.assertLessEqual(record.use_count, record.max_uses, record)
            # Every 200 has exactly one "used" event, and every 403 none.
            agents = collections.Counter(used)
            for result in by_link[str(record.pk)]:
                expected = {200: 1, 403: 0}.get(result.status)
                if expected is not None:
                    self.assertEqual(agents[result.agent], expected, result)
            self.assertTrue(all(count == 1 for count in agents.values()), agents)


@override_settings(ROOT_URLCONF="tests.store_urls")
class RestartTests(LoadTestCase):
    def test_server_restart_under_load(self):
        cluster = current_cluster()
        if cluster is None:
            self.skipTest(
                "SESAME_TEST_PGHOST names a server that the tests didn't start and can't restart"
            )
        issued = [
            issue_token(self.user, "report:1", max_uses=uses)
            for uses in [1, 2, 3, 5, 8, None] * 4
        ]
        records = [record for _, record in issued]
        tokens = [(token, str(record.pk)) for token, record in issued]
        tokens.append((get_token(self.user, "report:1"), "stateless"))

        with self.assertLogs("sesame_db", "ERROR"), self.load(tokens) as results:
            time.sleep(0.5)
            cluster.restart()
            restarted = time.monotonic()
            # This thread's connection died too.
            connections.close_all()
            time.sleep(1.0)

        statuses = collections.Counter(result.status for result in results)
        self.assertEqual(set(statuses) - {200, 403, 503}, set(), statuses)
        self.assertGreater(statuses[503], 0, "no request hit the restart")
        after = [r for r in results if r.started > restarted + 0.1]
        self.assertGreater(len(after), 10, statuses)
        # Recovered, without restarting the web server.
        self.assertEqual([r for r in after if r.status == 503], [])
        self.assertIn(200, {r.status for r in after if r.link == "stateless"})
        self.check_uses(results, records)


@override_settings(ROOT_URLCONF="tests.store_urls")
class RevocationTests(LoadTestCase):
    def test_revocation_during_redemptions(self):
        token, record = issue_token(self.user, "report:1")
        with self.load([(token, str(record.pk))]) as results:
            time.sleep(0.5)
            with transaction.atomic():
                record.revoke(reason="leaked")
                # Redemptions that read the row before the revocation now
                # wait for its lock in their UPDATE.
                time.sleep(0.2)
            committed = time.monotonic()
            time.sleep(0.5)

        before = [r for r in results if r.started < committed]
        after = [r for r in results if r.started > committed]
        self.assertIn(200, {r.status for r in before})
        # Some redemptions read the row before the commit and waited for the
        # lock in their UPDATE: the revocation stopped them too.
        self.assertIn(403, {r.status for r in before})
        self.assertGreater(len(after), 10)
        self.assertEqual({r.status for r in after}, {403})
        self.check_uses(results, [record])
        # Redemptions that read the row before the revocation, then waited
        # for its lock, saw it: every use was recorded before the revocation.
        revoked = TokenEvent.objects.get(token=record, kind="revoked")
        used = TokenEvent.objects.filter(token=record, kind="used")
        self.assertFalse(used.filter(pk__gt=revoked.pk).exists())
        # Repeated rejections from one client are recorded once per window
        # (docs/store.rst, "Repeated rejections"): the first one is.
        rejected = TokenEvent.objects.filter(token=record, kind="rejected")
        self.assertEqual(list(rejected.values_list("reason", flat=True)), ["revoked"])

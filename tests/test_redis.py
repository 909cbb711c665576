"""
Rate limiting on a real Redis server shared by several processes (docs/scale.rst).

The server is started by tests/redis.py; without redis-server, these tests
skip with the reason, except in CI.
"""

from __future__ import annotations

import logging
import multiprocessing
import time

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connections
from django.test import (
    RequestFactory,
    TestCase,
    TransactionTestCase,
    override_settings,
)

from sesame_db import ratelimit
from sesame_db.models import TokenEvent
from sesame_db.utils import get_token, get_user, issue_token

from .mixins import CreateUserMixin
from .redis import Server, Unavailable, cache_settings, start_server

LIMIT = {"failures": 20, "period": 60}
PROCESSES = 6
ATTEMPTS = 15  # per process: 90 attempts in all, for a limit of 20


def _server():
    try:
        return start_server()
    except Unavailable as exc:
        pytest.skip(str(exc))


def _fire(barrier, results, attempts):
    # In a forked process: the settings of the test are those of the parent,
    # and redis-py opens its own connections after the fork.
    factory = RequestFactory()
    barrier.wait()
    checked = limited = 0
    for _ in range(attempts):
        request = factory.get("/", REMOTE_ADDR="192.0.2.1")
        assert get_user(request, token="not a token") is None
        if ratelimit.is_rate_limited(request):
            limited += 1
        else:
            checked += 1
    results.put((checked, limited))


class RedisMixin(CreateUserMixin):
    server: Server

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = _server()
        cls.enterClassContext(
            override_settings(
                CACHES={"default": cache_settings(cls.server)},
                SESAME_RATE_LIMIT=LIMIT,
            )
        )

    def setUp(self):
        super().setUp()
        if self.server.process is None:
            self.server.start()
        caches["default"].clear()
        ratelimit._reset_fallback(setting="CACHES")
        self.addCleanup(ratelimit._reset_fallback, setting="CACHES")
        self.factory = RequestFactory()

    def request(self, ip="192.0.2.1"):
        return self.factory.get("/", REMOTE_ADDR=ip)

    def redis(self):
        cache = caches["default"]
        assert isinstance(cache, RedisCache)
        return cache._cache.get_client(write=True), cache.make_and_validate_key


class RedisTestCase(RedisMixin, TestCase):
    pass


class ProcessesTests(RedisMixin, TransactionTestCase):
    # Not in a transaction: the parent closes its database connections
    # before forking, so that no child shares them.

    def test_no_more_than_the_limit_across_processes(self):
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(PROCESSES)
        results = context.Queue()
        # The children must not share the parent's database connections.
        connections.close_all()
        processes = [
            context.Process(target=_fire, args=(barrier, results, ATTEMPTS))
            for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            self.assertEqual(process.exitcode, 0)
        checked = sum(checked for checked, _ in outcomes)
        limited = sum(limited for _, limited in outcomes)
        self.assertEqual(checked, LIMIT["failures"])
        self.assertEqual(limited, PROCESSES * ATTEMPTS - LIMIT["failures"])
        # The window is in Redis, with its expiry, and every refused attempt
        # gave its count back.
        client, key = self.redis()
        name = key("sesame_db:failures:ip:192.0.2.1")
        self.assertEqual(int(client.get(name)), LIMIT["failures"])
        self.assertTrue(0 < client.pttl(name) <= LIMIT["period"] * 1000)


class SharedCounterTests(RedisTestCase):
    def test_window_has_an_expiry_from_the_first_failure(self):
        self.assertIsNone(get_user(self.request(), token="not a token"))
        client, key = self.redis()
        name = key("sesame_db:failures:ip:192.0.2.1")
        self.assertEqual(int(client.get(name)), 1)
        ttl = client.pttl(name)
        self.assertTrue(LIMIT["period"] * 1000 - 5000 < ttl <= LIMIT["period"] * 1000)
        # Later failures don't move it.
        client.pexpire(name, 30_000)
        self.assertIsNone(get_user(self.request(), token="not a token"))
        self.assertEqual(int(client.get(name)), 2)
        self.assertTrue(0 < client.pttl(name) <= 30_000)

    def test_giving_back_never_starts_a_window(self):
        # A valid use gives its attempt back; if the window ended in
        # between, no key without an expiry is left behind.
        ratelimit._call(lambda cache: ratelimit._release(cache, ["sesame_db:x"]))
        client, key = self.redis()
        self.assertIsNone(client.get(key("sesame_db:x")))

    def test_valid_uses_are_not_counted(self):
        token = get_token(self.user)
        for _ in range(LIMIT["failures"] + 5):
            self.assertEqual(get_user(self.request(), token=token), self.user)
        client, key = self.redis()
        self.assertEqual(int(client.get(key("sesame_db:failures:ip:192.0.2.1"))), 0)


class OutageTests(RedisTestCase):
    def test_redis_down_then_back(self):
        token = get_token(self.user)
        logger = logging.getLogger("sesame_db")
        with self.assertLogs(logger, logging.WARNING) as logs:
            self.server.kill()
            # Valid links keep working.
            self.assertEqual(get_user(self.request(), token=token), self.user)
            # Failures are still limited, by the counter of this process.
            for _ in range(LIMIT["failures"]):
                request = self.request()
                self.assertIsNone(get_user(request, token="not a token"))
                self.assertFalse(ratelimit.is_rate_limited(request))
            request = self.request()
            self.assertIsNone(get_user(request, token="not a token"))
            self.assertTrue(ratelimit.is_rate_limited(request))
            # Past the retry delay, Redis is tried again, and fails again,
            # without another warning; the limited client stays limited.
            time.sleep(ratelimit.FALLBACK_RETRY + 0.1)
            self.assertEqual(
                get_user(self.request("192.0.2.2"), token=token), self.user
            )
            request = self.request()
            self.assertIsNone(get_user(request, token=token))
            self.assertTrue(ratelimit.is_rate_limited(request))
            # Back: counting in Redis again, from its own (empty) count.
            self.server.start()
            time.sleep(ratelimit.FALLBACK_RETRY + 0.1)
            request = self.request()
            self.assertIsNone(get_user(request, token="not a token"))
            self.assertFalse(ratelimit.is_rate_limited(request))
        messages = [record.getMessage() for record in logs.records]
        self.assertEqual(len(messages), 2, messages)
        self.assertIn("Rate limit cache 'default' unreachable", messages[0])
        self.assertEqual(
            messages[1],
            "Rate limit cache 'default' reachable again: counting failures in it",
        )
        client, key = self.redis()
        self.assertEqual(int(client.get(key("sesame_db:failures:ip:192.0.2.1"))), 1)

    def test_views_answer_403_and_429_without_redis(self):
        self.server.kill()
        with self.assertLogs("sesame_db", logging.WARNING):
            for _ in range(LIMIT["failures"]):
                response = self.client.get(
                    "/login/", {"sesame": "not a token"}, REMOTE_ADDR="192.0.2.1"
                )
                self.assertEqual(response.status_code, 403)
            response = self.client.get(
                "/login/", {"sesame": "not a token"}, REMOTE_ADDR="192.0.2.1"
            )
            self.assertEqual(response.status_code, 429)
            response = self.client.get(
                "/login/", {"sesame": get_token(self.user)}, REMOTE_ADDR="192.0.2.2"
            )
            self.assertEqual(response.status_code, 302)

    def test_rejections_of_stored_links_are_audited_without_redis(self):
        token, record = issue_token(self.user)
        record.revoke()
        self.server.kill()
        with self.assertLogs("sesame_db", logging.WARNING):
            for _ in range(3):
                response = self.client.get(
                    "/login/", {"sesame": token}, REMOTE_ADDR="192.0.2.1"
                )
                self.assertEqual(response.status_code, 403)
        # Repeated rejections from one client are still collapsed, by the
        # counters of the process.
        self.assertEqual(
            TokenEvent.objects.filter(
                token=record, kind="rejected", reason="revoked"
            ).count(),
            1,
        )

from __future__ import annotations

import asyncio
import datetime
import threading
from collections import Counter

import time_machine
from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.db import connection
from django.test import (
    RequestFactory,
    TestCase,
    TransactionTestCase,
    override_settings,
)

from sesame_db import ratelimit
from sesame_db.exceptions import DatabaseUnavailable, Reason
from sesame_db.models import TokenEvent
from sesame_db.signals import token_rejected
from sesame_db.utils import aget_user, get_token, get_user, issue_token

from .mixins import (
    AsyncNumQueriesMixin,
    CreateUserMixin,
    FailingDatabaseMixin,
    tamper,
)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "sesame-db-rate-limit-tests",
    },
    "other": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "sesame-db-rate-limit-tests-other",
    },
}
LIMIT = {"failures": 3, "period": 60}
START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


class Rejections:
    """Collect the reasons sent with token_rejected."""

    def __init__(self, test_case):
        self.reasons = []
        token_rejected.connect(self.receive)
        test_case.addCleanup(token_rejected.disconnect, self.receive)

    def receive(self, sender, reason, token_id, **kwargs):
        self.reasons.append((reason, token_id))


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT=LIMIT)
class RateLimitTestCase(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    # A client over the limit is rejected before any query.
    LIMITED_QUERIES = 0
    # A stored link over the limit: 1. INSERT the "rejected" event, the
    # user from a subquery on the token; no SELECT of the token.
    LIMITED_LINK_QUERIES = 1

    def setUp(self):
        super().setUp()
        for alias in CACHES:
            caches[alias].clear()
        self.factory = RequestFactory()

    def request(self, ip="192.0.2.1", **extra):
        return self.factory.get("/", REMOTE_ADDR=ip, **extra)

    def fail_times(self, times, ip="192.0.2.1", token="not a token"):
        for _ in range(times):
            self.assertIsNone(get_user(self.request(ip), token=token))


class ClientLimitTests(RateLimitTestCase):
    def test_failures_below_the_limit(self):
        self.fail_times(2)
        self.assertEqual(
            get_user(self.request(), token=get_token(self.user)), self.user
        )

    def test_limit_reached(self):
        self.fail_times(3)
        rejections = Rejections(self)
        request = self.request()
        with self.assertNumQueries(self.LIMITED_QUERIES):
            self.assertIsNone(get_user(request, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(request))
        self.assertEqual(rejections.reasons, [(Reason.RATE_LIMITED, None)])

    def test_other_clients_are_not_limited(self):
        self.fail_times(3)
        request = self.request("192.0.2.2")
        self.assertEqual(get_user(request, token=get_token(self.user)), self.user)
        self.assertFalse(ratelimit.is_rate_limited(request))

    def test_any_token_gets_the_same_answer(self):
        self.fail_times(3)
        stored, _ = issue_token(self.user)
        for token in [get_token(self.user), stored, tamper(stored), "~", "junk"]:
            with self.subTest(token=token):
                request = self.request()
                self.assertIsNone(get_user(request, token=token))
                self.assertTrue(ratelimit.is_rate_limited(request))

    def test_query_string(self):
        self.fail_times(3)
        request = self.factory.get(
            "/", {"sesame": get_token(self.user)}, REMOTE_ADDR="192.0.2.1"
        )
        self.assertIsNone(get_user(request))
        self.assertTrue(ratelimit.is_rate_limited(request))

    def test_window_ends(self):
        with time_machine.travel(START, tick=False) as traveller:
            self.fail_times(3)
            self.assertIsNone(get_user(self.request(), token=get_token(self.user)))
            traveller.shift(61)
            self.assertEqual(
                get_user(self.request(), token=get_token(self.user)), self.user
            )

    def test_rate_limited_attempts_do_not_extend_the_window(self):
        with time_machine.travel(START, tick=False) as traveller:
            self.fail_times(3)
            traveller.shift(50)
            self.fail_times(10)
            traveller.shift(11)
            self.assertEqual(
                get_user(self.request(), token=get_token(self.user)), self.user
            )

    def test_success_does_not_reset(self):
        self.fail_times(2)
        self.assertEqual(
            get_user(self.request(), token=get_token(self.user)), self.user
        )
        self.fail_times(1)
        self.assertIsNone(get_user(self.request(), token=get_token(self.user)))

    @override_settings(
        SESAME_RATE_LIMIT={"failures": 3, "period": datetime.timedelta(minutes=1)}
    )
    def test_period_timedelta(self):
        with time_machine.travel(START, tick=False) as traveller:
            self.fail_times(3)
            traveller.shift(59)
            self.assertIsNone(get_user(self.request(), token=get_token(self.user)))
            traveller.shift(2)
            self.assertEqual(
                get_user(self.request(), token=get_token(self.user)), self.user
            )
        self.assertEqual(ratelimit.retry_after(), 60)

    def test_ipv6_clients_are_counted_by_64_prefix(self):
        self.fail_times(3, ip="2001:db8::1")
        request = self.request("2001:db8::ffff:1")
        self.assertIsNone(get_user(request, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(request))
        self.assertEqual(
            get_user(self.request("2001:db8:0:1::1"), token=get_token(self.user)),
            self.user,
        )

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_trusted_proxies(self):
        for _ in range(3):
            get_user(
                self.request("10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"),
                token="junk",
            )
        limited = self.request("10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
        self.assertIsNone(get_user(limited, token=get_token(self.user)))
        other = self.request("10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8")
        self.assertEqual(get_user(other, token=get_token(self.user)), self.user)

    def test_requests_without_address_share_a_count(self):
        # A server on a Unix socket leaves REMOTE_ADDR empty; ASGI servers
        # may leave it out.
        for _ in range(3):
            get_user(self.factory.get("/", REMOTE_ADDR=""), token="junk")
        limited = self.factory.get("/", REMOTE_ADDR="")
        self.assertIsNone(get_user(limited, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(limited))
        missing = self.factory.get("/")
        del missing.META["REMOTE_ADDR"]
        self.assertIsNone(get_user(missing, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(missing))
        # Clients with an address are counted apart.
        self.assertEqual(
            get_user(self.request(), token=get_token(self.user)), self.user
        )

    @override_settings(SESAME_TRUSTED_PROXIES=1)
    def test_trusted_hop_that_is_not_an_address(self):
        for _ in range(3):
            request = self.request("10.0.0.1", HTTP_X_FORWARDED_FOR="unknown")
            self.assertIsNone(get_user(request, token="junk"))
        limited = self.request("10.0.0.1", HTTP_X_FORWARDED_FOR="_hidden")
        self.assertIsNone(get_user(limited, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(limited))

    def test_ipv4_mapped_addresses_are_counted_as_ipv4(self):
        # A dual-stack server reports IPv4 clients as ::ffff:a.b.c.d, whose
        # /64 would hold every IPv4 client.
        self.fail_times(3, ip="::ffff:192.0.2.1")
        request = self.request("::ffff:192.0.2.2")
        self.assertEqual(get_user(request, token=get_token(self.user)), self.user)
        limited = self.request("192.0.2.1")
        self.assertIsNone(get_user(limited, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(limited))

    def test_without_request(self):
        for _ in range(5):
            self.assertIsNone(get_user("junk"))
        self.assertEqual(get_user(get_token(self.user)), self.user)

    @override_settings(SESAME_RATE_LIMIT_CACHE="other")
    def test_cache_alias(self):
        self.fail_times(3)
        self.assertEqual(len(caches["other"]._cache), 1)  # type: ignore[attr-defined]
        self.assertEqual(len(caches["default"]._cache), 0)  # type: ignore[attr-defined]

    @override_settings(SESAME_RATE_LIMIT=None)
    def test_off(self):
        self.fail_times(10)
        self.assertEqual(
            get_user(self.request(), token=get_token(self.user)), self.user
        )
        self.assertEqual(len(caches["default"]._cache), 0)  # type: ignore[attr-defined]
        self.assertEqual(ratelimit.retry_after(), 0)

    async def test_async(self):
        for _ in range(3):
            self.assertIsNone(await aget_user(self.request(), token="junk"))
        request = self.request()
        async with self.assertNumQueriesAsync(self.LIMITED_QUERIES):
            self.assertIsNone(await aget_user(request, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(request))
        self.assertEqual(
            await aget_user(self.request("192.0.2.2"), token=get_token(self.user)),
            self.user,
        )


class LinkLimitTests(RateLimitTestCase):
    def test_failures_of_one_link_from_many_clients(self):
        token, record = issue_token(self.user, scope="report:1")
        for i in range(3):
            # Wrong scope: rejected by the token alone, attributed to the link.
            self.assertIsNone(get_user(self.request(f"192.0.2.{i + 10}"), token=token))
        request = self.request("192.0.2.99")
        with self.assertNumQueries(self.LIMITED_LINK_QUERIES):
            self.assertIsNone(get_user(request, "report:1", token=token))
        self.assertTrue(ratelimit.is_rate_limited(request))
        event = TokenEvent.objects.filter(token=record).latest("pk")
        self.assertEqual((event.kind, event.reason), ("rejected", "rate_limited"))
        self.assertEqual(event.user_id, self.user.pk)
        self.assertEqual(event.ip, "192.0.2.99")

    @override_settings(SESAME_AUDIT=False)
    def test_without_audit(self):
        token, _ = issue_token(self.user, scope="report:1")
        for _ in range(3):
            get_user(token)
        with self.assertNumQueries(0):
            self.assertIsNone(get_user(token, "report:1"))

    def test_revoked_link(self):
        token, record = issue_token(self.user)
        record.revoke()
        for _ in range(3):
            self.assertIsNone(get_user(token))
        rejections = Rejections(self)
        with (
            self.captureOnCommitCallbacks(execute=True),
            self.assertNumQueries(self.LIMITED_LINK_QUERIES),
        ):
            self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [(Reason.RATE_LIMITED, record.pk)])

    def test_other_links_are_not_limited(self):
        token, _ = issue_token(self.user, scope="a")
        for _ in range(3):
            get_user(token)
        other, _ = issue_token(self.user)
        self.assertEqual(get_user(other), self.user)

    def test_forgeries_are_not_attributed_to_the_link(self):
        token, _ = issue_token(self.user)
        for i in range(5):
            get_user(self.request(f"192.0.2.{i + 10}"), token=tamper(token))
        self.assertEqual(get_user(self.request(), token=token), self.user)

    def test_client_limit_applies_to_links(self):
        self.fail_times(3)
        token, record = issue_token(self.user)
        with self.assertNumQueries(self.LIMITED_LINK_QUERIES):
            self.assertIsNone(get_user(self.request(), token=token))
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertTrue(
            TokenEvent.objects.filter(token=record, reason="rate_limited").exists()
        )

    async def test_async(self):
        token, record = await issue_token_async(self.user, scope="a")
        for _ in range(3):
            self.assertIsNone(await aget_user(token))
        self.assertIsNone(await aget_user(token, "a"))
        self.assertTrue(
            await TokenEvent.objects.filter(
                token_id=record.pk, reason="rate_limited"
            ).aexists()
        )


async def issue_token_async(user, **kwargs):
    from asgiref.sync import sync_to_async

    return await sync_to_async(issue_token)(user, **kwargs)


class CountingTests(RateLimitTestCase):
    KEY = "sesame_db:failures:ip:192.0.2.1"

    def test_valid_uses_are_not_failures(self):
        for _ in range(10):
            self.assertEqual(
                get_user(self.request(), token=get_token(self.user)), self.user
            )
        token, _ = issue_token(self.user)
        for _ in range(10):
            self.assertEqual(get_user(self.request(), token=token), self.user)
        self.assertEqual(caches["default"].get(self.KEY), 0)
        self.fail_times(3)
        self.assertIsNone(get_user(self.request(), token=get_token(self.user)))

    async def test_valid_uses_are_not_failures_async(self):
        for _ in range(5):
            self.assertEqual(
                await aget_user(self.request(), token=get_token(self.user)), self.user
            )
        token, _ = await issue_token_async(self.user)
        for _ in range(5):
            self.assertEqual(await aget_user(self.request(), token=token), self.user)
        for _ in range(3):
            self.assertIsNone(await aget_user(self.request(), token="junk"))
        request = self.request()
        self.assertIsNone(await aget_user(request, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(request))

    def test_refused_attempts_give_their_count_back(self):
        self.fail_times(3)
        token, record = issue_token(self.user)
        for _ in range(10):
            self.assertIsNone(get_user(self.request(), token=token))
        cache = caches["default"]
        self.assertEqual(cache.get(self.KEY), 3)
        # A client over its limit doesn't use up the count of a link.
        self.assertEqual(cache.get(f"sesame_db:failures:link:{record.pk}"), 0)
        self.assertEqual(get_user(self.request("192.0.2.2"), token=token), self.user)

    def test_window_started_by_another_attempt(self):
        # Between incr(), which finds no window, and add(), another attempt
        # starts one: this one counts in it.
        cache = caches["default"]
        original = cache.add

        def add(key, value, timeout=None, version=None):
            original(key, value, timeout, version)  # The other attempt.
            cache.add = original  # type: ignore[method-assign]
            return original(key, value, timeout, version)

        cache.add = add  # type: ignore[method-assign]
        self.addCleanup(setattr, cache, "add", original)
        self.assertIsNone(get_user(self.request(), token="junk"))
        self.assertEqual(cache.get(self.KEY), 2)

    def test_cache_that_loses_the_window_fails_closed(self):
        cache = caches["default"]

        def incr(key, delta=1, version=None):
            raise ValueError(key)

        cache.incr = incr  # type: ignore[method-assign]
        cache.add = lambda *args, **kwargs: False  # type: ignore[method-assign]
        self.addCleanup(delattr, cache, "incr")
        self.addCleanup(delattr, cache, "add")
        request = self.request()
        self.assertIsNone(get_user(request, token=get_token(self.user)))
        self.assertTrue(ratelimit.is_rate_limited(request))

    def test_window_ends_before_the_count_is_given_back(self):
        with time_machine.travel(START, tick=False) as traveller:
            cache = caches["default"]
            ratelimit.check(self.request(), None)
            traveller.shift(61)
            ratelimit.release(self.request(), None)
            self.assertIsNone(cache.get(self.KEY))


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT=LIMIT)
class GivenBackOnDatabaseFailureTests(FailingDatabaseMixin, TransactionTestCase):
    def setUp(self):
        super().setUp()
        caches["default"].clear()

    def test_database_failures_are_not_counted(self):
        # The token was neither accepted nor rejected.
        token, _ = issue_token(self.user)
        request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1")
        for _ in range(5):
            with (
                self.assertLogs("sesame_db", "ERROR"),
                self.failing(),
                self.assertRaises(DatabaseUnavailable),
            ):
                get_user(request, token=token)
        self.assertEqual(get_user(request, token=token), self.user)

    async def test_database_failures_are_not_counted_async(self):
        token, _ = await issue_token_async(self.user)
        request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1")
        for _ in range(5):
            with self.assertRaises(DatabaseUnavailable):
                async with self.afailing():
                    await aget_user(request, token=token)
        self.assertEqual(await aget_user(request, token=token), self.user)

    async def test_failed_audit_is_not_counted_as_recorded_async(self):
        token, record = await issue_token_async(self.user)
        await sync_to_async(record.revoke)()
        request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1")
        with self.assertRaises(DatabaseUnavailable):
            async with self.afailing(
                lambda sql: "INSERT INTO" in sql and "sesame_db_tokenevent" in sql
            ):
                await aget_user(request, token=token)
        self.assertIsNone(await aget_user(request, token=token))
        rejected = TokenEvent.objects.filter(token_id=record.pk, kind="rejected")
        self.assertEqual(await rejected.acount(), 1)


# Enough threads to overshoot a limit of 10 several times over when attempts
# are counted after the check.
THREADS = 64


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT={"failures": 10, "period": 60})
class ConcurrentFailureTests(CreateUserMixin, TransactionTestCase):
    """Failures at once, each thread with its own connection: no more than the limit are checked."""

    def setUp(self):
        super().setUp()
        caches["default"].clear()
        self.rejections = Rejections(self)

    def fail_concurrently(self, token, ip):
        barrier = threading.Barrier(THREADS)
        errors = []

        def attempt(index):
            try:
                barrier.wait(timeout=30)
                self.assertIsNone(
                    get_user(
                        RequestFactory().get("/", REMOTE_ADDR=ip(index)), token=token
                    )
                )
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        return Counter(reason for reason, _ in self.rejections.reasons)

    def test_one_client(self):
        # Tokens of an inactive user: each check costs a query.
        token = get_token(self.user)
        self.user.is_active = False
        self.user.save()
        reasons = self.fail_concurrently(token, lambda index: "192.0.2.1")
        self.assertEqual(
            reasons, {Reason.UNKNOWN_USER: 10, Reason.RATE_LIMITED: THREADS - 10}
        )

    async def test_one_client_async(self):
        async def attempt():
            request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1")
            self.assertIsNone(await aget_user(request, token=tamper(token)))

        token = get_token(self.user)
        await asyncio.gather(*(attempt() for _ in range(THREADS)))
        reasons = Counter(reason for reason, _ in self.rejections.reasons)
        self.assertEqual(
            reasons, {Reason.BAD_SIGNATURE: 10, Reason.RATE_LIMITED: THREADS - 10}
        )

    @override_settings(SESAME_AUDIT=False)
    def test_one_link_from_many_clients(self):
        token, record = issue_token(self.user)
        record.revoke()
        reasons = self.fail_concurrently(token, lambda index: f"192.0.2.{index + 1}")
        self.assertEqual(
            reasons, {Reason.REVOKED: 10, Reason.RATE_LIMITED: THREADS - 10}
        )


@override_settings(CACHES=CACHES, SESAME_RATE_LIMIT=LIMIT, ROOT_URLCONF="tests.urls")
class ResponseTests(RateLimitTestCase):
    def fail_here(self):
        for _ in range(3):
            self.client.get("/decorated/", {"sesame": "junk"})

    def assertTooManyRequests(self, response):
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response["Retry-After"], "60")

    def test_decorator(self):
        self.fail_here()
        response = self.client.get("/decorated/", {"sesame": get_token(self.user)})
        self.assertTooManyRequests(response)

    async def test_async_decorator(self):
        for _ in range(3):
            await self.async_client.get("/adecorated/", {"sesame": "junk"})
        response = await self.async_client.get(
            "/adecorated/", {"sesame": get_token(self.user)}
        )
        self.assertTooManyRequests(response)

    def test_decorator_not_required(self):
        self.fail_here()
        response = self.client.get("/optional/", {"sesame": get_token(self.user)})
        self.assertContains(response, "anonymous")

    def test_login_view(self):
        self.fail_here()
        response = self.client.get("/login/", {"sesame": get_token(self.user)})
        self.assertTooManyRequests(response)

    def test_invalid_token_below_the_limit_is_403(self):
        self.assertEqual(
            self.client.get("/decorated/", {"sesame": "junk"}).status_code, 403
        )
        self.assertEqual(
            self.client.get("/login/", {"sesame": "junk"}).status_code, 403
        )

    @override_settings(
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "sesame_db.middleware.AuthenticationMiddleware",
        ]
    )
    def test_middleware_goes_on_anonymously(self):
        self.fail_here()
        response = self.client.get("/user/", {"sesame": get_token(self.user)})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "anonymous")


@override_settings(CACHES=CACHES)
class AuditFloodTests(AsyncNumQueriesMixin, CreateUserMixin, TestCase):
    """Repeating a rejected link adds rows to the audit trail within a documented bound."""

    # A repeated rejection: no query, the rejection is only counted in the cache.
    REPEAT_QUERIES = 0

    def setUp(self):
        super().setUp()
        with time_machine.travel(START, tick=False):
            self.token, self.record = issue_token(self.user, max_age=60)
        self.factory = RequestFactory()

    def rejected(self):
        return list(
            TokenEvent.objects.filter(token=self.record, kind="rejected")
            .order_by("pk")
            .values_list("reason", "ip", "scope")
        )

    def reject(self, ip="192.0.2.1", scope="", token=None):
        request = self.factory.get("/", REMOTE_ADDR=ip)
        self.assertIsNone(get_user(request, scope, token=token or self.token))

    def test_one_client_repeating_a_link(self):
        rejections = Rejections(self)
        with (
            time_machine.travel(START + datetime.timedelta(hours=1), tick=False),
            self.captureOnCommitCallbacks(execute=True),
        ):
            self.reject()
            with self.assertNumQueries(self.REPEAT_QUERIES):
                for _ in range(49):
                    self.reject()
        self.assertEqual(self.rejected(), [("expired", "192.0.2.1", "")])
        # Every rejection is still sent with the signal.
        self.assertEqual(len(rejections.reasons), 50)

    def test_first_rejection_of_each_reason_is_kept(self):
        with time_machine.travel(START + datetime.timedelta(seconds=30), tick=False):
            for _ in range(5):
                self.reject(scope="other")
            self.record.revoke()
            for _ in range(5):
                self.reject()
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.reject()
        self.assertEqual(
            self.rejected(),
            [
                ("wrong_scope", "192.0.2.1", "other"),
                ("revoked", "192.0.2.1", ""),
                # Past its signed expiry, the link is rejected before the
                # database is asked.
                ("expired", "192.0.2.1", ""),
            ],
        )

    @override_settings(SESAME_RATE_LIMIT={"failures": 3, "period": 60})
    def test_rate_limited_rejections(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(20):
                self.reject()
        self.assertEqual(
            self.rejected(),
            [("expired", "192.0.2.1", ""), ("rate_limited", "192.0.2.1", "")],
        )

    def test_many_clients(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for i in range(30):
                for _ in range(3):
                    self.reject(ip=f"192.0.2.{i + 1}")
        self.assertEqual(
            self.rejected(),
            [
                ("expired", f"192.0.2.{i + 1}", "")
                for i in range(ratelimit.AUDIT_CLIENTS)
            ],
        )

    def test_many_scopes(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for i in range(30):
                self.reject(scope=f"report:{i}")
                self.reject(scope=f"report:{i}")
        self.assertEqual(
            self.rejected(),
            [
                ("wrong_scope", "192.0.2.1", f"report:{i}")
                for i in range(ratelimit.AUDIT_CLIENTS)
            ],
        )

    def test_ipv6_clients_are_counted_by_64_prefix(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for i in range(30):
                self.reject(ip=f"2001:db8::{i + 1:x}")
        self.assertEqual(self.rejected(), [("expired", "2001:db8::1", "")])

    def test_one_row_per_window(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False) as t:
            for _ in range(ratelimit.AUDIT_WINDOW // 10 * 3):
                self.reject()
                t.shift(10)
        self.assertEqual(self.rejected(), [("expired", "192.0.2.1", "")] * 3)

    def test_links_are_counted_apart(self):
        with time_machine.travel(START, tick=False):
            other, record = issue_token(self.user, max_age=60)
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.reject()
                self.reject(token=other)
        self.assertEqual(self.rejected(), [("expired", "192.0.2.1", "")])
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="rejected").count(), 1
        )

    def test_without_request(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.assertIsNone(get_user(self.token))
        self.assertEqual(self.rejected(), [("expired", None, "")])

    def test_requests_without_address(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.reject(ip="")
        self.assertEqual(self.rejected(), [("expired", None, "")])

    @override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    )
    def test_dummy_cache_records_every_rejection(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.reject()
        self.assertEqual(self.rejected(), [("expired", "192.0.2.1", "")] * 5)

    @override_settings(SESAME_AUDIT=False)
    def test_without_audit(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(5):
                self.reject()
        self.assertEqual(len(caches["default"]._cache), 0)  # type: ignore[attr-defined]

    async def test_async(self):
        with time_machine.travel(START + datetime.timedelta(hours=1), tick=False):
            for _ in range(3):
                request = self.factory.get("/", REMOTE_ADDR="192.0.2.1")
                self.assertIsNone(await aget_user(request, token=self.token))
            async with self.assertNumQueriesAsync(self.REPEAT_QUERIES):
                self.assertIsNone(await aget_user(request, token=self.token))
        rows = await sync_to_async(self.rejected)()
        self.assertEqual(rows, [("expired", "192.0.2.1", "")])

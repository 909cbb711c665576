"""
Guest links under concurrent uses, each with its own connection, on PostgreSQL.

"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory, TransactionTestCase

from sesame_db import browsers
from sesame_db.exceptions import InvalidToken
from sesame_db.models import TokenEvent
from sesame_db.utils import check_link, issue_guest_token

THREADS = 32


@pytest.mark.postgresql
class ConcurrentGuestLinkTests(TransactionTestCase):
    """32 parallel uses of one guest link never exceed max_uses, and only one browser is ever the first."""

    def use_concurrently(self, token, make_request=lambda index: None):
        barrier = threading.Barrier(THREADS)
        results: list[object] = [None] * THREADS
        errors = []

        def use(index):
            try:
                request = make_request(index)
                barrier.wait(timeout=30)
                try:
                    _, link = check_link(request, "report:1", guests=True, token=token)
                    results[index] = link
                except InvalidToken as exc:
                    results[index] = exc.reason
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=use, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        return results

    def assertExactUses(self, max_uses):
        token, record = issue_guest_token(
            "guest@example.com", "report:1", max_uses=max_uses
        )
        results = self.use_concurrently(token)
        accepted = [r for r in results if not isinstance(r, str)]
        self.assertEqual(len(accepted), max_uses)
        self.assertEqual(
            Counter(r for r in results if isinstance(r, str)),
            {"used_up": THREADS - max_uses},
        )
        record.refresh_from_db()
        self.assertEqual(record.use_count, max_uses)
        events = Counter(
            TokenEvent.objects.filter(token=record).values_list(
                "kind", "reason", "recipient"
            )
        )
        self.assertEqual(
            events,
            {
                (TokenEvent.Kind.ISSUED, "", "guest@example.com"): 1,
                (TokenEvent.Kind.USED, "", "guest@example.com"): max_uses,
                # Repeated rejections from one client (here, no request) are
                # recorded once per window: docs/store.rst.
                (TokenEvent.Kind.REJECTED, "used_up", "guest@example.com"): 1,
            },
        )

    def test_one_time_guest_link(self):
        self.assertExactUses(1)

    def test_five_time_guest_link(self):
        self.assertExactUses(5)

    def test_one_first_browser(self):
        self.assertOneFirstBrowser()

    def test_one_first_browser_with_max_uses(self):
        self.assertOneFirstBrowser(max_uses=3)

    def assertOneFirstBrowser(self, max_uses=None):
        # 32 browsers without the cookie open a bound link at once: the
        # conditional UPDATE lets exactly one be the first, with or without
        # a use limit that would let more than one use through.
        token, record = issue_guest_token(
            "guest@example.com", "report:1", bind_to_browser=True, max_uses=max_uses
        )
        factory = RequestFactory()
        results = self.use_concurrently(
            token,
            lambda index: factory.get("/", REMOTE_ADDR=f"192.0.2.{index + 1}"),
        )
        accepted = [r for r in results if not isinstance(r, str)]
        self.assertEqual(len(accepted), 1)
        self.assertEqual(
            Counter(r for r in results if isinstance(r, str)),
            {"other_browser": THREADS - 1},
        )
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        # The browser that was first goes on with its cookie.
        response = HttpResponse()
        browsers.set_cookie(response, factory.get("/"), record)
        cookie = response.cookies[browsers.cookie_name(record.pk)]
        request = factory.get(
            "/", HTTP_COOKIE=f"{browsers.cookie_name(record.pk)}={cookie.value}"
        )
        _, link = check_link(request, "report:1", guests=True, token=token)
        self.assertEqual(link, record)

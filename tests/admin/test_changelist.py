"""Tests of :mod:`sesame_db.admin.changelist`: columns, filters, the date drill-down, pagination, query budgets."""

from __future__ import annotations

import datetime
import re
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import Count
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sesame_db.admin import (
    EstimatedCountPaginator,
    IssuedTokenAdmin,
    estimated_count,
)
from sesame_db.models import IssuedToken, TokenEvent
from tests import admin_site
from tests.admin.base import (
    CHANGE,
    CHANGELIST,
    EVENTS,
    HOUR,
    POSTGRESQL,
    AdminTestCase,
    url,
)


class ChangelistTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.other = self.create_user("jane", email="jane@example.org")
        now = timezone.now()
        self.records = {}
        states: dict[str, dict[str, Any]] = {
            "active": {},
            "limited": {"max_uses": 3, "use_count": 1},
            "expired": {"expires_at": now - HOUR},
            "revoked": {"revoked_at": now - HOUR},
            "used_up": {"max_uses": 1, "use_count": 1},
        }
        for name, fields in states.items():
            _, record = self.issue(scope=f"scope-{name}", label=f"label-{name}")
            self.records[name] = self.set_state(record, **fields)
        _, self.janes = self.issue(self.other, scope="login", label="Jane's")

    def pks(self, response):
        return {obj.pk for obj in response.context["cl"].result_list}

    def named(self, *names):
        return {self.records[name].pk for name in names}

    def test_columns(self):
        response = self.client.get(url(CHANGELIST))
        self.assertContains(
            response,
            '<span class="sesame-db-status sesame-db-status-revoked" '
            'style="background: #b02a37; color: #fff; padding: 1px 7px; '
            'border-radius: 8px; white-space: nowrap">revoked</span>',
            html=True,
        )
        self.assertContains(response, ">used up</span>")
        self.assertContains(response, '<td class="field-uses">1 / 3</td>', html=True)
        self.assertContains(response, '<td class="field-uses">0 / ∞</td>', html=True)
        # Few columns, to fit 1280 px (tests/browser/test_admin_layout.py).
        self.assertEqual(
            [str(h["text"]) for h in response.context["result_headers"]][1:],
            [
                "user or guest",
                "scope and label",
                "status",
                "uses",
                "expires at",
                "created",
            ],
        )
        # The label under the scope; "default scope" for none.
        self.assertContains(
            response,
            '<span class="sesame-db-scope">scope-limited</span><br>'
            '<span class="sesame-db-label">label-limited</span>',
            html=True,
        )
        # The short format, which wraps in two lines.
        self.assertRegex(
            response.content.decode(),
            r'<td class="field-issued">\d\d/\d\d/\d{4} \d',
        )

    def test_no_facets(self):
        # Counting the rows of each filter choice would read the whole table.
        for name in [CHANGELIST, EVENTS]:
            with self.subTest(page=name):
                response = self.client.get(url(name), {"_facets": "1"})
                self.assertNotContains(response, "Show counts")
                self.assertFalse(response.context["cl"].add_facets)

    def test_newest_first(self):
        response = self.client.get(url(CHANGELIST))
        pks = [obj.pk for obj in response.context["cl"].result_list]
        self.assertEqual(pks, sorted(pks, reverse=True))

    def test_status_filter(self):
        expected = {
            "active": self.named("active", "limited") | {self.janes.pk},
            "expired": self.named("expired"),
            "revoked": self.named("revoked"),
            "used_up": self.named("used_up"),
        }
        for status, pks in expected.items():
            with self.subTest(status=status):
                response = self.client.get(url(CHANGELIST), {"status": status})
                self.assertEqual(self.pks(response), pks)
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "?status=used_up")

    def test_scope_filter_lists_no_scopes_by_default(self):
        response = self.client.get(url(CHANGELIST))
        titles = [
            spec.title
            for spec in response.context["cl"].filter_specs
            if spec.has_output()
        ]
        self.assertEqual(titles, ["status", "user or guest", "created"])

    @override_settings(SESAME_ADMIN_SCOPES=["", "login", "report:unused"])
    def test_scope_filter_lists_known_scopes(self):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url(CHANGELIST))
        [spec] = [
            spec
            for spec in response.context["cl"].filter_specs
            if spec.title == "scope"
        ]
        self.assertEqual(
            spec.lookup_choices,
            [
                ("", "default scope"),
                ("login", "login"),
                ("report:unused", "report:unused"),
            ],
        )
        self.assertNotContains(response, "?scope=scope-active")
        self.assertFalse(
            [
                q
                for q in queries.captured_queries
                if "DISTINCT" in q["sql"].upper() and "scope" in q["sql"]
            ]
        )
        response = self.client.get(url(CHANGELIST), {"scope": "login"})
        self.assertEqual(self.pks(response), {self.janes.pk})

    def test_search(self):
        for term, expected in [
            ("jane", {self.janes.pk}),
            ("example.org", {self.janes.pk}),
            ("label-expired", self.named("expired")),
            ("scope-revoked", self.named("revoked")),
            ("login", {self.janes.pk}),
        ]:
            with self.subTest(term=term):
                response = self.client.get(url(CHANGELIST), {"q": term})
                self.assertEqual(self.pks(response), expected)

    def test_token_is_not_searchable(self):
        token, record = self.issue(label="secret")
        for term in [token, token[1:10], token[-12:]]:
            with self.subTest(term=term):
                response = self.client.get(url(CHANGELIST), {"q": term})
                self.assertEqual(self.pks(response), set())
        response = self.client.get(url(CHANGE, record.pk))
        self.assertNotContains(response, token[1:])
        self.assertNotContains(response, record.user_digest)

    def test_search_fields_follow_the_user_model(self):
        model_admin = IssuedTokenAdmin(IssuedToken, admin_site.site)
        request = RequestFactory().get("/")
        self.assertEqual(
            model_admin.get_search_fields(request),
            ["user__username", "user__email", "recipient", "scope", "label"],
        )
        # Read when the page is built, not when the module is imported.
        with mock.patch.object(User, "EMAIL_FIELD", "missing", create=True):
            self.assertEqual(
                model_admin.get_search_fields(request),
                ["user__username", "recipient", "scope", "label"],
            )
        with mock.patch.object(User, "USERNAME_FIELD", "email"):
            self.assertEqual(
                model_admin.get_search_fields(request),
                ["user__email", "recipient", "scope", "label"],
            )

    def test_date_filter(self):
        old = self.records["active"]
        self.set_state(old, created=timezone.now() - datetime.timedelta(days=40))
        response = self.client.get(url(CHANGELIST))
        self.assertContains(response, "Past 7 days")
        [spec] = [
            spec
            for spec in response.context["cl"].filter_specs
            if spec.title == "created"
        ]
        [choice] = [
            choice
            for choice in spec.choices(response.context["cl"])
            if choice["display"] == "Past 7 days"
        ]
        response = self.client.get(url(CHANGELIST) + choice["query_string"])
        self.assertNotIn(old.pk, self.pks(response))
        self.assertEqual(len(self.pks(response)), 5)
        today = timezone.localdate()
        response = self.client.get(
            url(CHANGELIST),
            {
                "created__year": str(today.year),
                "created__month": str(today.month),
                "created__day": str(today.day),
            },
        )
        self.assertEqual(len(self.pks(response)), 5)


class DateHierarchyTests(AdminTestCase):
    """The date drill-down lists the dates between the first and the last row, without SELECT DISTINCT."""

    def setUp(self):
        super().setUp()
        self.login(self.superuser)

    def create(self, *dates):
        for date in dates:
            _, record = self.issue()
            self.set_state(record, created=date)

    def choices(self, **params):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url(CHANGELIST), params)
        self.assertFalse(
            [q for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
        )
        # Django 6.1 labels the nav with a "Filter by ..." span.
        nav = re.search(
            r'<nav class="toplinks"[^>]*>(?:\s*<span id="date-hierarchy-label">.*?</span>)?(.*?)</nav>',
            response.content.decode(),
            re.S,
        )
        if nav is None:
            return None
        return (
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", nav.group(1)))
            .strip()
            .replace("&lsaquo;", "<")
        )

    def utc(self, year, month, day, hour=0):
        return datetime.datetime(year, month, day, hour, tzinfo=datetime.timezone.utc)

    def test_years_months_days(self):
        self.create(
            self.utc(2024, 3, 10, 12), self.utc(2024, 5, 2, 8), self.utc(2026, 1, 7)
        )
        # 2025 has no link, but it's between the first and the last.
        self.assertEqual(self.choices(), "2024 2025 2026")
        self.assertEqual(
            self.choices(created__year="2024"),
            "< All dates March 2024 April 2024 May 2024 June 2024 July 2024 "
            "August 2024 September 2024 October 2024 November 2024 December 2024",
        )
        self.assertEqual(self.choices(created__year="2026"), "< All dates January 2026")
        self.assertEqual(
            self.choices(created__year="2024", created__month="3"),
            "< 2024 " + " ".join(f"March {day}" for day in range(10, 32)),
        )
        self.assertEqual(
            self.choices(created__year="2026", created__month="1"),
            "< 2026 " + " ".join(f"January {day}" for day in range(1, 8)),
        )
        self.assertEqual(
            self.choices(created__year="2024", created__month="3", created__day="10"),
            "< March 2024 March 10",
        )
        # Outside of the table's dates, there's nothing to choose.
        self.assertEqual(self.choices(created__year="2023"), "< All dates")

    def test_starts_at_the_narrowest_level(self):
        self.create(self.utc(2024, 3, 10), self.utc(2024, 3, 12))
        self.assertEqual(self.choices(), "< 2024 March 10 March 11 March 12")
        self.create(self.utc(2024, 4, 1))
        self.assertEqual(self.choices(), "< All dates March 2024 April 2024")

    def test_filters_and_search_keep_the_table_bounds(self):
        # Bounds of the filtered rows would need a scan of all of them.
        self.create(self.utc(2024, 3, 10), self.utc(2025, 3, 12))
        _, record = self.issue(label="needle")
        self.set_state(record, created=self.utc(2025, 1, 1))
        with CaptureQueriesContext(connection) as unfiltered:
            self.assertEqual(self.choices(), "2024 2025")
        with CaptureQueriesContext(connection) as searched:
            self.assertEqual(self.choices(q="needle"), "2024 2025")
        [bounds] = [
            q["sql"] for q in searched.captured_queries if "MIN(" in q["sql"].upper()
        ]
        self.assertNotIn("WHERE", bounds.upper())
        self.assertNotIn("JOIN", bounds.upper())
        # As many queries; on PostgreSQL, the unfiltered list also reads
        # the table's estimated size.
        self.assertEqual(len(searched), len(unfiltered) - POSTGRESQL)

    def test_links_filter_the_list(self):
        self.create(self.utc(2024, 3, 10), self.utc(2025, 3, 12))
        response = self.client.get(url(CHANGELIST), {"created__year": "2025"})
        self.assertEqual(len(response.context["cl"].result_list), 1)
        self.assertContains(response, "?created__month=3&amp;created__year=2025")

    @override_settings(TIME_ZONE="America/New_York")
    def test_local_time(self):
        # 2 a.m. UTC on January 1st is still December 31st in New York.
        self.create(self.utc(2025, 1, 1, 2), self.utc(2024, 12, 30, 12))
        self.assertEqual(self.choices(), "< 2024 December 30 December 31")

    def test_no_rows(self):
        self.assertEqual(self.choices(), "")
        self.assertEqual(self.choices(created__year="2024"), "< All dates")
        self.assertEqual(
            self.choices(created__year="2024", created__month="2"), "< 2024"
        )

    def test_events(self):
        _, record = self.issue()
        TokenEvent.objects.filter(token=record).update(created_at=self.utc(2023, 6, 1))
        self.issue()
        response = self.client.get(url(EVENTS))
        self.assertContains(response, "?created_at__year=2023")
        self.assertContains(response, f"?created_at__year={timezone.now().year}")


class PaginatorTests(AdminTestCase):
    def test_real_count_on_small_tables(self):
        for _ in range(3):
            self.issue()
        paginator = EstimatedCountPaginator(IssuedToken.objects.order_by("pk"), 2)
        self.assertEqual(paginator.count, 3)
        self.assertFalse(paginator.is_estimate)

    def test_no_estimate_on_other_databases(self):
        self.issue()
        with (
            mock.patch.object(connection, "vendor", "sqlite"),
            mock.patch.object(EstimatedCountPaginator, "estimate_threshold", 0),
            CaptureQueriesContext(connection) as queries,
        ):
            paginator = EstimatedCountPaginator(IssuedToken.objects.order_by("pk"), 2)
            self.assertEqual(paginator.count, 1)
            self.assertFalse(paginator.is_estimate)
            self.assertIsNone(estimated_count(IssuedToken.objects.all()))
        self.assertFalse(
            [q for q in queries.captured_queries if "pg_class" in q["sql"]]
        )

    def test_no_estimate_without_a_query_set(self):
        self.assertIsNone(estimated_count([1, 2]))
        self.assertEqual(EstimatedCountPaginator([1, 2, 3], 2).count, 3)


@pytest.mark.postgresql
class PostgreSQLPaginatorTests(AdminTestCase):
    def fill(self, count):
        # A bulk insert, then ANALYZE: pg_class holds the estimate.
        _, record = self.issue()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sesame_db_issuedtoken (created, modified, user_id, scope, label, "
                "use_count, revoke_reason, user_digest) "
                "SELECT now(), now(), %s, 'bulk', '', 0, '', '' FROM generate_series(2, %s)",
                [self.user.pk, count],
            )
            cursor.execute("ANALYZE sesame_db_issuedtoken")
        return record

    def test_estimate(self):
        self.fill(300)
        queryset = IssuedToken.objects.select_related("user").order_by("-created")
        self.assertEqual(estimated_count(queryset), 300)
        # Only without a WHERE clause.
        unfiltered = IssuedToken.objects.all()
        for filtered in [
            unfiltered.filter(scope="x"),
            unfiltered.active(),
            unfiltered.distinct(),
            unfiltered[:5],
            unfiltered.filter(pk__gt=0),
            unfiltered.values("scope").annotate(n=Count("pk")),
        ]:
            with self.subTest(query=str(filtered.query)):
                self.assertIsNone(estimated_count(filtered))
        paginator = EstimatedCountPaginator(queryset, 100)
        paginator.estimate_threshold = 100
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(paginator.count, 300)
        self.assertTrue(paginator.is_estimate)
        self.assertFalse(
            [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        )
        # Below the threshold, a real count.
        paginator = EstimatedCountPaginator(queryset, 100)
        self.assertEqual(paginator.count, 300)
        self.assertFalse(paginator.is_estimate)

    def test_estimate_counts_whole_rows(self):
        # pg_class.reltuples is a float4: in float4 arithmetic, 300 rows on
        # 291 pages are 300 / 291 * 291 = 299.99997 rows, truncated to 299.
        # Rows that this transaction inserts and deletes stretch the table to
        # such a page count (dead, ANALYZE doesn't count them), as the rolled
        # back rows of earlier tests did. It starts empty: TRUNCATE, undone
        # with the test's transaction, gives it a new file.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE sesame_db_issuedtoken CASCADE")
        self.fill(300)
        with connection.cursor() as cursor:
            for _ in range(1_000):
                cursor.execute(
                    "SELECT pages, 300::real / pages * pages < 300 FROM (SELECT "
                    "(pg_relation_size('sesame_db_issuedtoken') "
                    "/ current_setting('block_size')::integer)::integer AS pages) p"
                )
                pages, rounds_down = cursor.fetchone()
                if rounds_down:
                    break
                cursor.execute(
                    "INSERT INTO sesame_db_issuedtoken (created, modified, user_id, "
                    "scope, label, use_count, revoke_reason, user_digest) "
                    "SELECT now(), now(), %s, 'dead', '', 0, '', '' "
                    "FROM generate_series(1, 50)",
                    [self.user.pk],
                )
            else:
                self.fail("no page count where float4 rounds down")
            cursor.execute("DELETE FROM sesame_db_issuedtoken WHERE scope = 'dead'")
            cursor.execute("ANALYZE sesame_db_issuedtoken")
            cursor.execute(
                "SELECT reltuples, relpages FROM pg_class "
                "WHERE oid = 'sesame_db_issuedtoken'::regclass"
            )
            self.assertEqual(cursor.fetchone(), (300, pages))
        self.assertEqual(estimated_count(IssuedToken.objects.all()), 300)

    def test_changelist_shows_estimate(self):
        self.fill(300)
        self.login(self.superuser)
        with mock.patch.object(EstimatedCountPaginator, "estimate_threshold", 100):
            response = self.client.get(url(CHANGELIST))
            self.assertTrue(response.context["cl"].paginator.is_estimate)
            self.assertContains(response, "PostgreSQL’s estimate")
            # A filter or a search counts rows.
            response = self.client.get(url(CHANGELIST), {"q": "bulk"})
            self.assertFalse(response.context["cl"].paginator.is_estimate)
            self.assertNotContains(response, "PostgreSQL’s estimate")


class QueryBudgetTests(AdminTestCase):
    """The pages cost the same number of queries for 1 row and for 100 rows."""

    # IssuedToken changelist, for a superuser:
    # 1. the session
    # 2. the user
    # 3. (PostgreSQL only) the table's estimated size, in pg_class
    # 4. COUNT of the rows, as the table is small
    # 5. the rows of the page, joined to user and issued_by
    # 6. MIN and MAX of created, for the date hierarchy
    CHANGELIST_QUERIES = 5 + POSTGRESQL
    # TokenEvent changelist, for a superuser: the same, with the rows joined
    # to user, actor and token.
    EVENTS_QUERIES = 5 + POSTGRESQL
    # IssuedToken change page, for a superuser:
    # 1. the session
    # 2. the user
    # 3. the link, joined to user, issued_by and revoked_by
    # 4. the 50 newest events joined to their actor, with their total count
    CHANGE_QUERIES = 4

    def setUp(self):
        super().setUp()
        # Rows are counted, as the tables are small, whatever statistics
        # PostgreSQL keeps from other tests: ANALYZE isn't rolled back.
        threshold = mock.patch.object(
            EstimatedCountPaginator, "estimate_threshold", 10**12
        )
        threshold.start()
        self.addCleanup(threshold.stop)
        self.login(self.superuser)
        # The change page needs the content type of IssuedToken, which
        # Django caches for the process: load it, so that the counts don't
        # depend on the order of the tests.
        ContentType.objects.get_for_model(IssuedToken)

    def fill(self, count):
        for i in range(count):
            self.users = getattr(self, "users", 0) + 1
            _, record = self.issue(
                self.create_user(f"user{self.users}") if i % 10 == 0 else None,
                scope=f"s{i}",
                label=f"label {i}",
                issued_by=self.superuser,
                max_uses=3,
            )
            TokenEvent.objects.create(
                token=record, user=record.user, actor=self.superuser, kind="revoked"
            )
        return record

    def count(self, path, **params):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(path, params)
        self.assertEqual(response.status_code, 200)
        return len(queries), response

    def test_changelist(self):
        self.fill(1)
        one, response = self.count(url(CHANGELIST))
        self.assertEqual(len(response.context["cl"].result_list), 1)
        self.fill(99)
        hundred, response = self.count(url(CHANGELIST))
        self.assertEqual(len(response.context["cl"].result_list), 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.CHANGELIST_QUERIES)

    def test_events_changelist(self):
        self.fill(1)
        one, response = self.count(url(EVENTS))
        self.assertEqual(len(response.context["cl"].result_list), 2)
        self.fill(49)
        hundred, response = self.count(url(EVENTS))
        self.assertEqual(len(response.context["cl"].result_list), 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.EVENTS_QUERIES)

    def test_change_page(self):
        record = self.fill(1)
        one, response = self.count(url(CHANGE, record.pk))
        self.assertEqual(len(response.context["link_events"]), 2)
        TokenEvent.objects.bulk_create(
            [
                TokenEvent(
                    token=record, user=self.user, actor=self.superuser, kind="used"
                )
                for _ in range(98)
            ]
        )
        hundred, response = self.count(url(CHANGE, record.pk))
        self.assertEqual(len(response.context["link_events"]), 50)
        self.assertEqual(response.context["link_events_total"], 100)
        self.assertEqual(one, hundred)
        self.assertEqual(one, self.CHANGE_QUERIES)


class HostileParametersTests(AdminTestCase):
    """The change lists answer a query string with NUL as an invalid lookup: PostgreSQL can't compare text with NUL."""

    def test_nul_and_garbage(self):
        self.login(self.superuser)
        parameters = [
            "scope=%00",
            "scope=report%001",
            "q=%00",
            "q=john%00",
            "status=%00",
            "for=%00",
            "kind=%00",
            "reason=%00",
            "created_at__gte=%00",
        ]
        for name in [CHANGELIST, EVENTS]:
            for query in parameters:
                with self.subTest(name, query=query):
                    response = self.client.get(f"{url(name)}?{query}")
                    # As the admin answers an invalid lookup, on every database.
                    self.assertRedirects(response, f"{url(name)}?e=1")

"""Tests of :mod:`sesame_db.admin.events`."""

from __future__ import annotations

from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from sesame_db.models import TokenEvent
from sesame_db.utils import get_user
from tests.admin.base import (
    CHANGE,
    EVENTS,
    AdminTestCase,
    url,
)


class TokenEventAdminTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.token, self.record = self.issue(scope="report:q3")
        request = RequestFactory().get(
            "/report/", {"sesame": self.token}, REMOTE_ADDR="203.0.113.5"
        )
        get_user(request, "report:q3")
        get_user(RequestFactory().get("/", REMOTE_ADDR="198.51.100.1"), "report:q3")

    def pks(self, response):
        return {obj.pk for obj in response.context["cl"].result_list}

    def test_changelist(self):
        response = self.client.get(url(EVENTS))
        self.assertContains(
            response,
            f'<a href="{url(CHANGE, self.record.pk)}">#{self.record.pk}</a>',
            html=True,
        )
        self.assertContains(response, "203.0.113.5")
        self.assertContains(response, "/report/")

    def test_deleted_link_and_user(self):
        pk = self.record.pk
        self.record.delete()
        response = self.client.get(url(EVENTS))
        self.assertContains(response, f"#{pk} (deleted)")

    def test_filters(self):
        response = self.client.get(url(EVENTS), {"kind__exact": "used"})
        self.assertEqual(
            self.pks(response),
            set(TokenEvent.objects.filter(kind="used").values_list("pk", flat=True)),
        )

    def test_search(self):
        used = TokenEvent.objects.get(kind="used").pk
        issued = TokenEvent.objects.get(kind="issued").pk
        for term, expected in [
            ("203.0.113.5", {used}),
            ("203.0.113.50", set()),
            ("john", {used, issued}),
            ("report:q3", {used, issued}),
            ("nobody", set()),
        ]:
            with self.subTest(term=term):
                response = self.client.get(url(EVENTS), {"q": term})
                self.assertEqual(self.pks(response), expected)

    def test_search_by_ip_uses_equality(self):
        with CaptureQueriesContext(connection) as queries:
            self.client.get(url(EVENTS), {"q": " 2001:DB8::1 "})
        [query] = [
            q["sql"]
            for q in queries.captured_queries
            if "LIMIT" in q["sql"] or "ORDER BY" in q["sql"]
        ][-1:]
        self.assertIn("2001:db8::1", query)
        self.assertNotIn("LIKE", query.upper())

from __future__ import annotations

import datetime
from typing import Any

import pytest
import time_machine
from django.core.cache import caches
from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django.urls import path

pytest.importorskip("rest_framework")

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from sesame_db.contrib.rest_framework import SesameTokenAuthentication
from sesame_db.models import TokenEvent
from sesame_db.utils import get_token, issue_token
from tests.mixins import (
    CreateUserMixin,
    FailingDatabaseMixin,
    capture_login_failed,
    tamper,
)


class ReportAuthentication(SesameTokenAuthentication):
    scope = "api:reports"


class HeaderOnlyAuthentication(SesameTokenAuthentication):
    allow_query_string = False


class ShortLivedAuthentication(SesameTokenAuthentication):
    max_age = 60


class BearerAuthentication(SesameTokenAuthentication):
    keyword = "Bearer"


class WhoAmI(APIView):  # type: ignore[misc]
    authentication_classes = [SesameTokenAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]

    def get(self, request):
        return Response({"user": request.user.get_username(), "auth": request.auth})

    post = get


def view(name, **attrs):
    cls: Any = type(name, (WhoAmI,), attrs)
    return cls.as_view()


class Anonymous(WhoAmI):
    permission_classes = [AllowAny]

    def get(self, request):
        user = request.user
        return Response(
            {"user": user.get_username() if user.is_authenticated else None}
        )


urlpatterns = [
    path("me/", WhoAmI.as_view()),
    path("reports/", view("Reports", authentication_classes=[ReportAuthentication])),
    path(
        "header-only/",
        view("HeaderOnly", authentication_classes=[HeaderOnlyAuthentication]),
    ),
    path("short/", view("Short", authentication_classes=[ShortLivedAuthentication])),
    path("bearer/", view("Bearer", authentication_classes=[BearerAuthentication])),
    path(
        "session-too/",
        view(
            "SessionToo",
            authentication_classes=[SesameTokenAuthentication, SessionAuthentication],
        ),
    ),
    path("anonymous/", Anonymous.as_view()),
]

START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


@override_settings(ROOT_URLCONF=__name__)
class SesameTokenAuthenticationTests(CreateUserMixin, TestCase):
    # A valid stateless token: 1. SELECT the user.
    STATELESS_QUERIES = 1
    # A valid stored token: 1. SELECT the token joined to its user; 2. UPDATE
    # its use count; 3. INSERT the "used" event (2. and 3. are one statement
    # on PostgreSQL).
    STORED_QUERIES_SQLITE = 3
    STORED_QUERIES_POSTGRESQL = 2
    # A revoked stored token: 1. SELECT the token; 2. INSERT the "rejected" event.
    REVOKED_QUERIES = 2
    # A malformed or forged stored token, or no token: no query.
    REJECTED_EARLY_QUERIES = 0

    client_class = APIClient

    @property
    def stored_queries(self):
        if connection.vendor == "postgresql":
            return self.STORED_QUERIES_POSTGRESQL
        return self.STORED_QUERIES_SQLITE

    def header(self, token, keyword="Sesame"):
        return {"HTTP_AUTHORIZATION": f"{keyword} {token}"}

    def assertUser(self, response, username="john"):
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["user"], username)

    def assertUnauthorized(self, response, detail="Invalid or expired token."):
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["WWW-Authenticate"], "Sesame")
        self.assertEqual(response.json()["detail"], detail)

    # Valid tokens.

    def test_header_stateless(self):
        token = get_token(self.user)
        with self.assertNumQueries(self.STATELESS_QUERIES):
            response = self.client.get("/me/", **self.header(token))
        self.assertUser(response)
        self.assertIsNone(response.json()["auth"])

    def test_header_stored(self):
        token, record = issue_token(self.user)
        with self.assertNumQueries(self.stored_queries):
            response = self.client.get(
                "/me/", REMOTE_ADDR="192.0.2.7", **self.header(token)
            )
        self.assertUser(response)
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)
        event = TokenEvent.objects.get(token=record, kind="used")
        self.assertEqual(
            (event.ip, event.method, event.path), ("192.0.2.7", "GET", "/me/")
        )

    def test_query_string_stateless(self):
        with self.assertNumQueries(self.STATELESS_QUERIES):
            response = self.client.get("/me/", {"sesame": get_token(self.user)})
        self.assertUser(response)

    def test_query_string_stored(self):
        token, record = issue_token(self.user)
        response = self.client.post(f"/me/?sesame={token}", {"data": 1})
        self.assertUser(response)
        event = TokenEvent.objects.get(token=record, kind="used")
        self.assertEqual((event.method, event.path), ("POST", "/me/"))

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_query_string_token_name(self):
        token = get_token(self.user)
        self.assertUser(self.client.get("/me/", {"login": token}))
        self.assertEqual(self.client.get("/me/", {"sesame": token}).status_code, 401)

    def test_keyword_is_case_insensitive(self):
        token = get_token(self.user)
        self.assertUser(self.client.get("/me/", **self.header(token, "sesame")))
        self.assertUser(self.client.get("/me/", **self.header(token, "SESAME")))

    def test_header_wins_over_query_string(self):
        other = self.create_user("jane", email="jane@example.com")
        response = self.client.get(
            "/me/", {"sesame": get_token(other)}, **self.header(get_token(self.user))
        )
        self.assertUser(response)

    def test_custom_keyword(self):
        token = get_token(self.user)
        self.assertUser(self.client.get("/bearer/", **self.header(token, "Bearer")))
        response = self.client.get("/bearer/", **self.header("junk", "Bearer"))
        self.assertEqual(response["WWW-Authenticate"], "Bearer")

    # Invalid tokens.

    def test_forged_header(self):
        token, _ = issue_token(self.user)
        with self.assertNumQueries(self.REJECTED_EARLY_QUERIES):
            response = self.client.get("/me/", **self.header(tamper(token)))
        self.assertUnauthorized(response)

    def test_invalid_query_string(self):
        self.assertUnauthorized(self.client.get("/me/", {"sesame": "junk"}))

    def test_revoked_stored_token(self):
        token, record = issue_token(self.user)
        record.revoke()
        with self.assertNumQueries(self.REVOKED_QUERIES):
            response = self.client.get(
                "/me/", REMOTE_ADDR="192.0.2.7", **self.header(token)
            )
        self.assertUnauthorized(response)
        event = TokenEvent.objects.get(token=record, kind="rejected")
        self.assertEqual(event.reason, "revoked")
        self.assertEqual((event.ip, event.path), ("192.0.2.7", "/me/"))

    def test_used_up_stored_token(self):
        token, record = issue_token(self.user, max_uses=1)
        self.assertUser(self.client.get("/me/", **self.header(token)))
        self.assertUnauthorized(self.client.get("/me/", **self.header(token)))

    @override_settings(SESAME_MAX_AGE=300)
    def test_max_age(self):
        with time_machine.travel(START, tick=False) as traveller:
            token = get_token(self.user)
            traveller.shift(61)
            self.assertUser(self.client.get("/me/", **self.header(token)))
            self.assertUnauthorized(self.client.get("/short/", **self.header(token)))

    def test_inactive_user(self):
        token = get_token(self.user)
        self.user.is_active = False
        self.user.save()
        self.assertUnauthorized(self.client.get("/me/", **self.header(token)))

    def test_header_without_token(self):
        self.assertUnauthorized(
            self.client.get("/me/", HTTP_AUTHORIZATION="Sesame"),
            "Invalid Sesame header: expected one token, without spaces.",
        )

    def test_header_with_spaces(self):
        self.assertUnauthorized(
            self.client.get("/me/", HTTP_AUTHORIZATION="Sesame a b"),
            "Invalid Sesame header: expected one token, without spaces.",
        )

    def test_header_with_invalid_characters(self):
        request = APIRequestFactory().get(
            "/me/", HTTP_AUTHORIZATION="Sesame tok\u00e9n".encode()
        )
        response = WhoAmI.as_view()(request)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(
            response.data["detail"],
            "Invalid Sesame header: the token contains invalid characters.",
        )

    def test_token_is_masked_in_failed_login_signal(self):
        token, _ = issue_token(self.user)
        with capture_login_failed() as credentials:
            self.client.get("/me/", **self.header(tamper(token)))
        self.assertEqual(len(credentials), 1)
        self.assertNotIn(tamper(token), str(credentials))

    # Scopes.

    def test_scope(self):
        token = get_token(self.user, "api:reports")
        self.assertUser(self.client.get("/reports/", **self.header(token)))
        self.assertUnauthorized(self.client.get("/me/", **self.header(token)))

    def test_unscoped_token_in_scope(self):
        token = get_token(self.user)
        self.assertUnauthorized(self.client.get("/reports/", **self.header(token)))

    def test_stored_scope(self):
        token, record = issue_token(self.user, "api:reports")
        self.assertUser(self.client.get("/reports/", **self.header(token)))
        self.assertUnauthorized(self.client.get("/me/", **self.header(token)))
        rejected = TokenEvent.objects.get(token=record, kind="rejected")
        self.assertEqual((rejected.reason, rejected.scope), ("wrong_scope", ""))

    # No token.

    def test_no_token_is_anonymous(self):
        with self.assertNumQueries(self.REJECTED_EARLY_QUERIES):
            response = self.client.get("/anonymous/")
        self.assertEqual(response.json(), {"user": None})

    def test_no_token_with_permission_required(self):
        response = self.client.get("/me/")
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["WWW-Authenticate"], "Sesame")

    def test_other_scheme_is_left_to_other_classes(self):
        response = self.client.get("/anonymous/", HTTP_AUTHORIZATION="Token abc")
        self.assertEqual(response.json(), {"user": None})

    def test_query_string_disabled(self):
        token = get_token(self.user)
        self.assertEqual(
            self.client.get("/header-only/", {"sesame": token}).status_code, 401
        )
        self.assertUser(self.client.get("/header-only/", **self.header(token)))

    def test_falls_back_to_session(self):
        self.client.force_login(self.user)
        self.assertUser(self.client.get("/session-too/"))

    # Rate limiting.

    @override_settings(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "sesame-db-drf-tests",
            }
        },
        SESAME_RATE_LIMIT={"failures": 2, "period": 30},
    )
    def test_rate_limited(self):
        caches["default"].clear()
        for _ in range(2):
            self.assertUnauthorized(self.client.get("/me/", **self.header("junk")))
        response = self.client.get("/me/", **self.header(get_token(self.user)))
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response["Retry-After"], "30")


@override_settings(ROOT_URLCONF=__name__)
class UnavailableTests(FailingDatabaseMixin, TransactionTestCase):
    client_class = APIClient

    def test_database_failure_is_503(self):
        token, record = issue_token(self.user)
        with self.assertLogs("sesame_db", "ERROR"), self.failing():
            response = self.client.get("/me/", HTTP_AUTHORIZATION=f"Sesame {token}")
        self.assertEqual(response.status_code, 503, response.content)
        self.assertEqual(response["Retry-After"], "5")
        self.assertEqual(
            response.json()["detail"].split(".")[0],
            "The token can't be checked right now",
        )
        self.assertEqual(self.use(record), (0, []))
        response = self.client.get("/me/", HTTP_AUTHORIZATION=f"Sesame {token}")
        self.assertEqual(response.json()["user"], "john")


class AuthenticateMethodTests(CreateUserMixin, TestCase):
    """The class called directly, as DRF does, with a Request or an HttpRequest."""

    def test_returns_user_and_none(self):
        from rest_framework.request import Request

        request = Request(
            APIRequestFactory().get(
                "/", HTTP_AUTHORIZATION=f"Sesame {get_token(self.user)}"
            )
        )
        result = SesameTokenAuthentication().authenticate(request)
        assert result is not None
        user, auth = result
        self.assertEqual(user, self.user)
        self.assertIsNone(auth)

    def test_no_token(self):
        request = APIRequestFactory().get("/")
        self.assertIsNone(SesameTokenAuthentication().authenticate(request))

    def test_authenticate_header(self):
        request = APIRequestFactory().get("/")
        self.assertEqual(
            SesameTokenAuthentication().authenticate_header(request), "Sesame"
        )

"""
Guest links at the DRF and Channels entry points.

"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory, TestCase, override_settings
from django.urls import path

pytest.importorskip("rest_framework")
pytest.importorskip("channels")

from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from sesame_db import browsers
from sesame_db.contrib.channels import SesameAuthMiddleware, request_from_scope
from sesame_db.contrib.rest_framework import SesameTokenAuthentication
from sesame_db.models import TokenEvent
from sesame_db.utils import issue_guest_token, issue_token
from tests.contrib.test_channels import ChannelsTestCase, WhoAmIConsumer
from tests.mixins import CreateUserMixin

GUEST = "guest@example.com"


class GuestAuthentication(SesameTokenAuthentication):
    scope = "report:1"
    guests = True


class MemberAuthentication(SesameTokenAuthentication):
    scope = "report:1"


class UnscopedGuestAuthentication(SesameTokenAuthentication):
    guests = True


class HasLink(BasePermission):  # type: ignore[misc]
    def has_permission(self, request, view):
        return request.user.is_authenticated or request.auth is not None


class Report(APIView):  # type: ignore[misc]
    authentication_classes = [GuestAuthentication]
    permission_classes = [HasLink]
    renderer_classes = [JSONRenderer]

    def get(self, request):
        return Response(
            {
                "user": request.user.get_username() or None,
                "recipient": None if request.auth is None else request.auth.recipient,
                "sesame_link": request.sesame_link.pk,
            }
        )


class MembersOnly(Report):
    permission_classes = [IsAuthenticated]


class Member(Report):
    authentication_classes = [MemberAuthentication]


class Unscoped(Report):
    authentication_classes = [UnscopedGuestAuthentication]


urlpatterns = [
    path("report/", Report.as_view()),
    path("members-only/", MembersOnly.as_view()),
    path("member/", Member.as_view()),
    path("unscoped/", Unscoped.as_view()),
]


@override_settings(ROOT_URLCONF=__name__)
class RestFrameworkGuestTests(CreateUserMixin, TestCase):
    client_class = APIClient

    def setUp(self):
        super().setUp()
        self.token, self.link = issue_guest_token(GUEST, "report:1")

    def test_guest_link_authenticates_no_one(self):
        response = self.client.get(
            "/report/", HTTP_AUTHORIZATION=f"Sesame {self.token}"
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {"user": None, "recipient": GUEST, "sesame_link": self.link.pk},
        )
        # In the query string too.
        response = self.client.get(f"/report/?sesame={self.token}")
        self.assertEqual(response.status_code, 200)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 2)

    def test_is_authenticated_refuses_a_guest(self):
        response = self.client.get(
            "/members-only/", HTTP_AUTHORIZATION=f"Sesame {self.token}"
        )
        self.assertEqual(response.status_code, 403)

    def test_refused_without_guests(self):
        response = self.client.get(
            "/member/", HTTP_AUTHORIZATION=f"Sesame {self.token}"
        )
        self.assertEqual(response.status_code, 401)
        self.assertTrue(
            TokenEvent.objects.filter(
                token=self.link, reason="guest_link", recipient=GUEST
            ).exists()
        )
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)

    def test_wrong_scope(self):
        token, _ = issue_guest_token(GUEST, "report:2")
        response = self.client.get("/report/", HTTP_AUTHORIZATION=f"Sesame {token}")
        self.assertEqual(response.status_code, 401)

    def test_guests_require_a_scope(self):
        # Guest links always have one: the view is misconfigured, whatever
        # the request has.
        requests: list[tuple[str, dict[str, str]]] = [
            ("/unscoped/", {"Authorization": f"Sesame {self.token}"}),
            (f"/unscoped/?sesame={self.token}", {}),
            ("/unscoped/", {}),
        ]
        for url, headers in requests:
            with (
                self.subTest(url, headers=headers),
                # Outside assertRaises, which swallows the exception:
                # assertNumQueries doesn't count when one goes through.
                self.assertNumQueries(0),
                self.assertRaisesMessage(
                    ImproperlyConfigured,
                    "UnscopedGuestAuthentication(guests=True) requires a scope",
                ),
            ):
                self.client.get(url, headers=headers)
        self.assertFalse(TokenEvent.objects.exclude(kind="issued").exists())

    def test_user_link(self):
        token, link = issue_token(self.user, "report:1")
        response = self.client.get("/report/", HTTP_AUTHORIZATION=f"Sesame {token}")
        self.assertEqual(
            response.json(),
            {"user": "john", "recipient": None, "sesame_link": link.pk},
        )


class ChannelsGuestTests(ChannelsTestCase):
    async def link_of(self, path, **middleware_kwargs):
        seen = {}

        async def application(scope, receive, send):
            seen["user"] = scope["user"]
            seen["link"] = scope.get("sesame_link")
            await WhoAmIConsumer.as_asgi()(scope, receive, send)

        middleware = SesameAuthMiddleware(application, **middleware_kwargs)
        async with self.connect(middleware, path) as (_, connected, detail):
            return connected, detail, seen

    async def test_guest_link_authenticates_no_one(self):
        token, link = await sync_to_async(issue_guest_token)(GUEST, "report:1")
        connected, _, seen = await self.link_of(
            f"/ws/?sesame={token}", scope="report:1", guests=True, required=True
        )
        self.assertTrue(connected)
        self.assertFalse(seen["user"].is_authenticated)
        self.assertEqual(seen["link"].pk, link.pk)
        self.assertEqual(seen["link"].recipient, GUEST)

    async def test_session_user_stays(self):
        # Inside AuthMiddlewareStack, the session's user is already in the
        # scope: a guest link lets the connection through as that user.
        token, link = await sync_to_async(issue_guest_token)(GUEST, "report:1")
        seen = {}

        async def application(scope, receive, send):
            seen["user"] = scope["user"]
            seen["link"] = scope.get("sesame_link")
            await WhoAmIConsumer.as_asgi()(scope, receive, send)

        middleware = SesameAuthMiddleware(application, "report:1", guests=True)

        async def session(scope, receive, send):
            await middleware({**scope, "user": self.user}, receive, send)

        async with self.connect(session, f"/ws/?sesame={token}") as (_, connected, _):
            self.assertTrue(connected)
        self.assertEqual(seen["user"], self.user)
        self.assertEqual(seen["link"].pk, link.pk)

    async def test_refused_without_guests(self):
        token, link = await sync_to_async(issue_guest_token)(GUEST, "report:1")
        connected, code, _ = await self.link_of(
            f"/ws/?sesame={token}", scope="report:1", required=True
        )
        self.assertFalse(connected)
        self.assertEqual(code, 1008)
        reasons = [
            reason
            async for reason in TokenEvent.objects.filter(
                token=link, kind="rejected"
            ).values_list("reason", flat=True)
        ]
        self.assertEqual(reasons, ["guest_link"])

    def test_guests_require_a_scope(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured,
            "SesameAuthMiddleware(guests=True) requires a scope",
        ):
            SesameAuthMiddleware(WhoAmIConsumer.as_asgi(), guests=True)

    async def test_only_in_its_scope(self):
        token, _ = await sync_to_async(issue_guest_token)(GUEST, "report:1")
        connected, code, _ = await self.link_of(
            f"/ws/?sesame={token}", scope="report:2", guests=True, required=True
        )
        self.assertFalse(connected)
        self.assertEqual(code, 1008)


class BoundLinkContribTests(CreateUserMixin, TestCase):
    """DRF and Channels read the binding cookie, which only views can set."""

    def setUp(self):
        super().setUp()
        self.token, self.link = issue_guest_token(
            GUEST, "report:1", bind_to_browser=True
        )
        response = HttpResponse()
        browsers.set_cookie(response, RequestFactory().get("/"), self.link)
        self.cookie = response.cookies[browsers.cookie_name(self.link.pk)].value

    @override_settings(ROOT_URLCONF=__name__)
    def test_rest_framework(self):
        client = APIClient()
        header = {"HTTP_AUTHORIZATION": f"Sesame {self.token}"}
        # The first use binds the link, but DRF can't set the cookie.
        self.assertEqual(client.get("/report/", **header).status_code, 200)
        self.assertEqual(client.get("/report/", **header).status_code, 401)
        client.cookies[browsers.cookie_name(self.link.pk)] = self.cookie
        self.assertEqual(client.get("/report/", **header).status_code, 200)

    @override_settings(
        ROOT_URLCONF=__name__,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "sesame-db-guest-contrib-rate-limit-tests",
            }
        },
        SESAME_RATE_LIMIT={"failures": 3, "period": 60},
    )
    def test_rest_framework_other_clients_cannot_lock_out_the_first(self):
        header = {"HTTP_AUTHORIZATION": f"Sesame {self.token}"}
        first, other = APIClient(), APIClient()
        first.cookies[browsers.cookie_name(self.link.pk)] = self.cookie
        self.assertEqual(first.get("/report/", **header).status_code, 200)
        statuses = [
            other.get(
                "/report/", REMOTE_ADDR=f"198.51.100.{index}", **header
            ).status_code
            for index in range(1, 6)
        ]
        self.assertEqual(statuses, [401, 401, 401, 429, 429])
        self.assertEqual(first.get("/report/", **header).status_code, 200)

    def test_channels_request_has_the_handshake_cookies(self):
        name = browsers.cookie_name(self.link.pk)
        request = request_from_scope(
            {
                "type": "websocket",
                "headers": [(b"cookie", f"{name}={self.cookie}".encode())],
            }
        )
        self.assertTrue(browsers.is_bound_here(request, self.link.pk))
        self.assertFalse(
            browsers.is_bound_here(request_from_scope({"headers": []}), self.link.pk)
        )

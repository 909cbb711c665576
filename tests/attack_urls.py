"""
Every HTTP entry point that checks tokens, for tests/test_attacks.py.

Each entry point exists twice: under ``default/``, where it follows
:data:`SESAME_CONFIRM`, and under ``explicit/``, where it asks for
confirmation itself, as ``confirm=True`` does. ``plain/`` checks no token: only
the middleware can use a token there.

"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import include, path
from django.views import View
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from sesame_db.contrib.rest_framework import SesameTokenAuthentication
from sesame_db.decorators import authenticate
from sesame_db.views import LoginView, TokenAuthenticationMixin

from .views import username


def answer(request):
    return HttpResponse(f"{username(request.user)} {request.method}")


async def aanswer(request):
    return answer(request)


class MixinView(TokenAuthenticationMixin, View):
    def get(self, request):
        return answer(request)

    post = get


class ConfirmingAuthentication(SesameTokenAuthentication):
    confirm = True


class ApiView(APIView):  # type: ignore[misc]
    authentication_classes = [SesameTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response(f"{request.user.get_username()} {request.method}")

    post = get


class ConfirmingApiView(ApiView):
    authentication_classes = [ConfirmingAuthentication]


def entry_points(confirm):
    return [
        path("decorator/", authenticate(answer, confirm=confirm)),
        path("adecorator/", authenticate(aanswer, confirm=confirm)),
        path("login/", LoginView.as_view(confirm=confirm, next_page="/done/")),
        path("mixin/", MixinView.as_view(confirm=confirm)),
        path("drf/", (ConfirmingApiView if confirm else ApiView).as_view()),
        path("permanent/", authenticate(answer, confirm=confirm, permanent=True)),
    ]


urlpatterns = [
    path("default/", include(entry_points(None))),
    path("explicit/", include(entry_points(True))),
    path("plain/", answer),
    path("done/", answer),
]

"""
Views for the tests of guest links (tests/test_guests*.py).

Each view answers with who it sees: the user, anonymous or not, and the
recipient of the link, if any.

"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.urls import path
from django.views.generic import View

from sesame_db.decorators import authenticate
from sesame_db.views import LoginView, TokenAuthenticationMixin

from .views import username


def describe(request, pk):
    link = getattr(request, "sesame_link", None)
    recipient = "-" if link is None else (link.recipient or "user link")
    by = "-" if link is None or link.issued_by is None else link.issued_by.username
    return HttpResponse(
        f"report {pk} user={username(request.user)} recipient={recipient} by={by}"
    )


@authenticate(scope="report:{pk}", guests=True)
def shared_report(request, pk):
    return describe(request, pk)


@authenticate(scope="report:{pk}", guests=True)
async def ashared_report(request, pk):
    link = getattr(request, "sesame_link", None)
    recipient = "-" if link is None else (link.recipient or "user link")
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else request.user
    return HttpResponse(f"report {pk} user={username(user)} recipient={recipient}")


@authenticate(scope="report:{pk}", guests=True, confirm=True)
def confirmed_report(request, pk):
    return describe(request, pk)


@authenticate(scope="report:{pk}", guests=True, permanent=True)
def permanent_report(request, pk):
    return describe(request, pk)


@authenticate(scope="report:{pk}", guests=True)
def missing_report(request, pk):
    raise Http404("no such report")


@authenticate(scope="report:{pk}")
def member_report(request, pk):
    return describe(request, pk)


class SharedReportView(TokenAuthenticationMixin, View):
    scope = "report:{pk}"
    guests = True

    def get(self, request, pk):
        return describe(request, pk)


class MemberReportView(TokenAuthenticationMixin, View):
    scope = "report:{pk}"

    def get(self, request, pk):
        return describe(request, pk)


urlpatterns = [
    path("shared/<int:pk>/", shared_report),
    path("ashared/<int:pk>/", ashared_report),
    path("confirmed/<int:pk>/", confirmed_report),
    path("permanent/<int:pk>/", permanent_report),
    path("missing/<int:pk>/", missing_report),
    path("member/<int:pk>/", member_report),
    path("cbv/shared/<int:pk>/", SharedReportView.as_view()),
    path("cbv/member/<int:pk>/", MemberReportView.as_view()),
    path("login/", LoginView.as_view(scope="report:1"), name="login"),
    path("plain/", lambda request: HttpResponse(username(request.user))),
]

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.urls import path

from sesame_db.decorators import authenticate
from sesame_db.views import LoginView


class Boom(Exception):
    pass


@authenticate
def fails_after_authentication(request):
    # A change that ATOMIC_REQUESTS must roll back.
    get_user_model().objects.create_user("created-by-view")
    raise Boom


@authenticate(scope="report:{pk}")
def report(request, pk):
    return HttpResponse(f"report {pk} for {request.user.get_username()}")


@authenticate(confirm=True)
def confirmed(request):
    return HttpResponse(f"hello {request.user.get_username()} ({request.method})")


class FailingLoginView(LoginView):
    def login_success(self):
        raise Boom


urlpatterns = [
    path("fails/", fails_after_authentication),
    path("report/<int:pk>/", report),
    path("confirmed/", confirmed),
    path("login/", LoginView.as_view()),
    path("login/confirm/", LoginView.as_view(confirm=True, next_page="/done/")),
    path("login/fails/", FailingLoginView.as_view()),
]

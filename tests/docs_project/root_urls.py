"""The URL patterns that the documentation's snippets reverse."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path


def page(request, **kwargs):
    return HttpResponse()


urlpatterns = [
    path("sesame/login/", page, name="sesame-login"),
    path("login/link/", page, name="login-link"),
    path("reports/<int:pk>/", page, name="report"),
    path("shared/<int:pk>/", page, name="shared-document"),
    path("documents/<int:pk>/links/", page, name="shared-links"),
]

"""URLs of the end-to-end tests: the admin, a page that a link opens, and login by email."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from tests import store_urls


def home(request: HttpRequest) -> HttpResponse:
    """LOGIN_REDIRECT_URL: who is logged in."""
    user = request.user
    name = user.get_username() if user.is_authenticated else "nobody"
    return HttpResponse(f"<!doctype html><title>Home</title><p id=user>{name}</p>")


urlpatterns = [
    path("", home),
    path("admin/", admin.site.urls),
    # @authenticate(scope="report:{pk}"): a link for one report opens only that report.
    path("report/<int:pk>/", store_urls.report),
    # @authenticate(confirm=True): sesame_db/confirm.html.
    path("confirmed/", store_urls.confirmed),
    # Login by email.
    path("auth/", include("sesame_db.urls")),
]

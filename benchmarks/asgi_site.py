"""
URLs of :mod:`benchmarks.asgi`: the load test's, and django-sesame's decorator on the demo's report view.

django-sesame 3.2 has no async API: under ASGI, its decorator wraps a sync
view, which Django runs in a thread.

"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import include, path
from sesame.decorators import authenticate


@authenticate(scope="report:{pk}")  # type: ignore[untyped-decorator]
def sesame_report(request: HttpRequest, pk: int) -> HttpResponse:
    """The demo's report page behind django-sesame's decorator."""
    return render(
        request,
        "demo/report.html",
        {"title": f"Report {pk}", "body": "", "viewer": request.user},
    )


urlpatterns = [
    path("sesame/reports/<int:pk>/", sesame_report, name="sesame-report"),
    path("", include("benchmarks.load_site")),
]

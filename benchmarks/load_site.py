"""
URLs of the demo site under load: the demo's, and an async twin of its report view.

:mod:`benchmarks.load` points the demo's ``ROOT_URLCONF`` here with
``DEMO_URLCONF``. Under uvicorn it sends stored links to the async view, so
that they go through the async path of sesame_db: the decorator's async
wrapper, ``aget_user()``, ``aauthenticate()``. The demo's own views are sync,
which Django would run in a thread under ASGI.

"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import include, path

from sesame_db.decorators import authenticate


@authenticate(scope="report:{pk}")
async def report(request: HttpRequest, pk: int) -> HttpResponse:
    """Render the demo's report page: nothing here queries the database."""
    return render(
        request,
        "demo/report.html",
        {"title": f"Report {pk}", "body": "", "viewer": request.user},
    )


urlpatterns = [
    path("async/reports/<int:pk>/", report, name="async-report"),
    path("", include("demo_site.urls")),
]

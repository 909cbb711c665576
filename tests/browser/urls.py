"""URLs of the end-to-end tests: the admin, and a page that a link opens."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests import store_urls

urlpatterns = [
    path("admin/", admin.site.urls),
    # @authenticate(scope="report:{pk}"): a link for one report opens only that report.
    path("report/<int:pk>/", store_urls.report),
]

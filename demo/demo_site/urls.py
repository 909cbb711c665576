from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from sesame_db.views import LoginView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", LoginView.as_view(), name="login"),
    # Login by email: sesame_db's own flow. The demo's old address leads there.
    path("auth/", include("sesame_db.urls")),
    path(
        "request-link/",
        RedirectView.as_view(pattern_name="sesame_db:login-request", query_string=True),
        name="request-link",
    ),
    path("logout/", views.logout_view, name="logout"),
    path("reports/<int:pk>/", views.report, name="report"),
    path("reports/<int:pk>/share/", views.share_report, name="share-report"),
    path(
        "reports/<int:pk>/share-with-guest/",
        views.share_with_guest,
        name="share-with-guest",
    ),
    path(
        "reports/<int:pk>/share-with-guest/<int:link_id>/revoke/",
        views.revoke_guest_link,
        name="revoke-guest-link",
    ),
    path("reports/<int:pk>/guest/", views.guest_report, name="guest-report"),
    path("admin/", admin.site.urls),
]

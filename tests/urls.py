from __future__ import annotations

import datetime

from django.contrib import admin
from django.urls import include, path

from sesame_db.views import LoginView

from . import admin_site, views

urlpatterns = [
    # Middleware
    path("", views.show_user, name="home"),
    path("user/", views.show_user),
    path("user/<path:rest>", views.show_user),
    path("auser/", views.ashow_user),
    path("auser/<path:rest>", views.ashow_user),
    # Decorator
    path("decorated/", views.decorated),
    path("adecorated/", views.adecorated),
    path("report/<int:pk>/", views.report),
    path("areport/<int:pk>/", views.areport),
    path("optional/", views.optional),
    path("aoptional/", views.aoptional),
    path("permanent/", views.permanent),
    path("apermanent/", views.apermanent),
    path("no-override/", views.no_override),
    path("ano-override/", views.ano_override),
    path("ano-override-user/", views.ano_override_user),
    path("max-age/", views.max_age),
    path("amax-age/", views.amax_age),
    path("aauser/", views.aauser),
    # LoginView
    path("login/", LoginView.as_view(), name="login"),
    path("login/scoped/", LoginView.as_view(scope="login")),
    path("login/no-redirect/", LoginView.as_view(next_page=None)),
    path("login/welcome/", LoginView.as_view(next_page="/welcome/")),
    path(
        "login/max-age/",
        LoginView.as_view(max_age=datetime.timedelta(minutes=1)),
    ),
    path(
        "login/allowed-hosts/",
        LoginView.as_view(success_url_allowed_hosts={"other.example"}),
    ),
    path("welcome/", views.show_user, name="welcome"),
    # Login by email
    path("auth/", include("sesame_db.urls")),
    # Admin
    path("admin/", admin.site.urls),
    # A second admin site, where tests register a user admin with
    # IssuedTokenUserAdminMixin without touching the default site.
    path("test-admin/", admin_site.site.urls),
]

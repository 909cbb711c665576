"""
The URLs of login by email: ``path("auth/", include("sesame_db.urls"))``.

Names, in the ``sesame_db`` namespace: ``login-request`` (the form that
sends a link), ``login`` (the link's target) and ``login-code`` (the form of
the code).

"""

from __future__ import annotations

from django.urls import path

from .login.views import LoginCodeView, LoginLinkView, LoginRequestView

app_name = "sesame_db"

urlpatterns = [
    path("login/request/", LoginRequestView.as_view(), name="login-request"),
    path("login/", LoginLinkView.as_view(), name="login"),
    path("login/code/", LoginCodeView.as_view(), name="login-code"),
]

"""
URLs for ``tests/test_fuzz.py``: every way a request reaches ``utils.get_user()``.

Use with ``override_settings(ROOT_URLCONF="tests.fuzz_urls")``; ``plain/``
authenticates only with ``MIDDLEWARE=middleware_with_sesame()``.

"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from sesame_db.decorators import authenticate
from sesame_db.views import LoginView

AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESAME_MIDDLEWARE = "sesame_db.middleware.AuthenticationMiddleware"


def middleware_with_sesame() -> list[str]:
    """Return :setting:`MIDDLEWARE` with sesame_db's middleware after Django's."""
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(middleware.index(AUTH_MIDDLEWARE) + 1, SESAME_MIDDLEWARE)
    return middleware


def whoami(request, **kwargs):
    user = request.user
    return HttpResponse(user.get_username() if user.is_authenticated else "anonymous")


urlpatterns = [
    path("decorated/", authenticate(whoami)),
    path("report/<int:pk>/", authenticate(scope="report:{pk}")(whoami)),
    path("login/", LoginView.as_view(next_page="/plain/")),
    path("plain/", whoami),
]

"""
A middleware that logs in users who follow a link with a token.

"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth import alogin, login
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.utils.encoding import escape_uri_path

from .conf import conf
from .exceptions import DatabaseUnavailable
from .responses import unavailable_response
from .utils import aget_user, database_unavailable, get_user

__all__ = ["AuthenticationMiddleware"]


def is_safari(request: HttpRequest) -> bool:
    """
    Tell whether the request comes from Safari or from any browser on iOS.

    This requires the ``ua`` extra; without it, return :obj:`False`.

    """
    try:
        import ua_parser
    except ImportError:
        return False
    result = ua_parser.parse(request.headers.get("User-Agent", ""))
    return (
        result.user_agent is not None
        and result.user_agent.family in {"Safari", "Mobile Safari"}
    ) or (result.os is not None and result.os.family == "iOS")


class AuthenticationMiddleware:
    """
    Look for a token in the URL of every request and log the user in.

    After logging in a user on a GET request, redirect to the same URL
    without the token, so that it doesn't linger in the browser's history or
    leak through the ``Referer`` header. This doesn't happen on Safari and iOS,
    where a redirect right after login triggers the tracking protections of
    ITP, when the ``ua`` extra is installed:

    .. code-block:: console

        $ pip install 'django-sesame-db[ua]'

    Without :mod:`django.contrib.sessions`, the user is authenticated for the
    current request only, and there's no redirect. Without Django's
    :class:`~django.contrib.auth.middleware.AuthenticationMiddleware`, this
    middleware sets ``request.user``.

    Place it just after Django's
    :class:`~django.contrib.auth.middleware.AuthenticationMiddleware`:

    .. code-block:: python

        MIDDLEWARE = [
            ...,
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "sesame_db.middleware.AuthenticationMiddleware",
            ...,
        ]

    When the database fails during the check, it answers 503 Service
    Unavailable instead of running the view.

    It supports sync and async requests.

    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(
        self, request: HttpRequest
    ) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        has_session = hasattr(request, "session")
        try:
            # login() updates the last login date; don't do it twice.
            user = get_user(request, update_last_login=False if has_session else None)
            if has_session and user is not None:
                with database_unavailable():
                    login(request, user)  # type: ignore[arg-type]
        except DatabaseUnavailable:
            return unavailable_response()
        response = self._after_login(request, user, has_session)
        return response if response is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        has_session = hasattr(request, "session")
        try:
            user = await aget_user(
                request, update_last_login=False if has_session else None
            )
            if has_session and user is not None:
                with database_unavailable():
                    await alogin(request, user)  # type: ignore[arg-type]
        except DatabaseUnavailable:
            return unavailable_response()
        response = self._after_login(request, user, has_session)
        return response if response is not None else await self.get_response(request)

    def _after_login(
        self, request: HttpRequest, user: AbstractBaseUser | None, has_session: bool
    ) -> HttpResponse | None:
        if not hasattr(request, "user"):
            # Django's AuthenticationMiddleware isn't installed.
            request.user = user if user is not None else AnonymousUser()  # type: ignore[assignment]
            return None
        # Redirecting POST requests doesn't work well.
        if (
            user is not None
            and has_session
            and request.method == "GET"
            and not is_safari(request)
        ):
            return self.get_redirect(request)
        return None

    @staticmethod
    def get_redirect(request: HttpRequest) -> HttpResponse:
        """Return a redirect to the URL of ``request`` without the token."""
        params = request.GET.copy()
        params.pop(conf.TOKEN_NAME, None)
        # request.path is decoded: escape it, or %3F would become a query string.
        url = escape_uri_path(request.path)
        if params:
            url += "?" + params.urlencode()
        return HttpResponseRedirect(url)

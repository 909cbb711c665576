"""
A middleware that logs in users who follow a link with a token.

"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth import alogin, login
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.urls import resolve

from .conf import conf
from .confirm import (
    SAFE_METHODS,
    csrf_rejection,
    local_url,
    render_confirmation,
    view_confirms,
)
from .exceptions import DatabaseUnavailable, InvalidToken
from .responses import unavailable_response
from .utils import acheck_user, check_user, database_unavailable

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

    Links that need :ref:`confirmation <scanner-safe>` are never used by a
    GET, HEAD, OPTIONS or TRACE request, which mail scanners and link
    previews send:

    * when the URL leads to a view that checks tokens itself
      (:func:`~sesame_db.decorators.authenticate`,
      :class:`~sesame_db.views.LoginView`,
      :class:`~sesame_db.views.TokenAuthenticationMixin` or
      :class:`~sesame_db.contrib.rest_framework.SesameTokenAuthentication`),
      the middleware leaves the token to that view, which asks for
      confirmation if its ``confirm`` option says so, and else uses it once;
    * else, when :data:`SESAME_CONFIRM` is on, the middleware answers with
      the confirmation page itself; the POST request that the page sends is
      checked against CSRF, logs the user in and redirects (303 See Other)
      to the same URL without the token.

    Its redirects never leave the site, whatever the path of the request.

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
        confirming, response = self._confirm(request)
        if response is not None:
            return response
        has_session = hasattr(request, "session")
        user = None
        if confirming is not None:
            try:
                user = check_user(request)
                if has_session and user is not None:
                    with database_unavailable():
                        login(request, user)  # type: ignore[arg-type]
            except InvalidToken:
                pass  # Go on with an anonymous user.
            except DatabaseUnavailable:
                return unavailable_response()
        response = self._after_login(request, user, has_session, confirming)
        return response if response is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        confirming, response = self._confirm(request)
        if response is not None:
            return response
        has_session = hasattr(request, "session")
        user = None
        if confirming is not None:
            try:
                user = await acheck_user(request)
                if has_session and user is not None:
                    with database_unavailable():
                        await alogin(request, user)  # type: ignore[arg-type]
            except InvalidToken:
                pass  # Go on with an anonymous user.
            except DatabaseUnavailable:
                return unavailable_response()
        response = self._after_login(request, user, has_session, confirming)
        return response if response is not None else await self.get_response(request)

    @staticmethod
    def _confirm(request: HttpRequest) -> tuple[bool | None, HttpResponseBase | None]:
        """
        Decide what to do with the token of ``request``.

        Return ``(confirming, response)``: ``confirming`` is :obj:`None` when
        the token must be left alone, else whether this request confirms a
        link; ``response``, if set, is the answer instead of the view.

        """
        if conf.TOKEN_NAME not in request.GET:
            return False, None
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Http404:
            confirms = None
        else:
            confirms = view_confirms(match.func)
        if confirms is not None:
            # The view checks tokens itself: leave the token to it. Using it
            # here too would count two uses, and its confirmation page would
            # never show, since a scanner's GET would use the link here.
            return None, None
        if not conf.CONFIRM:
            return False, None
        if request.method in SAFE_METHODS:
            return None, render_confirmation(request)
        # A POST from the confirmation page, or another unsafe method.
        return True, csrf_rejection(request)

    def _after_login(
        self,
        request: HttpRequest,
        user: AbstractBaseUser | None,
        has_session: bool,
        confirming: bool | None,
    ) -> HttpResponse | None:
        if not hasattr(request, "user"):
            # Django's AuthenticationMiddleware isn't installed.
            request.user = user if user is not None else AnonymousUser()  # type: ignore[assignment]
            return None
        if confirming and has_session:
            # The view isn't meant to get the confirmation's POST: send the
            # browser back to the page, with a GET, logged in or not.
            response = self.get_redirect(request)
            response.status_code = HTTPStatus.SEE_OTHER
            return response
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
        """Return a redirect to the URL of ``request`` without the token, on this site."""
        return HttpResponseRedirect(local_url(request, keep_token=False))

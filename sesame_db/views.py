"""
A view that logs in users who follow a link with a token.

"""

from __future__ import annotations

import datetime
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.views import RedirectURLMixin
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.utils.functional import lazy
from django.views.generic import View

from .confirm import ALL_ALIASES, confirm_enabled, mark_view, needs_confirmation
from .decorators import decorate
from .exceptions import DatabaseUnavailable, InvalidToken
from .responses import is_rate_limited, rate_limited_response, unavailable_response
from .utils import check_user, database_unavailable, require_scope

__all__ = ["LoginView", "TokenAuthenticationMixin"]


def _login_redirect_url() -> str:
    return str(settings.LOGIN_REDIRECT_URL)


class LoginView(RedirectURLMixin, View):
    """
    Log in the user authenticated by the token in the URL of a GET request.

    After login, redirect to the URL in the ``next`` query string parameter,
    if it's safe, or else to ``next_page``, which defaults to
    :setting:`LOGIN_REDIRECT_URL`. When ``next_page`` is :obj:`None`, answer
    204 No Content instead. Answer 403 Forbidden when the token is missing or
    invalid, and 429 Too Many Requests when the client is over
    :data:`SESAME_RATE_LIMIT`.

    Set the ``scope`` attribute to expect a :ref:`scoped token
    <scoped-tokens>`, and ``max_age`` to override :data:`SESAME_MAX_AGE`.

    ``next_page``, ``redirect_field_name``, ``success_url_allowed_hosts`` and
    ``get_default_redirect_url()`` work like in Django's
    :class:`~django.contrib.auth.views.LoginView`: only URLs on the current
    host, or on ``success_url_allowed_hosts``, are followed.

    Set ``confirm`` to :obj:`True` for :ref:`scanner-safe links
    <scanner-safe>`: a GET request gets a confirmation page and only the POST
    request that it sends logs the user in. ``confirm`` defaults to
    :data:`SESAME_CONFIRM`.

    The view doesn't run in the transaction of :setting:`ATOMIC_REQUESTS
    <DATABASE-ATOMIC_REQUESTS>`, so the use of a link is recorded even if a
    later step fails.

    """

    http_method_names = ["get", "head", "post", "options"]

    scope: str = ""
    max_age: float | datetime.timedelta | None = None
    confirm: bool | None = None
    # Read LOGIN_REDIRECT_URL when used, not when this module is imported.
    next_page: Any = lazy(_login_redirect_url, str)()

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        # Use the token outside of ATOMIC_REQUESTS; see confirm.atomic_requests().
        view._non_atomic_requests = ALL_ALIASES  # type: ignore[attr-defined]
        mark_view(view, initkwargs.get("confirm", cls.confirm))
        return view

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not hasattr(request, "user"):
            raise ImproperlyConfigured("LoginView requires django.contrib.auth")
        if not hasattr(request, "session"):
            raise ImproperlyConfigured("LoginView requires django.contrib.sessions")
        if (response := needs_confirmation(request, self.confirm)) is not None:
            return response
        try:
            user = check_user(request, self.scope, self.max_age)
            if user is None:
                return self.login_failed()
            with database_unavailable():
                login(request, user)  # type: ignore[arg-type]
        except InvalidToken as exc:
            if is_rate_limited(exc):
                return self.login_rate_limited()
            return self.login_failed()
        except DatabaseUnavailable:
            return self.login_unavailable()
        return self.login_success()

    def setup(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().setup(request, *args, **kwargs)
        # POST only confirms scanner-safe links; decided per request, since
        # SESAME_CONFIRM may change.
        if not confirm_enabled(self.confirm):
            self.http_method_names = [
                name for name in self.http_method_names if name != "post"
            ]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return self.get(request, *args, **kwargs)

    def login_failed(self) -> HttpResponseBase:
        """Raise :exc:`~django.core.exceptions.PermissionDenied`; override to answer otherwise."""
        raise PermissionDenied from None

    def login_rate_limited(self) -> HttpResponseBase:
        """Answer 429 Too Many Requests when the client is over :data:`SESAME_RATE_LIMIT`; override to answer otherwise."""
        return rate_limited_response()

    def login_unavailable(self) -> HttpResponseBase:
        """Answer 503 Service Unavailable when the database fails during the check; override to answer otherwise."""
        return unavailable_response()

    def login_success(self) -> HttpResponseBase:
        """Redirect to the success URL, or answer 204 when ``next_page`` is :obj:`None`."""
        if self.next_page is None:
            return HttpResponse(status=HTTPStatus.NO_CONTENT)
        return HttpResponseRedirect(self.get_success_url())


class TokenAuthenticationMixin:
    """
    Authenticate the user of a class-based view with a token in the URL.

    It's the :func:`~sesame_db.decorators.authenticate` decorator for
    class-based views, with the same behaviour and the same code: with a
    valid token, ``request.user`` is the token's user in the view; else the
    response is 403 Forbidden, or 429 Too Many Requests over
    :data:`SESAME_RATE_LIMIT`, or 503 Service Unavailable when the database
    fails during the check. Put it first among the view's bases:

    .. code-block:: python

        from django.views.generic import DetailView
        from sesame_db.views import TokenAuthenticationMixin

        class ReportView(TokenAuthenticationMixin, DetailView):
            model = Report
            scope = "reports.report:{pk}"

    Its attributes are the decorator's arguments, and may be passed to
    ``as_view()``:

    ``scope``
        The :ref:`scope <scoped-tokens>` that the token must have, formatted
        with the view's ``args`` and ``kwargs``, as in ``"report:{pk}"``;
        :func:`~sesame_db.utils.get_object_scope` makes scopes for model
        objects. Override :meth:`get_scope` to compute it otherwise.
    ``max_age``
        Overrides :data:`SESAME_MAX_AGE`.
    ``required``
        Set it to :obj:`False` to run the view with an anonymous user when
        the token is missing or invalid.
    ``permanent``
        Set it to :obj:`True` to log the user in.
    ``override``
        Set it to :obj:`False` to skip the token when a user is logged in.
    ``confirm``
        Set it to :obj:`True` for :ref:`scanner-safe links <scanner-safe>`;
        the view then needs a ``post()`` method, which the confirmation page
        calls, such as ``post = get``. Defaults to :data:`SESAME_CONFIRM`.
    ``guests``
        Set it to :obj:`True` to accept :doc:`guest links </guests>`, which
        let the request through without logging anyone in;
        ``request.sesame_link`` is the link.

    Requests with a method that the view doesn't handle get 405 Method Not
    Allowed without using the token.

    """

    scope: str = ""
    max_age: float | datetime.timedelta | None = None
    required: bool = True
    permanent: bool = False
    override: bool = True
    confirm: bool | None = None
    guests: bool = False

    # Set by View.setup().
    args: Any
    kwargs: Any

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)  # type: ignore[misc]
        # Use the token outside of ATOMIC_REQUESTS; see confirm.atomic_requests().
        view._non_atomic_requests = ALL_ALIASES
        mark_view(view, initkwargs.get("confirm", cls.confirm))
        return view

    def get_scope(self) -> str:
        """Return the scope that the token must have: ``scope`` formatted with the view's arguments."""
        return self.scope.format(*self.args, **self.kwargs)

    def _token_scope(self, *args: Any, **kwargs: Any) -> str:
        # Computed when a token is checked, not before.
        scope = self.get_scope()
        require_scope(self.guests, scope, type(self).__name__)
        return scope

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        parent = super().dispatch  # type: ignore[misc]
        method = (request.method or "").lower()
        if method not in self.http_method_names or not hasattr(self, method):  # type: ignore[attr-defined]
            return parent(request, *args, **kwargs)
        view: Any = parent
        if getattr(self, "view_is_async", False):

            async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await parent(request, *args, **kwargs)

        return decorate(
            view,
            self._token_scope,
            self.max_age,
            required=self.required,
            permanent=self.permanent,
            override=self.override,
            confirm=self.confirm,
            guests=self.guests,
        )(request, *args, **kwargs)

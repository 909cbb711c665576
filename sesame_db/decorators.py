"""
A view decorator that authenticates the user with a token in the URL.

"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction
from django.contrib.auth import alogin, login
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponseBase

from . import browsers
from .confirm import ALL_ALIASES, atomic_requests, mark_view, needs_confirmation
from .exceptions import DatabaseUnavailable, InvalidToken
from .responses import rejected_response, unavailable_response
from .utils import acheck_link, check_link, database_unavailable, require_scope

if TYPE_CHECKING:
    from .models import IssuedToken

__all__ = ["authenticate"]

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])


def _set_request_user(
    request: HttpRequest, user: AbstractBaseUser | AnonymousUser
) -> None:
    request.user = user  # type: ignore[assignment]

    # request.auser() must return the same user, for async code and
    # decorators such as login_required applied under this one.
    async def auser() -> AbstractBaseUser | AnonymousUser:
        return user

    request.auser = auser  # type: ignore[assignment]


@overload
def authenticate(
    view: ViewFunc,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    required: bool = True,
    permanent: bool = False,
    override: bool = True,
    confirm: bool | None = None,
    guests: bool = False,
) -> ViewFunc: ...


@overload
def authenticate(
    view: None = None,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    required: bool = True,
    permanent: bool = False,
    override: bool = True,
    confirm: bool | None = None,
    guests: bool = False,
) -> Callable[[ViewFunc], ViewFunc]: ...


def authenticate(
    view: ViewFunc | None = None,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    required: bool = True,
    permanent: bool = False,
    override: bool = True,
    confirm: bool | None = None,
    guests: bool = False,
) -> ViewFunc | Callable[[ViewFunc], ViewFunc]:
    """
    Decorate a view to authenticate the user with a token in the URL.

    With a valid token, ``request.user`` is the user in the view. Else
    :exc:`~django.core.exceptions.PermissionDenied` is raised, which Django
    turns into a 403 Forbidden response; when the client is over
    :data:`SESAME_RATE_LIMIT`, the response is 429 Too Many Requests. When
    the database fails during the check, the response is 503 Service
    Unavailable, even if the token isn't ``required``.

    :func:`authenticate` applies to a view directly or with arguments::

        @authenticate
        def view(request): ...

        @authenticate(scope="report:{pk}")
        def report(request, pk): ...

    It works with sync and async views.

    ``scope`` is formatted with the view's positional and keyword arguments,
    so ``"report:{pk}"`` scopes the token to one report: a :ref:`scoped token
    <scoped-tokens>` is expected.

    If ``max_age`` is set, it overrides the :data:`SESAME_MAX_AGE` setting.

    Set ``required`` to :obj:`False` to run the view with an
    :class:`~django.contrib.auth.models.AnonymousUser` when the token is
    missing or invalid, instead of raising an exception.

    The user isn't logged in: the token grants access to this view only. Set
    ``permanent`` to :obj:`True` to call :func:`~django.contrib.auth.login`
    too; that requires :mod:`django.contrib.sessions`.

    A token overrides the logged-in user, if any. Set ``override`` to
    :obj:`False` to skip authentication when a user is already logged in.

    Set ``confirm`` to :obj:`True` for :ref:`scanner-safe links
    <scanner-safe>`: GET and HEAD requests with a token get a confirmation
    page, and the token is used only by the POST request that the page sends,
    protected against CSRF; the view then runs on that POST. ``confirm``
    defaults to :data:`SESAME_CONFIRM`.

    Set ``guests`` to :obj:`True` to accept :doc:`guest links </guests>`
    too, which ``scope`` must then be set for: a valid guest link lets the
    request through without logging anyone in, so ``request.user`` stays
    what it was, anonymous or the visitor's own. Whatever the link,
    ``request.sesame_link`` is its :class:`~sesame_db.models.IssuedToken`
    when it's stored, with the ``recipient`` and ``issued_by`` of a guest
    link. Without ``guests``, a guest link is refused with the reason
    :attr:`~sesame_db.exceptions.Reason.GUEST_LINK`. A guest link that is
    bound to a browser gets its cookie on the response.

    The token is used, and its use recorded, before the view runs, outside of
    the transaction that :setting:`ATOMIC_REQUESTS <DATABASE-ATOMIC_REQUESTS>`
    opens; the view still runs inside such a transaction. So a view that
    raises rolls back its own changes, but not the use of the link.

    """
    require_scope(guests, scope, "authenticate")
    if view is None:
        return functools.partial(
            authenticate,
            scope=scope,
            max_age=max_age,
            required=required,
            permanent=permanent,
            override=override,
            confirm=confirm,
            guests=guests,
        )
    return decorate(
        view,
        scope.format,
        max_age,
        required=required,
        permanent=permanent,
        override=override,
        confirm=confirm,
        guests=guests,
    )


def decorate(
    view: ViewFunc,
    get_scope: Callable[..., str],
    max_age: float | datetime.timedelta | None,
    *,
    required: bool,
    permanent: bool,
    override: bool,
    confirm: bool | None,
    guests: bool = False,
) -> ViewFunc:
    """
    Wrap ``view`` like :func:`authenticate`; ``get_scope(*args, **kwargs)`` returns the scope of a request.

    :class:`~sesame_db.views.TokenAuthenticationMixin` wraps the views of
    its instances with it.

    """

    def check_permanent(request: HttpRequest) -> None:
        if permanent and not hasattr(request, "session"):
            raise ImproperlyConfigured(
                "authenticate(permanent=True) requires django.contrib.sessions"
            )

    def rejected(request: HttpRequest, exc: InvalidToken) -> HttpResponseBase | None:
        _set_request_user(request, AnonymousUser())
        return rejected_response(exc) if required else None

    def set_user(
        request: HttpRequest,
        user: AbstractBaseUser | None,
        link: IssuedToken | None = None,
    ) -> None:
        if user is None and link is not None:
            # A guest link: the request goes through, and no one is logged
            # in; request.user stays what it was.
            if not hasattr(request, "user"):
                _set_request_user(request, AnonymousUser())
            return
        _set_request_user(request, user if user is not None else AnonymousUser())
        if required and user is None:
            raise PermissionDenied from None

    def bind(request: HttpRequest, response: Any) -> Any:
        link = getattr(request, "sesame_link", None)
        if (
            link is not None
            and link.bind_to_browser
            and isinstance(response, HttpResponseBase)
        ):
            browsers.set_cookie(response, request, link)
        return response

    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if not override and hasattr(request, "auser"):
                current = await request.auser()
                if current.is_authenticated:
                    # The lazy request.user cannot be evaluated in async code.
                    _set_request_user(request, current)
                    return await view(request, *args, **kwargs)
            check_permanent(request)
            if (response := needs_confirmation(request, confirm)) is not None:
                return response
            try:
                user, link = await acheck_link(
                    request,
                    get_scope(*args, **kwargs),
                    max_age,
                    guests=guests,
                )
                set_user(request, user, link)
                if permanent and user is not None:
                    with database_unavailable():
                        await alogin(request, user)  # type: ignore[arg-type]
            except InvalidToken as exc:
                if (response := rejected(request, exc)) is not None:
                    return response
            except DatabaseUnavailable:
                return unavailable_response()
            return bind(request, await view(request, *args, **kwargs))

        mark_view(async_wrapper, confirm)
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not override and hasattr(request, "user") and request.user.is_authenticated:
            with atomic_requests(view):
                return view(request, *args, **kwargs)
        check_permanent(request)
        if (response := needs_confirmation(request, confirm)) is not None:
            return response
        try:
            user, link = check_link(
                request,
                get_scope(*args, **kwargs),
                max_age,
                guests=guests,
            )
            set_user(request, user, link)
            if permanent and user is not None:
                with database_unavailable():
                    login(request, user)  # type: ignore[arg-type]
        except InvalidToken as exc:
            if (response := rejected(request, exc)) is not None:
                return response
        except DatabaseUnavailable:
            return unavailable_response()
        with atomic_requests(view):
            return bind(request, view(request, *args, **kwargs))

    # Use the token outside of ATOMIC_REQUESTS; see atomic_requests().
    wrapper._non_atomic_requests = ALL_ALIASES  # type: ignore[attr-defined]
    mark_view(wrapper, confirm)
    return wrapper  # type: ignore[return-value]

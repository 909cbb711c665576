"""
Create tokens and authenticate users with them.

"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError
from django.db.models import Model
from django.http import HttpRequest
from django.utils import timezone

from . import backends, ratelimit, verify
from . import store as _store
from .conf import conf
from .exceptions import DatabaseUnavailable, InvalidToken, Reason
from .tokens import create_token

if TYPE_CHECKING:
    from .models import IssuedToken

__all__ = [
    "acheck_link",
    "aget_user",
    "check_link",
    "get_guest_query_string",
    "get_guest_token",
    "get_object_scope",
    "get_parameters",
    "get_query_string",
    "get_token",
    "get_user",
    "issue_guest_token",
    "issue_guest_tokens",
    "issue_token",
    "issue_tokens",
]

logger = logging.getLogger("sesame_db")

# Errors of the database itself, as opposed to programming errors such as a
# missing table (ProgrammingError), which must stay loud: connections lost or
# refused, statement timeouts, deadlocks, serialization failures.
DATABASE_ERRORS = (OperationalError, InterfaceError)


class database_unavailable:  # lower case, like a context manager function
    """
    Turn the database errors of the block into :exc:`~sesame_db.exceptions.DatabaseUnavailable`, and log them.

    :func:`get_user` checks tokens in such a block; views log users in in
    one too, since :func:`~django.contrib.auth.login` writes to the database.

    """

    # A class rather than a generator: it's on the path of every token.
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, DATABASE_ERRORS):
            logger.error(
                "Cannot use a token: the database failed: %s", exc, exc_info=exc
            )
            raise DatabaseUnavailable(f"cannot use the token: {exc}") from exc


def get_token(
    user: AbstractBaseUser,
    scope: str = "",
    *,
    store: bool | None = None,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
) -> str:
    """
    Create a token that authenticates ``user``.

    Set ``scope`` to create a :ref:`scoped token <scoped-tokens>`.

    :func:`get_user` accepts this token.

    When ``store`` is :obj:`True`, or when it's :obj:`None` and
    :data:`SESAME_STORE` is set, the token is recorded in the database store
    as an :class:`~sesame_db.models.IssuedToken`, which can then be revoked.
    Stored tokens accept the other keyword arguments: ``max_age`` is their
    expiry, defaulting to :data:`SESAME_MAX_AGE`; ``max_uses`` limits how
    many times they can be used; ``label`` describes them in the admin;
    ``issued_by`` records who created them.

    """
    # The other functions that create tokens call this one; it's on the path
    # of every link sent, so it's one call deep into the format's module.
    if store is None:
        store = conf.STORE
    if store:
        token, _ = _store.issue(
            user,
            scope,
            max_age=max_age,
            max_uses=max_uses,
            label=label,
            issued_by=issued_by,
        )
        return token
    if max_age is not None or max_uses is not None or label or issued_by is not None:
        raise ValueError(
            "max_age, max_uses, label and issued_by require a stored token: pass store=True or set SESAME_STORE"
        )
    return create_token(user, scope)


def get_parameters(
    user: AbstractBaseUser,
    scope: str = "",
    *,
    store: bool | None = None,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
) -> dict[str, str]:
    """
    Create a :class:`dict` of query string parameters that authenticate ``user``.

    Use this function to add a token to a URL that already has a query string.
    Arguments are those of :func:`get_token`.

    """
    return {
        conf.TOKEN_NAME: get_token(
            user,
            scope,
            store=store,
            max_age=max_age,
            max_uses=max_uses,
            label=label,
            issued_by=issued_by,
        )
    }


def get_query_string(
    user: AbstractBaseUser,
    scope: str = "",
    *,
    store: bool | None = None,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
) -> str:
    """
    Create a query string, starting with ``?``, that authenticates ``user``.

    Use this function to add a token to a URL that has no query string.
    Arguments are those of :func:`get_token`.

    """
    return "?" + urlencode(
        {
            conf.TOKEN_NAME: get_token(
                user,
                scope,
                store=store,
                max_age=max_age,
                max_uses=max_uses,
                label=label,
                issued_by=issued_by,
            )
        }
    )


def issue_token(
    user: AbstractBaseUser,
    scope: str = "",
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
) -> tuple[str, IssuedToken]:
    """
    Issue a stored token for ``user`` and return it with its :class:`~sesame_db.models.IssuedToken`.

    Arguments are those of :func:`get_token`; ``request``, if given, is
    recorded in the ``issued`` audit event.

    """
    return _store.issue(
        user,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
    )


def issue_tokens(
    users: Iterable[AbstractBaseUser],
    scope: str = "",
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
) -> list[tuple[str, IssuedToken]]:
    """
    Issue one stored token per user in ``users``, in batches, in one transaction.

    Return ``(token, issued_token)`` pairs in the order of ``users``. Use it
    to email links to many users at once. Arguments are those of
    :func:`issue_token`.

    The tokens take one ``INSERT`` per thousand users, and their audit events
    as many more: 20 statements for 10,000 users, rather than a round trip
    per user. On SQLite with Django 5.2, statements are smaller: see
    :ref:`bulk issuance <bulk-issuance>`.

    """
    return _store.issue_many(
        users,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
    )


def issue_guest_tokens(
    recipients: Iterable[str],
    scope: str,
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    bind_to_browser: bool = False,
) -> list[tuple[str, IssuedToken]]:
    """
    Issue one :doc:`guest link </guests>` per recipient in ``recipients``, in batches, in one transaction.

    Return ``(token, issued_token)`` pairs in the order of ``recipients``,
    like :func:`issue_tokens`, whose batches they share: sharing with 500
    recipients takes one ``INSERT`` of links and one of ``issued`` events
    on PostgreSQL. Arguments are those of :func:`get_guest_token`.

    """
    return _store.issue_guests(
        recipients,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=bind_to_browser,
    )


def issue_guest_token(
    recipient: str,
    scope: str,
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    bind_to_browser: bool = False,
) -> tuple[str, IssuedToken]:
    """
    Issue a :doc:`guest link </guests>` for ``recipient`` and return its token with its :class:`~sesame_db.models.IssuedToken`.

    Arguments are those of :func:`get_guest_token`.

    """
    [(token, record)] = issue_guest_tokens(
        [recipient],
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=bind_to_browser,
    )
    return token, record


def get_guest_token(
    recipient: str,
    scope: str,
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    bind_to_browser: bool = False,
) -> str:
    """
    Create a token for a :doc:`guest link </guests>`: a link shared with ``recipient``, who has no account.

    ``recipient`` is an email address or a name, at most 254 characters,
    recorded with the link and with each of its audit events. ``scope`` is
    required: a guest link opens one thing, such as
    :func:`get_object_scope` of a report.

    A guest link never logs anyone in: only views that allow guests accept
    it (:func:`~sesame_db.decorators.authenticate` with ``guests=True``),
    and they see it as ``request.sesame_link``. It's always stored, so
    the other keyword arguments are those of :func:`get_token`'s stored
    links; ``request``, if given, is recorded in the ``issued`` audit
    event; with ``bind_to_browser``, the link works only in the first
    browser that opens it.

    Raise :exc:`ValueError` if ``recipient`` or ``scope`` is empty, or if
    ``recipient`` contains control characters, such as a line break.

    """
    token, _ = issue_guest_token(
        recipient,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=bind_to_browser,
    )
    return token


def get_guest_query_string(
    recipient: str,
    scope: str,
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    bind_to_browser: bool = False,
) -> str:
    """
    Create a query string, starting with ``?``, for a :doc:`guest link </guests>`.

    Arguments are those of :func:`get_guest_token`.

    """
    token = get_guest_token(
        recipient,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=bind_to_browser,
    )
    return "?" + urlencode({conf.TOKEN_NAME: token})


_action_re = re.compile(r"[A-Za-z0-9_-]*")


def get_object_scope(
    obj: Model | type[Model], pk: Any = None, *, action: str = ""
) -> str:
    """
    Return the :ref:`scope <scoped-tokens>` of links to one object, such as ``"reports.report:42"``.

    ``obj`` is a model instance, or a model class and ``pk`` the primary key,
    which may also be a placeholder of the URL pattern, such as ``"{pk}"``,
    for :func:`~sesame_db.decorators.authenticate` and
    :class:`~sesame_db.views.TokenAuthenticationMixin` to fill in. The scope
    is the model's label and the primary key: a link to one report doesn't
    open another report, nor an invoice with the same primary key.

    Set ``action`` to tell links to the same object apart, such as
    ``"view"`` and ``"edit"``: it's prepended, as in
    ``"edit:reports.report:42"``. It may contain letters, digits, ``_`` and
    ``-``; model labels always contain a dot, so scopes with and without an
    action never collide.

    Raise :exc:`ValueError` if the instance has no primary key yet or if
    ``action`` contains other characters.

    """
    if isinstance(obj, type):
        if pk is None:
            raise ValueError("get_object_scope(model) requires a primary key")
    else:
        if pk is not None:
            raise TypeError("get_object_scope(instance) doesn't take a primary key")
        pk = obj.pk
        if pk is None:
            raise ValueError(
                f"{obj._meta.label} instance has no primary key: save it first"
            )
    if _action_re.fullmatch(action) is None:
        raise ValueError(
            f"action may contain only letters, digits, '_' and '-', not {action!r}"
        )
    scope = f"{obj._meta.label_lower}:{pk}"
    return f"{action}:{scope}" if action else scope


def _split(request_or_token: Any, token: str | None) -> tuple[Any, str | None]:
    if token is not None:
        # An explicit token, e.g. from an Authorization header: the request,
        # if any, is only recorded in the audit trail.
        if not isinstance(token, str):
            raise TypeError(f"token must be a string, got {type(token).__name__}")
        if request_or_token is not None and not hasattr(request_or_token, "META"):
            raise TypeError(
                f"get_user(..., token=...) expects an HttpRequest or None, got {type(request_or_token).__name__}"
            )
        return request_or_token, token
    if isinstance(request_or_token, str):
        return None, request_or_token
    try:
        query = request_or_token.GET
    except AttributeError:
        # django-sesame's text, spelling included, so that code matching it
        # keeps working; then the type that was passed.
        raise TypeError(
            f"get_user() expects an HTTPRequest or a token, got {type(request_or_token).__name__}"
        ) from None
    return request_or_token, query.get(conf.TOKEN_NAME)


def get_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool | None = False,
    token: str | None = None,
) -> AbstractBaseUser | None:
    """
    Return the user authenticated by a token, or :obj:`None`.

    ``request_or_token`` is an :class:`~django.http.HttpRequest` whose query
    string contains a token in the :data:`SESAME_TOKEN_NAME` parameter, or
    the token itself, for uses outside of an HTTP request, such as a
    WebSocket message.

    If ``scope`` is set, a :ref:`scoped token <scoped-tokens>` is expected.

    If ``max_age`` is set, it overrides the :data:`SESAME_MAX_AGE` setting.

    :func:`get_user` doesn't log the user in; call
    :func:`~django.contrib.auth.login` for that.

    When :data:`SESAME_ONE_TIME` is set, the token is consumed by updating
    the user's last login date, whatever ``update_last_login`` says. Set
    ``update_last_login`` to :obj:`True` to update the last login date for
    other tokens too. :obj:`None`, django-sesame's default, means the same
    as :obj:`False`.

    Pass ``token`` to check a token that comes from elsewhere than the query
    string, such as an ``Authorization`` header, while still recording the
    request in the audit trail and counting failures of its client: then
    ``request_or_token`` is the :class:`~django.http.HttpRequest`, or
    :obj:`None`, and its query string isn't read.

    Raise :exc:`~sesame_db.exceptions.DatabaseUnavailable` if the database
    fails during the check, for example when the connection is lost or a
    statement times out: the token is then neither accepted nor rejected.

    Raise :exc:`TypeError` if ``request_or_token`` is neither a request nor a
    string, or if ``token`` is set and ``request_or_token`` isn't a request
    or :obj:`None`.

    """
    request, token = _split(request_or_token, token)
    user, _, _ = _check_user(request, token, scope, max_age, bool(update_last_login))
    return user


async def aget_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool | None = False,
    token: str | None = None,
) -> AbstractBaseUser | None:
    """See :func:`get_user`."""
    request, token = _split(request_or_token, token)
    user, _, _ = await _acheck_user(
        request, token, scope, max_age, bool(update_last_login)
    )
    return user


def check_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool = False,
    token: str | None = None,
) -> AbstractBaseUser | None:
    """
    Return the user authenticated by a token, :obj:`None` without a token, or raise why it was rejected.

    It's :func:`get_user` for the entry points of sesame_db, which turn the
    outcome into a response with :mod:`sesame_db.responses`: it raises
    :exc:`~sesame_db.exceptions.InvalidToken` when the token is rejected,
    with the reason :attr:`~sesame_db.exceptions.Reason.RATE_LIMITED` when
    the client or the link is over :data:`SESAME_RATE_LIMIT`, and
    :exc:`~sesame_db.exceptions.DatabaseUnavailable` like :func:`get_user`.

    """
    request, token = _split(request_or_token, token)
    user, _, rejection = _check_user(request, token, scope, max_age, update_last_login)
    if rejection is not None:
        raise rejection
    return user


async def acheck_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool = False,
    token: str | None = None,
) -> AbstractBaseUser | None:
    """See :func:`check_user`."""
    request, token = _split(request_or_token, token)
    user, _, rejection = await _acheck_user(
        request, token, scope, max_age, update_last_login
    )
    if rejection is not None:
        raise rejection
    return user


def require_scope(guests: bool, scope: str, entry: str) -> None:
    """
    Raise :exc:`~django.core.exceptions.ImproperlyConfigured` if ``entry`` accepts guest links without a ``scope``.

    Guest links always have a scope, so such an entry point would refuse
    every one of them. Every entry point that accepts guest links calls
    this: when it's configured, where it can be, and at each check.

    """
    if guests and not scope:
        raise ImproperlyConfigured(
            f"{entry}(guests=True) requires a scope: guest links always have one"
        )


def check_link(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    guests: bool = False,
    update_last_login: bool = False,
    token: str | None = None,
) -> tuple[AbstractBaseUser | None, IssuedToken | None]:
    """
    Return the user and the stored link of a token, ``(None, None)`` without a token, or raise why it was rejected.

    It's :func:`check_user` for the entry points that accept :doc:`guest
    links </guests>`: with ``guests``, a valid guest link returns ``(None,
    link)``, where ``link`` is its :class:`~sesame_db.models.IssuedToken`;
    without, it's rejected with
    :attr:`~sesame_db.exceptions.Reason.GUEST_LINK`. A user's stored link
    returns ``(user, link)``, and a stateless token ``(user, None)``.
    ``request.sesame_link`` is set to the link when there's one.

    Raise :exc:`~django.core.exceptions.ImproperlyConfigured` for
    ``guests`` without a ``scope``, token or not: guest links always have
    one.

    """
    require_scope(guests, scope, "check_link")
    request, token = _split(request_or_token, token)
    user, link, rejection = _check_user(
        request, token, scope, max_age, update_last_login, guests
    )
    if rejection is not None:
        raise rejection
    return user, link


async def acheck_link(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    guests: bool = False,
    update_last_login: bool = False,
    token: str | None = None,
) -> tuple[AbstractBaseUser | None, IssuedToken | None]:
    """See :func:`check_link`."""
    require_scope(guests, scope, "acheck_link")
    request, token = _split(request_or_token, token)
    user, link, rejection = await _acheck_user(
        request, token, scope, max_age, update_last_login, guests
    )
    if rejection is not None:
        raise rejection
    return user, link


def _rejection(
    request: HttpRequest | None, rejections: list[InvalidToken]
) -> InvalidToken:
    for exc in rejections:
        if exc.reason is Reason.RATE_LIMITED:
            # For ratelimit.is_rate_limited(request), in views that run
            # after a rejected token, such as with the middleware.
            ratelimit.remember(request)
            return exc
    if rejections:
        return rejections[-1]
    # No backend that checks tokens with sesame_db accepted the credentials.
    return InvalidToken(Reason.MALFORMED, "Bad token: no backend checked it")


def _set_link(request: HttpRequest | None, link: IssuedToken | None) -> None:
    # request.sesame_link: the stored link that was used, for views.
    if request is not None and link is not None:
        request.sesame_link = link  # type: ignore[attr-defined]


def _check_user(
    request: HttpRequest | None,
    token: str | None,
    scope: str,
    max_age: float | datetime.timedelta | None,
    update_last_login: bool,
    guests: bool = False,
) -> tuple[AbstractBaseUser | None, IssuedToken | None, InvalidToken | None]:
    if token is None:
        return None, None, None
    with database_unavailable():
        # backends.authenticate(), like Django's, sets user.backend, which
        # login() needs; the backend returns None for a rejected token, and
        # verify tells why, or which guest link was used.
        with verify.capture(guests=guests) as outcome:
            user: AbstractBaseUser | None = backends.authenticate(
                request, sesame_token=token, scope=scope, max_age=max_age
            )
        if user is not None and update_last_login and not conf.ONE_TIME:
            user.last_login = timezone.now()
            user.save(update_fields=["last_login"])
    # The rejection is returned, not raised: get_user() has no use for it.
    return _result(request, user, outcome)


def _result(
    request: HttpRequest | None,
    user: AbstractBaseUser | None,
    outcome: verify.Outcome,
) -> tuple[AbstractBaseUser | None, IssuedToken | None, InvalidToken | None]:
    link = outcome.link
    if user is not None or (link is not None and link.is_guest):
        _set_link(request, link)
        return user, link, None
    return None, None, _rejection(request, outcome)


async def _acheck_user(
    request: HttpRequest | None,
    token: str | None,
    scope: str,
    max_age: float | datetime.timedelta | None,
    update_last_login: bool,
    guests: bool = False,
) -> tuple[AbstractBaseUser | None, IssuedToken | None, InvalidToken | None]:
    if token is None:
        return None, None, None
    with database_unavailable():
        with verify.capture(guests=guests) as outcome:
            user: AbstractBaseUser | None = await backends.aauthenticate(
                request, sesame_token=token, scope=scope, max_age=max_age
            )
        if user is not None and update_last_login and not conf.ONE_TIME:
            user.last_login = timezone.now()
            await user.asave(update_fields=["last_login"])
    return _result(request, user, outcome)

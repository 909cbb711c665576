"""
Create tokens and authenticate users with them.

"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import aauthenticate, authenticate
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from .conf import conf
from .tokens import create_token

__all__ = ["aget_user", "get_parameters", "get_query_string", "get_token", "get_user"]


def get_token(user: AbstractBaseUser, scope: str = "") -> str:
    """
    Create a signed token that authenticates ``user``.

    Set ``scope`` to create a :ref:`scoped token <scoped-tokens>`.

    :func:`get_user` accepts this token.

    """
    return create_token(user, scope)


def get_parameters(user: AbstractBaseUser, scope: str = "") -> dict[str, str]:
    """
    Create a :class:`dict` of query string parameters that authenticate ``user``.

    Set ``scope`` to create a :ref:`scoped token <scoped-tokens>`.

    Use this function to add a token to a URL that already has a query string.

    """
    return {conf.TOKEN_NAME: create_token(user, scope)}


def get_query_string(user: AbstractBaseUser, scope: str = "") -> str:
    """
    Create a query string, starting with ``?``, that authenticates ``user``.

    Set ``scope`` to create a :ref:`scoped token <scoped-tokens>`.

    Use this function to add a token to a URL that has no query string.

    """
    return "?" + urlencode({conf.TOKEN_NAME: create_token(user, scope)})


def _split(request_or_token: Any) -> tuple[Any, str | None]:
    if isinstance(request_or_token, str):
        return None, request_or_token
    try:
        query = request_or_token.GET
    except AttributeError:
        raise TypeError(
            f"get_user() expects an HttpRequest or a token, got {type(request_or_token).__name__}"
        ) from None
    return request_or_token, query.get(conf.TOKEN_NAME)


def get_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool | None = None,
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
    other tokens too.

    Raise :exc:`TypeError` if ``request_or_token`` is neither a request nor a
    string.

    """
    request, token = _split(request_or_token)
    if token is None:
        return None
    # authenticate() sets user.backend, which login() needs.
    user: AbstractBaseUser | None = authenticate(
        request, sesame_token=token, scope=scope, max_age=max_age
    )
    if user is not None and update_last_login and not conf.ONE_TIME:
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])
    return user


async def aget_user(
    request_or_token: Any,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
    *,
    update_last_login: bool | None = None,
) -> AbstractBaseUser | None:
    """See :func:`get_user`."""
    request, token = _split(request_or_token)
    if token is None:
        return None
    user: AbstractBaseUser | None = await aauthenticate(
        request, sesame_token=token, scope=scope, max_age=max_age
    )
    if user is not None and update_last_login and not conf.ONE_TIME:
        user.last_login = timezone.now()
        await user.asave(update_fields=["last_login"])
    return user

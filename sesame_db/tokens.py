"""
Create and parse tokens in the formats listed in :data:`SESAME_TOKENS`.

The user loader is passed in, so this module never touches the ORM.

"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, overload

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from . import tokens_store
from .conf import conf
from .exceptions import InvalidToken, Reason
from .tokens_store import StoredClaims

__all__ = [
    "MAX_TOKEN_LENGTH",
    "aparse_token",
    "create_token",
    "decode_token",
    "parse_token",
]

logger = logging.getLogger("sesame_db")

# The longest token that the built-in formats create is about 450 characters
# (a 255-byte string primary key). Longer input is rejected before any work.
MAX_TOKEN_LENGTH = 1024


class DecodedToken(Protocol):
    user_key: Any

    def verify(self, user: AbstractBaseUser, scope: str) -> None: ...


def create_token(user: AbstractBaseUser, scope: str = "") -> str:
    """Create a token for ``user`` in ``scope``, in the first format of :data:`SESAME_TOKENS`."""
    return conf.token_formats[0].create_token(user, scope)  # type: ignore[no-any-return]


def resolve_max_age(max_age: float | datetime.timedelta | None) -> float | None:
    """Combine the ``max_age`` argument with :data:`SESAME_MAX_AGE`."""
    if conf.MAX_AGE is None:
        if max_age is not None:
            logger.warning(
                "Ignoring max_age argument; it isn't supported when SESAME_MAX_AGE = None"
            )
        return None
    if max_age is None:
        return conf.MAX_AGE
    if isinstance(max_age, datetime.timedelta):
        return max_age.total_seconds()
    return max_age


@overload
def decode_token(
    token: str,
    max_age: float | datetime.timedelta | None = None,
    *,
    scope: str = "",
    stored: Literal[False] = False,
) -> DecodedToken: ...


@overload
def decode_token(
    token: str,
    max_age: float | datetime.timedelta | None = None,
    *,
    scope: str = "",
    stored: bool,
) -> DecodedToken | StoredClaims: ...


def decode_token(
    token: str,
    max_age: float | datetime.timedelta | None = None,
    *,
    scope: str = "",
    stored: bool = False,
) -> DecodedToken | StoredClaims:
    """
    Decode ``token`` with the format that recognizes it: this is the one place that tells formats apart.

    With ``stored``, a stored token (``~``) is decoded too: its MAC, its
    scope claim against ``scope`` and its expiry claim are checked, and its
    :class:`~sesame_db.tokens_store.StoredClaims` returned. Else, and for
    other tokens, the first format of :data:`SESAME_TOKENS` that detects the
    token decodes it and checks its MAC; ``max_age``, if set, overrides
    :data:`SESAME_MAX_AGE`, and the user and the scope are checked by the
    result's ``verify()``.

    Raise :exc:`~sesame_db.exceptions.InvalidToken` if no format accepts it.

    """
    if stored and tokens_store.detect_token(token):
        return tokens_store.decode_token(token, scope, timezone.now())
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(
            Reason.MALFORMED, "Bad token: too long (%d characters)", len(token)
        )
    for token_format in conf.token_formats:
        if token_format.detect_token(token):
            return token_format.decode_token(token, resolve_max_age(max_age))  # type: ignore[no-any-return]
    raise InvalidToken(Reason.MALFORMED, "Bad token: doesn't match a supported format")


def verify_user(
    decoded: DecodedToken, user: AbstractBaseUser | None, scope: str
) -> AbstractBaseUser:
    """
    Return ``user``, loaded from the key of ``decoded``, if the token authenticates them in ``scope``.

    Raise :exc:`~sesame_db.exceptions.InvalidToken` if there's no such user
    or if the token isn't valid for them.

    """
    if user is None:
        raise InvalidToken(
            Reason.UNKNOWN_USER,
            "Unknown or inactive user: %s = %r",
            conf.PRIMARY_KEY_FIELD,
            decoded.user_key,
        )
    decoded.verify(user, scope)
    return user


def parse_token(
    token: str,
    get_user: Callable[[Any], AbstractBaseUser | None],
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
) -> AbstractBaseUser:
    """
    Return the user authenticated by ``token`` in ``scope``.

    ``get_user`` loads a user from the key found in the token, or returns
    :obj:`None`. If ``max_age`` is set, it overrides :data:`SESAME_MAX_AGE`.

    Raise :exc:`~sesame_db.exceptions.InvalidToken` if the token isn't valid.

    """
    decoded = decode_token(token, max_age)
    return verify_user(decoded, get_user(decoded.user_key), scope)


async def aparse_token(
    token: str,
    aget_user: Callable[[Any], Awaitable[AbstractBaseUser | None]],
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
) -> AbstractBaseUser:
    """See :func:`parse_token`; ``aget_user`` is a coroutine function."""
    decoded = decode_token(token, max_age)
    return verify_user(decoded, await aget_user(decoded.user_key), scope)

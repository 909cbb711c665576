"""
Create and parse tokens in the formats listed in :data:`SESAME_TOKENS`.

The user loader is passed in, so this module never touches the ORM.

"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from django.contrib.auth.base_user import AbstractBaseUser

from .conf import conf
from .exceptions import InvalidToken, Reason

__all__ = ["MAX_TOKEN_LENGTH", "aparse_token", "create_token", "parse_token"]

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


def decode_token(
    token: str, max_age: float | datetime.timedelta | None
) -> DecodedToken:
    """Decode ``token`` with the first format that recognizes it."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(
            Reason.MALFORMED, "Bad token: too long (%d characters)", len(token)
        )
    for token_format in conf.token_formats:
        if token_format.detect_token(token):
            return token_format.decode_token(token, resolve_max_age(max_age))  # type: ignore[no-any-return]
    raise InvalidToken(Reason.MALFORMED, "Bad token: doesn't match a supported format")


def _unknown_user(decoded: DecodedToken) -> InvalidToken:
    return InvalidToken(
        Reason.UNKNOWN_USER,
        "Unknown or inactive user: %s = %r",
        conf.PRIMARY_KEY_FIELD,
        decoded.user_key,
    )


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
    user = get_user(decoded.user_key)
    if user is None:
        raise _unknown_user(decoded)
    decoded.verify(user, scope)
    return user


async def aparse_token(
    token: str,
    aget_user: Callable[[Any], Awaitable[AbstractBaseUser | None]],
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
) -> AbstractBaseUser:
    """See :func:`parse_token`; ``aget_user`` is a coroutine function."""
    decoded = decode_token(token, max_age)
    user = await aget_user(decoded.user_key)
    if user is None:
        raise _unknown_user(decoded)
    decoded.verify(user, scope)
    return user

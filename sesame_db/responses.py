"""
The answers to requests whose token was rejected or couldn't be checked.

Every entry point of sesame_db turns the outcome of a check into an answer
here: :func:`~sesame_db.utils.check_user` raises
:exc:`~sesame_db.exceptions.InvalidToken` for a rejected token, whose reason
tells a client over :data:`SESAME_RATE_LIMIT` apart, and
:exc:`~sesame_db.exceptions.DatabaseUnavailable` when the database failed.

"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBase

from .exceptions import DatabaseUnavailable, InvalidToken, Reason
from .ratelimit import rate_limited_response

__all__ = [
    "POLICY_VIOLATION",
    "RETRY_AFTER",
    "TRY_AGAIN_LATER",
    "close_code",
    "is_rate_limited",
    "rate_limited_response",
    "rejected_response",
    "unavailable_response",
]

# Seconds that clients should wait before trying again: long enough for a
# database failover or restart, short enough for a person clicking a link.
RETRY_AFTER = 5

# WebSocket close codes. A token is required and missing or invalid: "policy
# violation". Closing before accepting makes the server answer the handshake
# with 403 Forbidden.
POLICY_VIOLATION = 1008
# The client is over SESAME_RATE_LIMIT, or the database failed during the
# check: "try again later".
TRY_AGAIN_LATER = 1013


def unavailable_response() -> HttpResponse:
    """
    Return a 503 Service Unavailable response with a ``Retry-After`` header.

    The views of sesame_db answer it when
    :exc:`~sesame_db.exceptions.DatabaseUnavailable` is raised: the link
    wasn't used, and may work when tried again.

    """
    return HttpResponse(
        "The link can't be checked right now. Try again in a moment.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def is_rate_limited(exc: InvalidToken | None) -> bool:
    """Tell whether the rejection ``exc`` is because of :data:`SESAME_RATE_LIMIT`."""
    return exc is not None and exc.reason is Reason.RATE_LIMITED


def rejected_response(exc: InvalidToken) -> HttpResponseBase:
    """
    Return 429 Too Many Requests for a client over :data:`SESAME_RATE_LIMIT`; else raise :exc:`~django.core.exceptions.PermissionDenied`.

    Django turns :exc:`~django.core.exceptions.PermissionDenied` into a 403
    Forbidden response.

    """
    if is_rate_limited(exc):
        return rate_limited_response()
    # Without the InvalidToken being handled: Django logs a 403 with its
    # traceback, and a refused token is no error of the site.
    raise PermissionDenied from None


def close_code(exc: InvalidToken | DatabaseUnavailable | None) -> int:
    """Return the WebSocket close code of a connection refused for ``exc``: :obj:`None` when there's no token."""
    if isinstance(exc, DatabaseUnavailable) or is_rate_limited(exc):
        return TRY_AGAIN_LATER
    return POLICY_VIOLATION

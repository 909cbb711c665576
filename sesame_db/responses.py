"""
The response to a request whose token couldn't be checked.

"""

from __future__ import annotations

from django.http import HttpResponse

__all__ = ["RETRY_AFTER", "unavailable_response"]

# Seconds that clients should wait before trying again: long enough for a
# database failover or restart, short enough for a person clicking a link.
RETRY_AFTER = 5


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

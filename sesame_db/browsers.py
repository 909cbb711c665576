"""
Binding a stored link to the first browser that opens it.

A link issued with ``bind_to_browser=True`` works, after its first use, only
in the browser that used it first: that browser holds a signed, HttpOnly
cookie that names the link, which no one can make without the secret key.
The first use is counted only if the link was never used, by the same
conditional ``UPDATE`` that counts every use, so two browsers opening the
link at once cannot both become the first.

"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

if TYPE_CHECKING:
    from .models import IssuedToken

__all__ = ["MAX_BOUND", "cookie_name", "is_bound_here", "set_cookie"]

_SALT = "sesame_db.browsers"
_PREFIX = "sesame_db_link_"
_NAME_RE = re.compile(rf"{_PREFIX}([0-9]{{1,19}})")
# How long the cookie of a link without expiry lasts: a year.
MAX_AGE = 365 * 24 * 3600
#: How many links one browser stays bound to. Browsers keep about 180
#: cookies per site and servers refuse large request headers, so binding a
#: browser to one more link drops its bindings to the oldest links beyond
#: this many: those links are then refused in it, as in another browser.
MAX_BOUND = 40


def cookie_name(pk: int) -> str:
    """Return the name of the cookie that binds link ``pk`` to a browser."""
    return f"{_PREFIX}{pk}"


def is_bound_here(request: HttpRequest | Any, pk: int) -> bool:
    """Tell whether the browser of ``request`` holds the cookie of link ``pk``."""
    cookies = getattr(request, "COOKIES", None)
    if not cookies or cookie_name(pk) not in cookies:
        return False
    try:
        value = signing.get_cookie_signer(salt=_SALT + cookie_name(pk)).unsign(
            cookies[cookie_name(pk)]
        )
    except signing.BadSignature:
        return False
    return value == str(pk)


def set_cookie(
    response: HttpResponseBase, request: HttpRequest, link: IssuedToken
) -> None:
    """
    Bind ``link`` to the browser of ``request``: set its signed, HttpOnly, SameSite=Lax cookie on ``response``.

    The browser stays bound to at most :data:`MAX_BOUND` links: the cookies
    of the oldest others, by id, are deleted.

    """
    bound = sorted(
        int(match[1])
        for name in request.COOKIES
        # Names come from the client: ASCII digits of a plausible id only.
        if (match := _NAME_RE.fullmatch(name)) and name != cookie_name(link.pk)
    )
    for pk in bound[: max(0, len(bound) - (MAX_BOUND - 1))]:
        response.delete_cookie(cookie_name(pk), samesite="Lax")
    if link.expires_at is None:
        max_age = MAX_AGE
    else:
        remaining = link.expires_at - timezone.now()
        max_age = max(1, int(remaining / datetime.timedelta(seconds=1)) + 1)
    response.set_cookie(
        cookie_name(link.pk),
        signing.get_cookie_signer(salt=_SALT + cookie_name(link.pk)).sign(str(link.pk)),
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )

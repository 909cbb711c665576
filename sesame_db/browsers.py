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
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

if TYPE_CHECKING:
    from .models import IssuedToken

__all__ = ["cookie_name", "is_bound_here", "set_cookie"]

_SALT = "sesame_db.browsers"
# How long the cookie of a link without expiry lasts: a year.
MAX_AGE = 365 * 24 * 3600


def cookie_name(pk: int) -> str:
    """Return the name of the cookie that binds link ``pk`` to a browser."""
    return f"sesame_db_link_{pk}"


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
    """Bind ``link`` to the browser of ``request``: set its signed, HttpOnly, SameSite=Lax cookie on ``response``."""
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

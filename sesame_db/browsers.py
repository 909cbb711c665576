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
_NAME_RE = re.compile(rf"{_PREFIX}([1-9][0-9]{{0,18}})")
# How long the cookie of a link without expiry lasts: a year.
MAX_AGE = 365 * 24 * 3600
#: How many links one browser stays bound to. Browsers keep about 180
#: cookies per site and servers refuse large request headers, so binding a
#: browser to one more link drops the bindings it got first beyond this
#: many: those links are then refused in it, as in another browser.
MAX_BOUND = 40


def cookie_name(pk: int) -> str:
    """Return the name of the cookie that binds link ``pk`` to a browser."""
    return f"{_PREFIX}{pk}"


def _signer(pk: int) -> signing.Signer:
    return signing.get_cookie_signer(salt=_SALT + cookie_name(pk))


def _bound_at(value: str | None, pk: int) -> float | None:
    """Return when the cookie ``value`` bound link ``pk`` (0 if the signer doesn't say), or :obj:`None` if it doesn't."""
    if value is None:
        return None
    signer = _signer(pk)
    try:
        if signer.unsign(value) != str(pk):
            return None
    except signing.BadSignature:
        return None
    if isinstance(signer, signing.TimestampSigner):
        # Django's default: "pk:timestamp:signature", whose signature holds.
        return float(signing.b62_decode(value.rsplit(signer.sep, 2)[1]))
    return 0.0


def is_bound_here(request: HttpRequest | Any, pk: int) -> bool:
    """Tell whether the browser of ``request`` holds the cookie of link ``pk``."""
    cookies = getattr(request, "COOKIES", None) or {}
    return _bound_at(cookies.get(cookie_name(pk)), pk) is not None


def set_cookie(
    response: HttpResponseBase, request: HttpRequest, link: IssuedToken
) -> None:
    """
    Bind ``link`` to the browser of ``request``: set its signed, HttpOnly, SameSite=Lax cookie on ``response``.

    The browser stays bound to at most :data:`MAX_BOUND` links: the cookies
    of those it was bound to first are deleted. Only cookies whose
    signature holds count: forged ones can't push genuine ones out.

    """
    bound: list[tuple[float, int]] = []
    for name, value in request.COOKIES.items():
        # Names come from the client: the exact name of an id only.
        match = _NAME_RE.fullmatch(name)
        if match is None or name == cookie_name(link.pk):
            continue
        pk = int(match[1])
        if (bound_at := _bound_at(value, pk)) is not None:
            bound.append((bound_at, pk))
    bound.sort()
    for _, pk in bound[: max(0, len(bound) - (MAX_BOUND - 1))]:
        response.delete_cookie(cookie_name(pk), samesite="Lax")
    if link.expires_at is None:
        max_age = MAX_AGE
    else:
        remaining = link.expires_at - timezone.now()
        max_age = max(1, int(remaining / datetime.timedelta(seconds=1)) + 1)
    response.set_cookie(
        cookie_name(link.pk),
        _signer(link.pk).sign(str(link.pk)),
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )

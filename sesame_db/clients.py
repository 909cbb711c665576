"""
The client of a request: its address, behind trusted proxies, and the fields that describe it in the audit trail.

"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.http import HttpRequest

from .conf import conf

__all__ = ["client_info", "client_ip"]

logger = logging.getLogger("sesame_db")


def client_ip(request: HttpRequest) -> str | None:
    """
    Return the IP address of the client of ``request``, or :obj:`None`.

    It's ``REMOTE_ADDR``, unless :data:`SESAME_TRUSTED_PROXIES` is set to the
    number of reverse proxies in front of Django: then it's the address that
    the outermost trusted proxy added to ``X-Forwarded-For``.

    """
    address = request.META.get("REMOTE_ADDR", "")
    source = "REMOTE_ADDR"
    hops = conf.TRUSTED_PROXIES
    if hops:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        # Entries left of those added by trusted proxies are client-controlled.
        if len(forwarded) >= hops:
            address = forwarded[-hops]
            source = "X-Forwarded-For"
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        _log_unknown_address(source, address)
        return None


# Whether this process logged an unparsable client address at WARNING yet.
_unknown_address_logged = False


def _log_unknown_address(source: str, address: str) -> None:
    # A deployment where no request has an address (a server on a Unix
    # socket, a proxy that isn't counted in SESAME_TRUSTED_PROXIES) can't be
    # seen by a system check: say it once per process, loudly enough.
    global _unknown_address_logged
    if _unknown_address_logged:
        logger.debug("Unknown client address in %s: %r", source, address[:64])
        return
    _unknown_address_logged = True
    logger.warning(
        "Unknown client address in %s: %r. The audit trail records no address, "
        "and SESAME_RATE_LIMIT counts every such client together. Behind a reverse "
        "proxy, set SESAME_TRUSTED_PROXIES to the number of proxies that append to "
        "X-Forwarded-For. Logged once per process.",
        source,
        address[:64],
    )


def client_info(request: HttpRequest | None) -> dict[str, Any]:
    """Return the audit fields describing ``request``: IP, user agent, method and path."""
    if request is None:
        return {}
    return {
        "ip": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:255],
        "method": (request.method or "")[:16],
        # The path only: the query string holds the token.
        "path": request.path[:255],
    }

"""
The cookie that binds a login link to the browser that asked for it.

The cookie holds a random nonce, signed, and nothing else: it's the same
whether or not the address belongs to an account. A link carries a tag, a
keyed hash of its record id and of the nonce, so only the browser with the
nonce can use it; the code of the email is another keyed hash of the same
two values. Neither is stored: both are computed again when checked, with a
key derived from :setting:`SECRET_KEY`.

"""

from __future__ import annotations

import datetime
import hmac
import secrets

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponseBase
from django.utils.crypto import salted_hmac

from sesame_db.conf import conf

__all__ = [
    "COOKIE_NAME",
    "code",
    "code_matches",
    "get_nonce",
    "new_nonce",
    "set_cookie",
    "tag",
    "tag_matches",
]

COOKIE_NAME = "sesame_db_login"
_SALT = "sesame_db.login.browser"


def new_nonce() -> str:
    """Return a new random nonce for a browser."""
    return secrets.token_urlsafe(24)


def get_nonce(request: HttpRequest) -> str | None:
    """Return the nonce of the cookie of ``request``, or :obj:`None` if it's missing, forged or too old."""
    value = request.COOKIES.get(COOKIE_NAME)
    if value is None:
        return None
    try:
        nonce = signing.loads(
            value, salt=_SALT, max_age=datetime.timedelta(seconds=conf.LOGIN_MAX_AGE)
        )
    except signing.BadSignature:  # SignatureExpired included
        return None
    return nonce if isinstance(nonce, str) else None


def set_cookie(response: HttpResponseBase, request: HttpRequest, nonce: str) -> None:
    """Set the cookie with ``nonce``: signed, HttpOnly, SameSite=Lax, Secure over HTTPS or with :setting:`SESSION_COOKIE_SECURE`, as long as a link lives."""
    # Lax rather than Strict: the browser must send it when the link is
    # opened from a mail client, a top-level GET from another site.
    response.set_cookie(
        COOKIE_NAME,
        signing.dumps(nonce, salt=_SALT),
        max_age=int(conf.LOGIN_MAX_AGE),
        # Like the session cookie, whatever the proxy tells of the scheme.
        secure=request.is_secure() or settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _hmac(purpose: str, record_id: int, nonce: str, secret: str | bytes) -> bytes:
    return salted_hmac(
        f"sesame_db.login.{purpose}",
        f"{record_id}:{nonce}",
        secret=secret,
        algorithm="sha256",
    ).digest()


def tag(record_id: int, nonce: str) -> str:
    """Return the tag that binds the link of record ``record_id`` to the browser with ``nonce``."""
    return _hmac("tag", record_id, nonce, conf.SECRET_KEYS[0]).hex()[:32]


def tag_matches(value: str, record_id: int, nonce: str | None) -> bool:
    """Tell whether ``value`` is the tag of record ``record_id`` for the browser with ``nonce``."""
    if nonce is None:
        return False
    return any(
        hmac.compare_digest(
            value.encode(), _hmac("tag", record_id, nonce, secret).hex()[:32].encode()
        )
        for secret in conf.SECRET_KEYS
    )


def _code(record_id: int, nonce: str, secret: str | bytes) -> str:
    length = conf.LOGIN_CODE_LENGTH
    number = int.from_bytes(_hmac("code", record_id, nonce, secret), "big")
    return str(number % 10**length).zfill(length)


def code(record_id: int, nonce: str) -> str:
    """Return the code that logs in with record ``record_id`` in the browser with ``nonce``."""
    return _code(record_id, nonce, conf.SECRET_KEYS[0])


def code_matches(value: str, record_id: int, nonce: str) -> bool:
    """Tell whether ``value`` is the code of record ``record_id`` for the browser with ``nonce``."""
    return any(
        hmac.compare_digest(value.encode(), _code(record_id, nonce, secret).encode())
        for secret in conf.SECRET_KEYS
    )

"""
Tokens v1, from django-sesame 1.x, accepted so that old links keep working.

A token is a :class:`django.core.signing.Signer` (or, when
:data:`SESAME_MAX_AGE` is set, :class:`~django.core.signing.TimestampSigner`)
signature, salted with :data:`SESAME_SALT`, of the packed primary key followed
by a PBKDF2-MD5 hash of the user's revocation data. v1 tokens have no scope.

Prefer v2 tokens: v1 tokens are longer and slower to check.

"""

from __future__ import annotations

import datetime
import hashlib
import re
import struct
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.utils.crypto import constant_time_compare, pbkdf2

from .conf import conf
from .exceptions import InvalidToken, Reason
from .packers import current_packer

__all__ = [
    "DecodedToken",
    "create_token",
    "decode_token",
    "detect_token",
    "get_revocation_key",
]

# Fixed by django-sesame 1.x; these values are part of the format.
ITERATIONS = 10000
DIGEST = hashlib.md5

# The primary key is at least 1 byte and the hash 16 bytes, which is 27
# Base64 characters for the payload; TimestampSigner adds 6 Base62
# characters, as every timestamp since 1999 has 6 digits in Base62.
_UNTIMED_RE = re.compile(r"[A-Za-z0-9_-]{4,}:[A-Za-z0-9_-]{27}")
_TIMED_RE = re.compile(r"[A-Za-z0-9_-]{4,}:[0-9A-Za-z]{6}:[A-Za-z0-9_-]{27}")


def detect_token(token: str) -> bool:
    """Tell whether ``token`` may be a v1 token."""
    token_re = _UNTIMED_RE if conf.MAX_AGE is None else _TIMED_RE
    return token_re.fullmatch(token) is not None


def get_revocation_key(user: AbstractBaseUser) -> bytes:
    """Return the hash of the data whose change invalidates the v1 tokens of ``user``."""
    data = ""
    if conf.INVALIDATE_ON_PASSWORD_CHANGE:
        data += user.password or ""
    if conf.INVALIDATE_ON_EMAIL_CHANGE:
        data += getattr(user, user.get_email_field_name()) or ""
    if conf.ONE_TIME:
        # str(None) is "None": that's what django-sesame 1.x signed.
        data += str(user.last_login)
    return pbkdf2(data, conf.SALT, ITERATIONS, digest=DIGEST)


def _get_signer() -> signing.Signer:
    signer_class = signing.Signer if conf.MAX_AGE is None else signing.TimestampSigner
    return signer_class(salt=conf.SALT, algorithm="sha1")


def create_token(user: AbstractBaseUser, scope: str = "") -> str:
    """Create a v1 token for ``user``; v1 tokens don't support ``scope``."""
    if scope != "":
        raise ValueError("v1 tokens don't support scope")
    data = current_packer().pack_pk(
        getattr(user, conf.PRIMARY_KEY_FIELD)
    ) + get_revocation_key(user)
    return _get_signer().sign(signing.b64_encode(data).decode())


class DecodedToken:
    """A v1 token whose signature and age are valid; the revocation key isn't checked yet."""

    __slots__ = ("revocation_key", "user_key")

    def __init__(self, user_key: Any, revocation_key: bytes) -> None:
        self.user_key = user_key
        self.revocation_key = revocation_key

    def verify(self, user: AbstractBaseUser, scope: str) -> None:
        """Check the revocation key of ``user``; raise :exc:`InvalidToken` if it doesn't match."""
        if scope != "":
            raise InvalidToken(
                Reason.WRONG_SCOPE,
                "Invalid token: v1 tokens don't support scope %r",
                scope,
            )
        if not constant_time_compare(self.revocation_key, get_revocation_key(user)):
            raise InvalidToken(
                Reason.BAD_SIGNATURE,
                "Invalid token for user %s = %r",
                conf.PRIMARY_KEY_FIELD,
                self.user_key,
            )


def decode_token(token: str, max_age: float | None) -> DecodedToken:
    """
    Check the signature and the age of a v1 token and decode it.

    ``max_age`` is :obj:`None` when :data:`SESAME_MAX_AGE` is :obj:`None`.

    """
    signer = _get_signer()
    try:
        if isinstance(signer, signing.TimestampSigner):
            value = signer.unsign(
                token,
                max_age=None
                if max_age is None
                else datetime.timedelta(seconds=max_age),
            )
        else:
            value = signer.unsign(token)
    except signing.SignatureExpired:
        raise InvalidToken(Reason.EXPIRED, "Expired token") from None
    except signing.BadSignature:
        raise InvalidToken(
            Reason.BAD_SIGNATURE, "Bad token: invalid signature"
        ) from None
    # From here on the token was signed with our key: a failure means that
    # SESAME_PACKER or SESAME_MAX_AGE changed since it was created.
    try:
        data = signing.b64_decode(value.encode())
        user_key, revocation_key = current_packer().unpack_pk(data)
    except (ValueError, IndexError, struct.error):
        raise InvalidToken(
            Reason.MALFORMED,
            "Bad token: valid signature but unexpected content; tokens must be created again after changing SESAME_PACKER or SESAME_MAX_AGE",
        ) from None
    return DecodedToken(user_key, revocation_key)

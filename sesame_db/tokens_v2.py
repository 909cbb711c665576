"""
Tokens v2, byte for byte compatible with django-sesame 3.x.

A token is the URL-safe Base64 encoding, without padding, of::

    packed primary key | timestamp (4 bytes, only when SESAME_MAX_AGE is set) | signature

The signature is a keyed BLAKE2b MAC of the primary key, the timestamp, the
user's revocation key (derived from the password hash, and optionally the
email and the last login) and the scope. Since the revocation key depends on
the user, the user is loaded before the signature can be checked.

This module only handles bytes: it never queries the database.

"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
import time
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser

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

TIMESTAMP_OFFSET = 1577836800  # 2020-01-01T00:00:00Z

# Hashed passwords are "<algorithm>$<parameters>$<salt>$<hash>" for most
# hashers, but bcrypt and crypt don't separate the salt from the hash. Only
# the hash goes into the revocation key, to reveal as little as possible
# through tokens; these sizes are those of django-sesame.
HASH_SIZES = {
    "pbkdf2_sha256": 44,
    "pbkdf2_sha1": 28,
    "argon2": 22,
    "bcrypt_sha256": 31,
    "bcrypt": 31,
    "sha1": 40,
    "md5": 32,
    "crypt": 11,
}

# Tokens are Base64 strings whose size depends on the packer, SESAME_MAX_AGE
# and SESAME_SIGNATURE_SIZE; 4 characters is the smallest sensible token.
token_re = re.compile(r"[A-Za-z0-9_-]{4,}")


def detect_token(token: str) -> bool:
    """Tell whether ``token`` may be a v2 token."""
    return token_re.fullmatch(token) is not None


def get_revocation_key(user: AbstractBaseUser) -> bytes:
    """
    Return the data whose change invalidates the tokens of ``user``.

    It contains the hash of the password, the email when
    :data:`SESAME_INVALIDATE_ON_EMAIL_CHANGE` is set, and the last login when
    :data:`SESAME_ONE_TIME` is set.

    """
    data = ""
    if conf.INVALIDATE_ON_PASSWORD_CHANGE:
        password = user.password
        if password is not None:
            hash_size = HASH_SIZES.get(password.partition("$")[0])
            data = password if hash_size is None else password[-hash_size:]
    if conf.INVALIDATE_ON_EMAIL_CHANGE:
        data += getattr(user, user.get_email_field_name()) or ""
    if conf.ONE_TIME and user.last_login is not None:
        data += user.last_login.isoformat()
    return data.encode()


def sign(data: bytes, key_index: int = 0) -> bytes:
    """Compute the MAC of ``data`` with the signing key, or a fallback key when ``key_index`` > 0."""
    hasher = conf.v2_hashers[key_index].copy()
    hasher.update(data)
    return hasher.digest()


# Base64's "+/" as "-_": what base64.urlsafe_b64encode() does, without its
# two Python calls, on the path of every new link.
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_pack_timestamp = struct.Struct("!i").pack


def create_token(user: AbstractBaseUser, scope: str = "") -> str:
    """Create a v2 token for ``user`` in ``scope``."""
    data = current_packer().pack_pk(getattr(user, conf.PRIMARY_KEY_FIELD))
    if conf.MAX_AGE is not None:
        data += _pack_timestamp(int(time.time()) - TIMESTAMP_OFFSET)
    # The revocation key and the scope are signed but not sent: when either
    # changes, the signature no longer matches. sign(), inlined.
    hasher = conf.v2_hashers[0].copy()
    hasher.update(data + get_revocation_key(user) + scope.encode())
    data += hasher.digest()
    return (
        binascii.b2a_base64(data, newline=False)
        .translate(_URLSAFE)
        .rstrip(b"=")
        .decode()
    )


class DecodedToken:
    """A v2 token whose structure and age are valid, but whose signature isn't checked yet."""

    __slots__ = ("signed", "signature", "user_key")

    def __init__(self, user_key: Any, signed: bytes, signature: bytes) -> None:
        self.user_key = user_key
        self.signed = signed
        self.signature = signature

    def verify(self, user: AbstractBaseUser, scope: str) -> None:
        """Check the signature for ``user`` in ``scope``; raise :exc:`InvalidToken` if it doesn't match."""
        data = self.signed + get_revocation_key(user) + scope.encode()
        for key_index in range(len(conf.VERIFICATION_KEYS)):
            if hmac.compare_digest(self.signature, sign(data, key_index)):
                return
        # Tampering, a password or email change, a used one-time token and a
        # wrong scope all look the same here.
        raise InvalidToken(
            Reason.BAD_SIGNATURE,
            "Invalid token for user %s = %r in scope %r",
            conf.PRIMARY_KEY_FIELD,
            self.user_key,
            scope,
        )


def decode_token(token: str, max_age: float | None) -> DecodedToken:
    """
    Decode a v2 token and check its age against ``max_age``.

    ``max_age`` is :obj:`None` when :data:`SESAME_MAX_AGE` is :obj:`None`.

    """
    # Error messages hint at what's wrong without revealing the token; a
    # truncated link is the most common cause.
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise InvalidToken(Reason.MALFORMED, "Bad token: cannot decode token") from None
    try:
        user_key, rest = current_packer().unpack_pk(data)
    except (ValueError, IndexError, struct.error):
        raise InvalidToken(
            Reason.MALFORMED, "Bad token: cannot extract primary key"
        ) from None
    if conf.MAX_AGE is not None:
        if len(rest) < 4:
            raise InvalidToken(Reason.MALFORMED, "Bad token: cannot extract timestamp")
        (timestamp,) = struct.unpack("!i", rest[:4])
        rest = rest[4:]
        age = int(time.time()) - TIMESTAMP_OFFSET - timestamp
        if max_age is not None and age >= max_age:
            raise InvalidToken(Reason.EXPIRED, "Expired token: age = %d seconds", age)
    if len(rest) != conf.SIGNATURE_SIZE:
        raise InvalidToken(Reason.MALFORMED, "Bad token: cannot extract signature")
    return DecodedToken(user_key, data[: -conf.SIGNATURE_SIZE], rest)

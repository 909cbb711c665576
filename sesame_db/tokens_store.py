"""
Tokens of the database store.

A stored token is ``~`` followed by the URL-safe Base64 encoding of 27 bytes::

    record id (8) | expiry (4) | scope tag (3) | MAC (12)

- The record id is the primary key of an :class:`~sesame_db.models.IssuedToken`.
- The expiry is in seconds since 2020-01-01 UTC, 0 when the token doesn't expire.
- The scope tag is a keyed hash of the scope: a token for another scope is
  told apart from a forgery without a query.
- The MAC is a keyed BLAKE2b of the other fields. It doesn't depend on the
  user, so a forged token is rejected before any query; the user's password
  and email are checked against a digest stored with the record instead.

The token is never stored: the database holds the record id, the claims and
a digest of the user's revocation data, from which no working link can be
made without the secret key. This module only handles bytes.

"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import struct
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import conf, is_watched
from .exceptions import InvalidToken, Reason

__all__ = [
    "PREFIX",
    "StoredClaims",
    "create_token",
    "decode_token",
    "detect_token",
    "user_digest",
]

PREFIX = "~"
EPOCH = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
_LAYOUT = struct.Struct("!QI3s")  # record id, expiry, scope tag
_MAC_SIZE = 12
_SIZE = _LAYOUT.size + _MAC_SIZE  # 27 bytes, 36 Base64 characters, no padding
token_re = re.compile(r"~[A-Za-z0-9_-]{36}")


def detect_token(token: str) -> bool:
    """Tell whether ``token`` may be a stored token."""
    return token.startswith(PREFIX)


def _key(secret_key: str | bytes, person: bytes) -> bytes:
    # str() of bytes gives "b'...'", as in conf.derive_key().
    return hashlib.blake2b(
        (str(secret_key) + "|" + conf.KEY).encode(), person=person
    ).digest()


# The keyed BLAKE2b states of each secret key, derived once: the MAC, the
# scope tag and the user digest. Copying a state costs less than deriving a
# key and keying a new hash, three times per use. Cleared when a setting
# that they depend on changes.
_Hashers = tuple[hashlib.blake2b, hashlib.blake2b, hashlib.blake2b]
_hashers: dict[str | bytes, _Hashers] = {}


def _keyed(secret_key: str | bytes) -> _Hashers:
    try:
        return _hashers[secret_key]
    except KeyError:
        pass
    hashers = (
        hashlib.blake2b(
            digest_size=_MAC_SIZE, key=_key(secret_key, b"sesame_db.store")
        ),
        hashlib.blake2b(digest_size=3, key=_key(secret_key, b"sesame_db.scope")),
        hashlib.blake2b(digest_size=16, key=_key(secret_key, b"sesame_db.user")),
    )
    if len(_hashers) > 16:  # Secret keys that SECRET_KEY_FALLBACKS dropped.
        _hashers.clear()
    _hashers[secret_key] = hashers
    return hashers


@receiver(setting_changed, dispatch_uid="sesame_db.tokens_store.clear_keys")
def clear_keys(*, setting: str, **kwargs: Any) -> None:
    if is_watched(setting):
        _hashers.clear()


def _mac(data: bytes, secret_key: str | bytes) -> bytes:
    hasher = _keyed(secret_key)[0].copy()
    hasher.update(data)
    return hasher.digest()


def scope_tag(scope: str, secret_key: str | bytes) -> bytes:
    """Return the 3-byte keyed hash of ``scope``."""
    hasher = _keyed(secret_key)[1].copy()
    hasher.update(scope.encode())
    return hasher.digest()


def user_digest(user: AbstractBaseUser) -> str:
    """
    Return a digest of the data whose change invalidates the stored tokens of ``user``.

    It covers the password hash and, when
    :data:`SESAME_INVALIDATE_ON_EMAIL_CHANGE` is set, the email. It is keyed
    with the current secret key; see :class:`StoredClaims` for rotation.

    """
    return _user_digest(user, conf.SECRET_KEYS[0])


def _user_digest(user: AbstractBaseUser, secret_key: str | bytes) -> str:
    data = ""
    if conf.INVALIDATE_ON_PASSWORD_CHANGE and user.password is not None:
        data += user.password
    if conf.INVALIDATE_ON_EMAIL_CHANGE:
        data += "|" + (getattr(user, user.get_email_field_name()) or "")
    hasher = _keyed(secret_key)[2].copy()
    hasher.update(data.encode())
    return hasher.hexdigest()


def to_expiry(expires_at: datetime.datetime | None) -> int:
    if expires_at is None:
        return 0
    # Round up, so that the signed claim never outlives the record.
    seconds = (expires_at - EPOCH).total_seconds()
    return max(1, min(int(-(-seconds // 1)), 0xFFFFFFFF))


def create_token(
    record_id: int, scope: str, expires_at: datetime.datetime | None
) -> str:
    """Create the token of record ``record_id``, valid in ``scope`` until ``expires_at``."""
    secret_key = conf.SECRET_KEYS[0]
    data = _LAYOUT.pack(record_id, to_expiry(expires_at), scope_tag(scope, secret_key))
    return PREFIX + base64.urlsafe_b64encode(data + _mac(data, secret_key)).decode()


class StoredClaims:
    """The authenticated content of a stored token."""

    __slots__ = ("expires_at", "record_id", "secret_key")

    def __init__(
        self,
        record_id: int,
        expires_at: datetime.datetime | None,
        secret_key: str | bytes,
    ) -> None:
        self.record_id = record_id
        self.expires_at = expires_at
        # The secret key that signed the token also keys the user digest, so
        # rotating SECRET_KEY keeps both valid through SECRET_KEY_FALLBACKS.
        self.secret_key = secret_key

    def user_digest(self, user: AbstractBaseUser) -> str:
        return _user_digest(user, self.secret_key)


def decode_token(token: str, scope: str, now: datetime.datetime) -> StoredClaims:
    """
    Check the MAC, the scope and the expiry claim of a stored token.

    Raise :exc:`~sesame_db.exceptions.InvalidToken` if the token is forged,
    malformed, for another scope, or expired by its claim. Once the MAC is
    valid, the exception carries the record id.

    """
    if token_re.fullmatch(token) is None:
        raise InvalidToken(Reason.MALFORMED, "Bad stored token: wrong format")
    raw = base64.urlsafe_b64decode(token[1:])
    data, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    for secret_key in conf.SECRET_KEYS:
        if hmac.compare_digest(mac, _mac(data, secret_key)):
            break
    else:
        raise InvalidToken(Reason.BAD_SIGNATURE, "Bad stored token: invalid signature")
    record_id, expiry, tag = _LAYOUT.unpack(data)
    if not hmac.compare_digest(tag, scope_tag(scope, secret_key)):
        raise InvalidToken(
            Reason.WRONG_SCOPE,
            "Stored token %d used in the wrong scope %r",
            record_id,
            scope,
            token_id=record_id,
        )
    expires_at = None if expiry == 0 else EPOCH + datetime.timedelta(seconds=expiry)
    if expires_at is not None and expires_at <= now:
        raise InvalidToken(
            Reason.EXPIRED, "Expired stored token %d", record_id, token_id=record_id
        )
    return StoredClaims(record_id, expires_at, secret_key)

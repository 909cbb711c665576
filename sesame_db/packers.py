"""
Packers turn the primary key of a user into bytes for a token, and back.

The packer is chosen from the type of the user model's primary key field, or
of the field named by :data:`SESAME_PRIMARY_KEY_FIELD`, unless
:data:`SESAME_PACKER` names one. It is resolved on first use, never at import.

"""

from __future__ import annotations

import functools
import struct
import uuid
from typing import Any, ClassVar

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db.models import Field, ForeignKey
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .conf import conf, is_watched

__all__ = [
    "BasePacker",
    "BytesPacker",
    "IntPacker",
    "LongLongPacker",
    "LongPacker",
    "ShortPacker",
    "StrPacker",
    "UUIDPacker",
    "UnsignedIntPacker",
    "UnsignedLongLongPacker",
    "UnsignedLongPacker",
    "UnsignedShortPacker",
    "current_packer",
    "get_packer",
]


class BasePacker:
    """
    Base class for packers.

    A custom packer implements :meth:`pack_pk` and :meth:`unpack_pk`. When
    :meth:`unpack_pk` cannot make sense of ``data``, it must raise
    :exc:`ValueError` (or :exc:`IndexError` or :exc:`struct.error`): the
    token is then rejected as malformed. Any other exception is treated as a
    bug and propagates.

    As in django-sesame, :data:`SESAME_PACKER` names a class, which is
    instantiated once with no arguments; its methods may be instance, class
    or static methods. The built-in packers define them as class methods,
    so that a subclass may call ``super().pack_pk(user_pk)`` from any of
    these, or ``StrPacker.pack_pk(user_pk)`` from a static method.

    """

    def pack_pk(self, user_pk: Any) -> bytes:
        """
        Create a short representation of the primary key ``user_pk``.

        """
        raise NotImplementedError

    def unpack_pk(self, data: bytes) -> tuple[Any, bytes]:
        """
        Extract a primary key from the start of ``data``.

        Return the primary key and the remaining bytes.

        """
        raise NotImplementedError


class _OutOfRange(ValueError, struct.error):
    # A ValueError, like the errors of the other packers, and a struct.error,
    # which django-sesame's integer packers let through.
    pass


class StructPacker(BasePacker):
    """Packer for a fixed-size integer, described by a :mod:`struct` format."""

    fmt: ClassVar[str] = ""
    size: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.size = struct.calcsize(cls.fmt)

    @classmethod
    def pack_pk(cls, user_pk: Any) -> bytes:
        try:
            return struct.pack(cls.fmt, user_pk)
        except struct.error as exc:
            raise _OutOfRange(f"primary key is out of range: {exc}") from None

    @classmethod
    def unpack_pk(cls, data: bytes) -> tuple[Any, bytes]:
        (user_pk,) = struct.unpack(cls.fmt, data[: cls.size])
        return user_pk, data[cls.size :]


class ShortPacker(StructPacker):
    """Signed 2-byte integers: ``SmallAutoField``, ``SmallIntegerField``."""

    fmt = "!h"


class UnsignedShortPacker(StructPacker):
    """Unsigned 2-byte integers: ``PositiveSmallIntegerField``."""

    fmt = "!H"


class LongPacker(StructPacker):
    """Signed 4-byte integers: ``AutoField``, ``IntegerField``."""

    fmt = "!l"


class UnsignedLongPacker(StructPacker):
    """Unsigned 4-byte integers: ``PositiveIntegerField``."""

    fmt = "!L"


class LongLongPacker(StructPacker):
    """Signed 8-byte integers: ``BigAutoField``, ``BigIntegerField``."""

    fmt = "!q"


class UnsignedLongLongPacker(StructPacker):
    """Unsigned 8-byte integers: ``PositiveBigIntegerField``."""

    fmt = "!Q"


# Aliases kept from django-sesame.
IntPacker = LongPacker
UnsignedIntPacker = UnsignedLongPacker


class UUIDPacker(BasePacker):
    """UUIDs, as 16 bytes: ``UUIDField``."""

    @classmethod
    def pack_pk(cls, user_pk: Any) -> bytes:
        return bytes(user_pk.bytes)

    @classmethod
    def unpack_pk(cls, data: bytes) -> tuple[Any, bytes]:
        # uuid.UUID raises ValueError unless given exactly 16 bytes.
        return uuid.UUID(bytes=data[:16]), data[16:]


class BytesPacker(BasePacker):
    """Byte strings of 0 to 255 bytes, prefixed with their length: ``BinaryField``."""

    @classmethod
    def pack_pk(cls, user_pk: Any) -> bytes:
        packed = bytes(user_pk)
        if len(packed) > 255:
            raise ValueError(f"primary key is too large ({len(packed)} bytes)")
        return bytes([len(packed)]) + packed

    @classmethod
    def unpack_pk(cls, data: bytes) -> tuple[Any, bytes]:
        length = data[0]  # IndexError when data is empty
        if len(data) <= length:
            raise ValueError("primary key is truncated")
        return data[1 : length + 1], data[length + 1 :]


class StrPacker(BytesPacker):
    """Strings of 0 to 255 UTF-8 bytes, prefixed with their length: ``CharField``, ``TextField``."""

    @classmethod
    def pack_pk(cls, user_pk: Any) -> bytes:
        encoded = str(user_pk).encode()
        if b"\x00" in encoded:
            raise ValueError("primary key contains a NUL character")
        if len(encoded) > 255:
            raise ValueError(f"primary key is too large ({len(encoded)} UTF-8 bytes)")
        return bytes([len(encoded)]) + encoded

    @classmethod
    def unpack_pk(cls, data: bytes) -> tuple[Any, bytes]:
        user_pk, data = super().unpack_pk(data)
        text = user_pk.decode()  # UnicodeDecodeError is a ValueError
        # PostgreSQL rejects NUL in text with an error, not a miss.
        if "\x00" in text:
            raise ValueError("primary key contains a NUL character")
        return text, data


PACKERS: dict[str, type[BasePacker]] = {
    # 2 bytes
    "SmallAutoField": ShortPacker,
    "SmallIntegerField": ShortPacker,
    "PositiveSmallIntegerField": UnsignedShortPacker,
    # 4 bytes
    "AutoField": LongPacker,
    "IntegerField": LongPacker,
    "PositiveIntegerField": UnsignedLongPacker,
    # 8 bytes
    "BigAutoField": LongLongPacker,
    "BigIntegerField": LongLongPacker,
    "PositiveBigIntegerField": UnsignedLongLongPacker,
    # 16 bytes
    "UUIDField": UUIDPacker,
    # Variable length
    "BinaryField": BytesPacker,
    "CharField": StrPacker,
    "TextField": StrPacker,
    "EmailField": StrPacker,
    "SlugField": StrPacker,
}


def get_packer() -> BasePacker:
    """
    Return the packer configured by :data:`SESAME_PACKER` or chosen for the user model.

    Raise :exc:`~django.core.exceptions.ImproperlyConfigured` when no packer fits.

    """
    if conf.PACKER is not None:
        packer_class = import_string(conf.PACKER)
        return packer_class()  # type: ignore[no-any-return]
    User = get_user_model()
    if conf.PRIMARY_KEY_FIELD == "pk":
        field: Field[Any, Any] = User._meta.pk
    else:
        found = User._meta.get_field(conf.PRIMARY_KEY_FIELD)
        if not isinstance(found, Field) or not found.unique:
            raise ImproperlyConfigured(
                f"{User._meta.label}.{conf.PRIMARY_KEY_FIELD} isn't unique: set SESAME_PRIMARY_KEY_FIELD to a unique field"
            )
        field = found
    # With multi-table inheritance, the primary key is a OneToOneField to
    # the parent: pack the value it holds.
    while isinstance(field, ForeignKey):
        field = field.target_field
    pk_type = field.get_internal_type()
    try:
        return PACKERS[pk_type]()
    except KeyError:
        raise ImproperlyConfigured(
            f"{pk_type} primary keys aren't supported: set SESAME_PACKER to a custom packer"
        ) from None


@functools.cache
def current_packer() -> BasePacker:
    """Return the packer of :func:`get_packer`, resolved on first use and kept until the settings change."""
    return get_packer()


@receiver(setting_changed, dispatch_uid="sesame_db.packers.reload")
def reload(*, setting: str, **kwargs: Any) -> None:
    if is_watched(setting):
        current_packer.cache_clear()

from __future__ import annotations

import random
import struct
import uuid
from typing import Any
from unittest import mock

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.test import SimpleTestCase, override_settings

from sesame_db.packers import (
    BasePacker,
    BytesPacker,
    IntPacker,
    LongLongPacker,
    LongPacker,
    ShortPacker,
    StrPacker,
    UnsignedIntPacker,
    UnsignedLongLongPacker,
    UnsignedLongPacker,
    UnsignedShortPacker,
    UUIDPacker,
    current_packer,
    get_packer,
)

from .mixins import IsolateDjangoSesameMixin

# What unpack_pk() may raise on malformed data; the token is then rejected.
# pack_pk() raises them too for a primary key that doesn't fit.
MALFORMED_ERRORS = (ValueError, IndexError, struct.error)

# Integer packers: (class, size in bytes, smallest value, largest value).
INTEGER_PACKERS = [
    (ShortPacker, 2, -(2**15), 2**15 - 1),
    (UnsignedShortPacker, 2, 0, 2**16 - 1),
    (LongPacker, 4, -(2**31), 2**31 - 1),
    (UnsignedLongPacker, 4, 0, 2**32 - 1),
    (LongLongPacker, 8, -(2**63), 2**63 - 1),
    (UnsignedLongLongPacker, 8, 0, 2**64 - 1),
]

ALL_PACKERS = [
    *(packer_class for packer_class, *_ in INTEGER_PACKERS),
    UUIDPacker,
    BytesPacker,
    StrPacker,
]


class RepeatPacker(BasePacker):
    """A custom packer, loaded by its dotted path."""

    def pack_pk(self, user_pk):
        return bytes([user_pk]) * 2

    def unpack_pk(self, data):
        if data[0] != data[1]:
            raise ValueError("not repeated")
        return data[0], data[2:]


def custom_packers(parent):
    """
    Return subclasses of the built-in ``parent`` in each shape that django-sesame 3.2 accepts.

    Each one prefixes the bytes of ``parent`` with a marker and calls
    ``parent`` as such packers do: ``super()`` from a class method or an
    instance method, or the parent class from a static method.

    """

    def check_marker(data, marker):
        if data[:1] != marker:
            raise ValueError("missing marker")
        return data[1:]

    class ClassMethodPacker(parent):  # type: ignore[misc,valid-type]
        @classmethod
        def pack_pk(cls, user_pk):
            return b"c" + super().pack_pk(user_pk)

        @classmethod
        def unpack_pk(cls, data):
            return super().unpack_pk(check_marker(data, b"c"))

    class StaticMethodPacker(parent):  # type: ignore[misc,valid-type]
        @staticmethod
        def pack_pk(user_pk):
            return b"s" + parent.pack_pk(user_pk)

        @staticmethod
        def unpack_pk(data):
            return parent.unpack_pk(check_marker(data, b"s"))

    class InstanceMethodPacker(parent):  # type: ignore[misc,valid-type]
        def pack_pk(self, user_pk):
            return b"i" + super().pack_pk(user_pk)

        def unpack_pk(self, data):
            return super().unpack_pk(check_marker(data, b"i"))

    return [ClassMethodPacker, StaticMethodPacker, InstanceMethodPacker]


# Module attributes, so that SESAME_PACKER can name them, such as
# "tests.test_packers.UUIDPacker_StaticMethodPacker".
CUSTOM_PACKERS = {}
for _parent in ALL_PACKERS:
    for _packer_class in custom_packers(_parent):
        _name = f"{_parent.__name__}_{_packer_class.__name__}"
        _packer_class.__name__ = _packer_class.__qualname__ = _name
        CUSTOM_PACKERS[_name] = globals()[_name] = _packer_class

# A primary key that each built-in packer can pack.
SAMPLE_PKS: dict[type[BasePacker], Any] = {
    **{packer_class: 42 for packer_class, *_ in INTEGER_PACKERS},
    UUIDPacker: uuid.UUID("12345678-1234-5678-1234-567812345678"),
    BytesPacker: b"\x00\xffbytes",
    StrPacker: "üsér-☃",
}


class TestCustomPackers(IsolateDjangoSesameMixin, SimpleTestCase):
    def test_every_shape_of_subclass(self):
        for name, packer_class in CUSTOM_PACKERS.items():
            parent = packer_class.__mro__[1]
            user_pk = SAMPLE_PKS[parent]
            with (
                self.subTest(packer=name),
                override_settings(SESAME_PACKER=f"tests.test_packers.{name}"),
            ):
                packed = current_packer().pack_pk(user_pk)
                self.assertEqual(packed[1:], parent().pack_pk(user_pk))
                self.assertEqual(
                    current_packer().unpack_pk(packed + b"rest"), (user_pk, b"rest")
                )
                with self.assertRaises(ValueError):
                    current_packer().unpack_pk(b"?" + packed[1:])

    def test_built_in_methods_work_on_the_class(self):
        # As in django-sesame, a custom packer may call them on the class.
        packer_class: Any
        for packer_class in ALL_PACKERS:
            user_pk = SAMPLE_PKS[packer_class]
            with self.subTest(packer=packer_class.__name__):
                packed = packer_class.pack_pk(user_pk)
                self.assertEqual(packer_class.unpack_pk(packed), (user_pk, b""))


class TestIntegerPackers(SimpleTestCase):
    def test_round_trip(self):
        for packer_class, size, min_value, max_value in INTEGER_PACKERS:
            packer = packer_class()
            for value in [min_value, min_value + 1, 0, 1, 42, max_value - 1, max_value]:
                with self.subTest(packer=packer_class.__name__, value=value):
                    packed = packer.pack_pk(value)
                    self.assertEqual(len(packed), size)
                    self.assertEqual(
                        packer.unpack_pk(packed + b"rest"), (value, b"rest")
                    )

    def test_big_endian_twos_complement(self):
        # Network byte order, as in django-sesame tokens.
        for packer_class, size, min_value, _ in INTEGER_PACKERS:
            packer = packer_class()
            with self.subTest(packer=packer_class.__name__):
                self.assertEqual(packer.pack_pk(1), b"\x00" * (size - 1) + b"\x01")
                self.assertEqual(
                    packer.pack_pk(min_value),
                    (b"\x80" if min_value else b"\x00") + b"\x00" * (size - 1),
                )

    def test_signed_minus_one(self):
        for packer_class, size, min_value, _ in INTEGER_PACKERS:
            if min_value == 0:
                continue
            with self.subTest(packer=packer_class.__name__):
                self.assertEqual(packer_class().pack_pk(-1), b"\xff" * size)
                self.assertEqual(packer_class().unpack_pk(b"\xff" * size), (-1, b""))

    def test_out_of_range_is_rejected(self):
        for packer_class, _, min_value, max_value in INTEGER_PACKERS:
            packer = packer_class()
            for value in [min_value - 1, max_value + 1]:
                with (
                    self.subTest(packer=packer_class.__name__, value=value),
                    self.assertRaises(MALFORMED_ERRORS),
                ):
                    packer.pack_pk(value)

    # Like BytesPacker and StrPacker, integer packers raise ValueError for a
    # primary key out of range; it's a struct.error too, as in django-sesame.
    def test_out_of_range_raises_value_error(self):
        for packer_class, _, min_value, max_value in INTEGER_PACKERS:
            packer = packer_class()
            for value in [min_value - 1, max_value + 1, None]:
                with self.subTest(packer=packer_class.__name__, value=value):
                    with self.assertRaises(ValueError) as cm:
                        packer.pack_pk(value)
                    self.assertIsInstance(cm.exception, struct.error)

    def test_truncated_data(self):
        for packer_class, size, *_ in INTEGER_PACKERS:
            packer = packer_class()
            packed = packer.pack_pk(1)
            for length in range(size):
                with (
                    self.subTest(packer=packer_class.__name__, length=length),
                    self.assertRaises(struct.error),
                ):
                    packer.unpack_pk(packed[:length])

    def test_aliases(self):
        self.assertIs(IntPacker, LongPacker)
        self.assertIs(UnsignedIntPacker, UnsignedLongPacker)


class TestUUIDPacker(SimpleTestCase):
    def test_round_trip(self):
        packer = UUIDPacker()
        for value in [
            uuid.UUID(int=0),
            uuid.UUID(int=2**128 - 1),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            uuid.uuid4(),
        ]:
            with self.subTest(value=value):
                packed = packer.pack_pk(value)
                self.assertEqual(packed, value.bytes)
                self.assertEqual(packer.unpack_pk(packed + b"rest"), (value, b"rest"))

    def test_truncated_data(self):
        packer = UUIDPacker()
        packed = packer.pack_pk(uuid.uuid4())
        for length in range(16):
            with self.subTest(length=length), self.assertRaises(ValueError):
                packer.unpack_pk(packed[:length])


class TestBytesPacker(SimpleTestCase):
    def test_round_trip(self):
        packer = BytesPacker()
        for value in [b"", b"\x00", b"abc", bytes(range(256))[:255], b"\xff" * 255]:
            with self.subTest(length=len(value)):
                packed = packer.pack_pk(value)
                self.assertEqual(packed, bytes([len(value)]) + value)
                self.assertEqual(packer.unpack_pk(packed + b"rest"), (value, b"rest"))

    def test_memoryview(self):
        # BinaryField values may be memoryviews.
        self.assertEqual(BytesPacker().pack_pk(memoryview(b"abc")), b"\x03abc")

    def test_too_large(self):
        with self.assertRaises(ValueError):
            BytesPacker().pack_pk(b"x" * 256)

    def test_empty_data(self):
        with self.assertRaises(IndexError):
            BytesPacker().unpack_pk(b"")

    def test_truncated_data(self):
        packer = BytesPacker()
        packed = packer.pack_pk(b"abcdef")
        for length in range(1, len(packed)):
            with self.subTest(length=length), self.assertRaises(ValueError):
                packer.unpack_pk(packed[:length])


class TestStrPacker(SimpleTestCase):
    def test_round_trip(self):
        packer = StrPacker()
        for value in [
            "",
            "john",
            "user-john",
            "x" * 255,
            # Non-ASCII: the length is counted in UTF-8 bytes.
            "Jérôme",
            "é" * 127,  # 254 bytes
            "€" * 85,  # 255 bytes
            "😀" * 63,  # 252 bytes
        ]:
            with self.subTest(value=value):
                packed = packer.pack_pk(value)
                self.assertEqual(packed, bytes([len(value.encode())]) + value.encode())
                self.assertEqual(packer.unpack_pk(packed + b"rest"), (value, b"rest"))

    def test_non_str_is_converted(self):
        self.assertEqual(StrPacker().pack_pk(42), b"\x0242")

    def test_too_large(self):
        for value in ["x" * 256, "é" * 128, "€" * 86]:
            with self.subTest(length=len(value)), self.assertRaises(ValueError):
                StrPacker().pack_pk(value)

    def test_empty_data(self):
        with self.assertRaises(IndexError):
            StrPacker().unpack_pk(b"")

    def test_truncated_data(self):
        packer = StrPacker()
        packed = packer.pack_pk("john")
        for length in range(1, len(packed)):
            with self.subTest(length=length), self.assertRaises(ValueError):
                packer.unpack_pk(packed[:length])

    def test_invalid_utf8(self):
        for data in [b"\x01\xff", b"\x02\xc3\x28", b"\x01\xc3"]:
            with self.subTest(data=data), self.assertRaises(ValueError):
                StrPacker().unpack_pk(data)

    def test_utf8_cut_in_the_middle_of_a_character(self):
        # "é" is 2 bytes; a length prefix of 1 cuts it.
        with self.assertRaises(ValueError):
            StrPacker().unpack_pk(b"\x01\xc3\xa9")

    def test_nul_is_rejected(self):
        for data in [b"\x01\x00", b"\x03a\x00b", b"\x05john\x00"]:
            with self.subTest(data=data), self.assertRaises(ValueError):
                StrPacker().unpack_pk(data)

    def test_nul_is_rejected_when_packing(self):
        # A key that unpack_pk() would reject can't be packed either.
        for value in ["\x00", "a\x00b"]:
            with self.subTest(value=value), self.assertRaises(ValueError):
                StrPacker().pack_pk(value)


class TestMalformedData(SimpleTestCase):
    """unpack_pk() raises only the exceptions that mark a token as malformed."""

    def malformed_inputs(self):
        rng = random.Random(20200101)
        yield b""
        yield from (bytes([byte]) for byte in range(256))
        yield from (bytes([byte, byte]) for byte in range(256))
        for length in range(3, 40):
            for _ in range(20):
                yield rng.randbytes(length)

    def test_only_expected_exceptions(self):
        for packer_class in ALL_PACKERS:
            packer = packer_class()
            with self.subTest(packer=packer_class.__name__):
                for data in self.malformed_inputs():
                    try:
                        user_pk, rest = packer.unpack_pk(data)
                    except MALFORMED_ERRORS:
                        continue
                    except Exception as exc:  # pragma: no cover
                        self.fail(f"{packer_class.__name__}: {exc!r} for {data!r}")
                    # When unpacking succeeds, packing gives the data back.
                    self.assertEqual(packer.pack_pk(user_pk) + rest, data)


class TestGetPacker(IsolateDjangoSesameMixin, SimpleTestCase):
    def test_default_user(self):
        # auth.User has an AutoField primary key.
        self.assertEqual(get_user_model()._meta.pk.get_internal_type(), "AutoField")
        self.assertIs(type(get_packer()), LongPacker)

    @override_settings(AUTH_USER_MODEL="tests.UUIDUser")
    def test_uuid_user(self):
        self.assertIs(type(get_packer()), UUIDPacker)

    @override_settings(AUTH_USER_MODEL="tests.ChildUser")
    def test_multi_table_inheritance_user(self):
        # The primary key is a OneToOneField to UUIDUser.
        self.assertEqual(get_user_model()._meta.pk.get_internal_type(), "OneToOneField")
        self.assertIs(type(get_packer()), UUIDPacker)

    @override_settings(AUTH_USER_MODEL="tests.StrUser")
    def test_str_user(self):
        self.assertIs(type(get_packer()), StrPacker)

    @override_settings(AUTH_USER_MODEL="tests.BigUser")
    def test_big_user(self):
        self.assertIs(type(get_packer()), LongLongPacker)

    def test_conf_packer_follows_user_model(self):
        for model, packer_class in [
            ("auth.User", LongPacker),
            ("tests.UUIDUser", UUIDPacker),
            ("tests.StrUser", StrPacker),
            ("tests.BigUser", LongLongPacker),
        ]:
            with self.subTest(model=model), override_settings(AUTH_USER_MODEL=model):
                self.assertIs(type(current_packer()), packer_class)

    def test_field_types(self):
        # The packer fits the size and the signedness of each field type.
        cases = [
            (models.SmallAutoField, ShortPacker),
            (models.SmallIntegerField, ShortPacker),
            (models.PositiveSmallIntegerField, UnsignedShortPacker),
            (models.AutoField, LongPacker),
            (models.IntegerField, LongPacker),
            (models.PositiveIntegerField, UnsignedLongPacker),
            (models.BigAutoField, LongLongPacker),
            (models.BigIntegerField, LongLongPacker),
            (models.PositiveBigIntegerField, UnsignedLongLongPacker),
            (models.UUIDField, UUIDPacker),
            (models.BinaryField, BytesPacker),
            (models.CharField, StrPacker),
            (models.TextField, StrPacker),
            (models.EmailField, StrPacker),
            (models.SlugField, StrPacker),
        ]
        pk = get_user_model()._meta.pk
        for field_class, packer_class in cases:
            internal_type = field_class().get_internal_type()
            with (
                self.subTest(field=field_class.__name__),
                mock.patch.object(pk, "get_internal_type", return_value=internal_type),
            ):
                self.assertIs(type(get_packer()), packer_class)

    def test_unsupported_primary_key(self):
        pk = get_user_model()._meta.pk
        with (
            mock.patch.object(pk, "get_internal_type", return_value="DecimalField"),
            self.assertRaises(ImproperlyConfigured) as cm,
        ):
            get_packer()
        self.assertEqual(
            str(cm.exception),
            "DecimalField primary keys aren't supported: set SESAME_PACKER to a custom packer",
        )

    @override_settings(SESAME_PACKER="tests.test_packers.RepeatPacker")
    def test_custom_packer(self):
        packer = get_packer()
        self.assertIs(type(packer), RepeatPacker)
        self.assertIs(type(current_packer()), RepeatPacker)

    @override_settings(SESAME_PACKER="sesame_db.packers.StrPacker")
    def test_packer_overrides_user_model(self):
        self.assertIs(type(get_packer()), StrPacker)

    @override_settings(SESAME_PACKER="tests.test_packers.DoesNotExist")
    def test_packer_not_found(self):
        with self.assertRaises(ImportError):
            get_packer()

    @override_settings(SESAME_PRIMARY_KEY_FIELD="username")
    def test_primary_key_field(self):
        self.assertIs(type(get_packer()), StrPacker)

    @override_settings(SESAME_PRIMARY_KEY_FIELD="email")
    def test_primary_key_field_not_unique(self):
        with self.assertRaises(ImproperlyConfigured) as cm:
            get_packer()
        self.assertEqual(
            str(cm.exception),
            "auth.User.email isn't unique: set SESAME_PRIMARY_KEY_FIELD to a unique field",
        )

    @override_settings(
        AUTH_USER_MODEL="tests.UUIDUser", SESAME_PRIMARY_KEY_FIELD="email"
    )
    def test_primary_key_field_not_unique_custom_user(self):
        with self.assertRaises(ImproperlyConfigured) as cm:
            get_packer()
        self.assertEqual(
            str(cm.exception),
            "tests.UUIDUser.email isn't unique: set SESAME_PRIMARY_KEY_FIELD to a unique field",
        )

    @override_settings(SESAME_PRIMARY_KEY_FIELD="groups")
    def test_primary_key_field_many_to_many(self):
        with self.assertRaises(ImproperlyConfigured) as cm:
            get_packer()
        self.assertEqual(
            str(cm.exception),
            "auth.User.groups isn't unique: set SESAME_PRIMARY_KEY_FIELD to a unique field",
        )

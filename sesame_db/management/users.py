"""
Read what the command line of sesame_db's management commands names: users, and text.

"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

__all__ = ["find_user", "text"]


def text(value: object, option: str) -> str:
    """
    Return ``value`` as a string, or raise :exc:`~django.core.management.base.CommandError` if it contains a NUL character.

    PostgreSQL can neither store nor compare text with NUL; no username,
    scope or label has one. :func:`~django.core.management.call_command`
    passes keyword arguments as they are, such as a user's primary key.

    """
    string = str(value)
    if "\x00" in string:
        raise CommandError(f"{option} can't contain NUL characters")
    return string


def find_user(value: object, option: str) -> AbstractBaseUser:
    """
    Return the user whose username, or else primary key, is ``value``.

    Raise :exc:`~django.core.management.base.CommandError` if there's no such
    user, or if ``value`` is the username of one user and the primary key of
    another: the latter can then be named by their username.

    """
    value = text(value, option)
    User = get_user_model()
    manager = User._default_manager
    try:
        by_username: AbstractBaseUser | None = manager.get(
            **{User.USERNAME_FIELD: value}
        )
    except User.DoesNotExist:
        by_username = None
    except User.MultipleObjectsReturned:
        raise CommandError(
            f"{option}: several users have the username {value!r}"
        ) from None
    by_pk: AbstractBaseUser | None = None
    try:
        pk = User._meta.pk.to_python(value)
    except ValidationError:
        pass
    else:
        by_pk = manager.filter(pk=pk).first()
    if by_username is not None and by_pk is not None and by_username.pk != by_pk.pk:
        raise CommandError(
            f"{option} {value!r} is ambiguous: it's the username of the user with primary key "
            f"{by_username.pk!r} and the primary key of {by_pk.get_username()!r}; "
            f"pass {by_pk.get_username()!r} for the latter"
        )
    user = by_username if by_username is not None else by_pk
    if user is None:
        raise CommandError(
            f"{option}: no user has the username or primary key {value!r}"
        )
    return user

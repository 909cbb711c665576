"""
Authentication backends that accept sesame_db tokens.

They adapt :mod:`sesame_db.verify`, where tokens are checked, to Django's
authentication backend API.

"""

from __future__ import annotations

import datetime
import functools
import inspect
from typing import Any

import django.contrib.auth
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import backends as auth_backends
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.signals import setting_changed
from django.db import router
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.module_loading import import_string

from . import verify
from .conf import conf
from .exceptions import InvalidToken

# Defined here before verify.py; SesameDbConfig.ready() imports it from here.
from .verify import replace_update_last_login as replace_update_last_login
from .verify import update_last_login as update_last_login

__all__ = ["ModelBackend", "SesameBackendMixin"]


class SesameBackendMixin:
    """
    Mix this class into an authentication backend to accept sesame_db tokens.

    The backend must provide ``get_user(user_id)``, like Django's backends, or
    override :meth:`get_token_user`.

    :func:`django.contrib.auth.authenticate` passes the token as
    ``sesame_token``, a name that Django masks in the credentials sent with
    :data:`~django.contrib.auth.signals.user_login_failed`. ``sesame`` is
    accepted too, for compatibility with django-sesame, but receivers of that
    signal then see the token.

    """

    def authenticate(
        self,
        request: HttpRequest | None,
        sesame: str | None = None,
        scope: str = "",
        max_age: float | datetime.timedelta | None = None,
        *,
        sesame_token: str | None = None,
    ) -> AbstractBaseUser | None:
        """
        Return the user authenticated by ``sesame_token`` (or ``sesame``), or :obj:`None`.

        If ``scope`` is set, a :ref:`scoped token <scoped-tokens>` is expected.

        If ``max_age`` is set, it overrides the :data:`SESAME_MAX_AGE` setting.

        When :data:`SESAME_ONE_TIME` is set, the token is consumed here, with
        a conditional update of the user's last login, so that two concurrent
        requests cannot both use it.

        """
        token = sesame_token if sesame_token is not None else sesame
        if token is None:
            return None
        try:
            return verify.verify(
                token,
                request=request,
                scope=scope,
                max_age=max_age,
                get_user=self.get_token_user,
                can_authenticate=self._can_authenticate,
                sender=type(self),
            )
        except InvalidToken:
            return None

    async def aauthenticate(
        self,
        request: HttpRequest | None,
        sesame: str | None = None,
        scope: str = "",
        max_age: float | datetime.timedelta | None = None,
        *,
        sesame_token: str | None = None,
    ) -> AbstractBaseUser | None:
        """See :meth:`authenticate`."""
        token = sesame_token if sesame_token is not None else sesame
        if token is None:
            return None
        try:
            return await verify.averify(
                token,
                request=request,
                scope=scope,
                max_age=max_age,
                aget_user=self.aget_token_user,
                can_authenticate=self._can_authenticate,
                sender=type(self),
            )
        except InvalidToken:
            return None

    def get_token_user(self, user_key: Any) -> AbstractBaseUser | None:
        """
        Load the user whose key ``user_key`` was found in a token.

        Return :obj:`None` if there's no such user or if they cannot log in.

        """
        return self.get_user(user_key)  # type: ignore[attr-defined,no-any-return]

    async def aget_token_user(self, user_key: Any) -> AbstractBaseUser | None:
        """See :meth:`get_token_user`; the default runs it in a thread."""
        # Not self.aget_user(): every BaseBackend has one, which would bypass
        # an overridden get_token_user().
        return await sync_to_async(self.get_token_user)(user_key)

    def _can_authenticate(self, user: AbstractBaseUser) -> bool:
        can_authenticate = getattr(self, "user_can_authenticate", None)
        if can_authenticate is not None:
            return bool(can_authenticate(user))
        return getattr(user, "is_active", True) is not False


# django.contrib.auth.authenticate() inspects the signature of every backend
# on every call, to find those that accept the credentials: computing it once
# saves about a tenth of the time of a token check.
_authenticate: Any = SesameBackendMixin.authenticate
_authenticate.__signature__ = inspect.signature(_authenticate)


# authenticate() takes a token, not Django's username and password.
class ModelBackend(SesameBackendMixin, auth_backends.ModelBackend):  # type: ignore[misc]
    """
    Authentication backend that accepts sesame_db tokens.

    It inherits :class:`SesameBackendMixin` and Django's
    :class:`~django.contrib.auth.backends.ModelBackend`; add it to
    :setting:`AUTHENTICATION_BACKENDS`:

    .. code-block:: python

        AUTHENTICATION_BACKENDS = [
            "django.contrib.auth.backends.ModelBackend",
            "sesame_db.backends.ModelBackend",
        ]

    Unlike django-sesame's, its ``get_user(user_id)`` stays Django's: it loads
    the user of a session by primary key, even when
    :data:`SESAME_PRIMARY_KEY_FIELD` names another field.

    """

    def get_token_user(self, user_key: Any) -> AbstractBaseUser | None:
        """
        Load an active user by the field named by :data:`SESAME_PRIMARY_KEY_FIELD`.

        The user is read from :func:`~django.db.router.db_for_write`, like
        stored links: a lagging read replica could still show a deactivated
        user as active, or a password that was changed.

        """
        User = get_user_model()
        manager = User._default_manager.db_manager(router.db_for_write(User))
        try:
            user = manager.get(**{conf.PRIMARY_KEY_FIELD: user_key})
        except User.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

    async def aget_token_user(self, user_key: Any) -> AbstractBaseUser | None:
        """See :meth:`get_token_user`."""
        User = get_user_model()
        manager = User._default_manager.db_manager(router.db_for_write(User))
        try:
            user = await manager.aget(**{conf.PRIMARY_KEY_FIELD: user_key})
        except User.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None


# django.contrib.auth.authenticate(), for a token. It inspects the signature
# of every backend on every call, to find those that accept the credentials,
# and instantiates them all: about a fifth of the time of a stored token's
# use with the usual two backends. authenticate() below keeps its contract
# for the credentials of a token, sesame_token, scope and max_age: the
# backends of AUTHENTICATION_BACKENDS in their order, each instantiated once
# per call before any of them runs; those whose authenticate() accepts the
# credentials get their turn until one returns a user, whose backend
# attribute is set to the backend's path; a PermissionDenied stops the loop;
# user_login_failed is sent when no backend returns a user, with the token
# masked as Django masks it, unless a guest link was accepted (which only
# entry points that allow guests do: it's not a login). What it leaves out can't be seen: it doesn't
# call the backends that are known to return None for a token without doing
# anything (Django's ModelBackend and BaseBackend), and it doesn't inspect
# the backends that are known to accept the credentials (the sesame_db
# backends that don't override authenticate() or aauthenticate()).
# tests/test_backends.py compares both under many AUTHENTICATION_BACKENDS.

try:
    # Leaves deferred annotations unevaluated on Python 3.14 (Django >= 5.2.9).
    from django.utils.inspect import signature as _signature
except ImportError:  # pragma: no cover - older Django 5.2 releases
    _signature = inspect.signature

# What Django's _clean_credentials() shows instead of the token.
_CLEANSED = "********************"
# Django's sender of user_login_failed: the module of authenticate().
_SENDER = django.contrib.auth.__name__

_SKIP, _SESAME, _OTHER = range(3)

_NO_OP_AUTHENTICATE = (
    auth_backends.BaseBackend.authenticate,
    auth_backends.ModelBackend.authenticate,
)
_NO_OP_AAUTHENTICATE = (
    auth_backends.BaseBackend.aauthenticate,
    auth_backends.ModelBackend.aauthenticate,
)


def _kind(cls: type[Any]) -> int:
    # Without a username and a password, Django's backends return None and
    # touch nothing; without an __init__(), making them has no effect either.
    if (
        getattr(cls, "authenticate", None) in _NO_OP_AUTHENTICATE
        and getattr(cls, "aauthenticate", None) in _NO_OP_AAUTHENTICATE
        and cls.__init__ is object.__init__
        and cls.__new__ is object.__new__  # type: ignore[comparison-overlap]
    ):
        return _SKIP
    if (
        isinstance(cls, type)
        and issubclass(cls, SesameBackendMixin)
        and cls.authenticate is SesameBackendMixin.authenticate
        and cls.aauthenticate is SesameBackendMixin.aauthenticate
    ):
        return _SESAME
    return _OTHER


@functools.cache
def _backends() -> tuple[tuple[str, Any, int], ...]:
    backends = []
    for path in settings.AUTHENTICATION_BACKENDS:
        cls = import_string(path)
        backends.append((path, cls, _kind(cls)))
    if not backends:
        # Django's text.
        raise ImproperlyConfigured(
            "No authentication backends have been defined. Does "
            "AUTHENTICATION_BACKENDS contain anything?"
        )
    return tuple(backends)


@receiver(setting_changed, dispatch_uid="sesame_db.backends.clear_backends")
def clear_backends(*, setting: str, **kwargs: Any) -> None:
    if setting == "AUTHENTICATION_BACKENDS":
        _backends.cache_clear()


def _failed_credentials(
    scope: str, max_age: float | datetime.timedelta | None
) -> dict[str, Any]:
    return {"sesame_token": _CLEANSED, "scope": scope, "max_age": max_age}


def authenticate(
    request: HttpRequest | None,
    *,
    sesame_token: str,
    scope: str,
    max_age: float | datetime.timedelta | None,
) -> AbstractBaseUser | None:
    """
    Return the user authenticated by ``sesame_token``, as :func:`django.contrib.auth.authenticate` would, or :obj:`None`.

    It calls the backends of :setting:`AUTHENTICATION_BACKENDS` that accept a
    token, sets ``user.backend`` and sends
    :data:`~django.contrib.auth.signals.user_login_failed` like Django's,
    at a fraction of the cost.

    """
    backends = [
        (path, cls(), kind) for path, cls, kind in _backends() if kind is not _SKIP
    ]
    for path, backend, kind in backends:
        try:
            if kind is _SESAME:
                user = backend.authenticate(
                    request, sesame_token=sesame_token, scope=scope, max_age=max_age
                )
            else:
                credentials = {
                    "sesame_token": sesame_token,
                    "scope": scope,
                    "max_age": max_age,
                }
                try:
                    _signature(backend.authenticate).bind(request, **credentials)
                except TypeError:
                    continue
                user = backend.authenticate(request, **credentials)
        except PermissionDenied:
            break
        if user is None:
            if verify.guest_accepted():
                # A guest link was used: it authenticates no one, and isn't
                # a failed login; no other backend may use it again.
                return None
            continue
        user.backend = path
        return user  # type: ignore[no-any-return]
    user_login_failed.send(
        sender=_SENDER, credentials=_failed_credentials(scope, max_age), request=request
    )
    return None


async def aauthenticate(
    request: HttpRequest | None,
    *,
    sesame_token: str,
    scope: str,
    max_age: float | datetime.timedelta | None,
) -> AbstractBaseUser | None:
    """See :func:`authenticate`; like :func:`django.contrib.auth.aauthenticate`."""
    backends = [
        (path, cls(), kind) for path, cls, kind in _backends() if kind is not _SKIP
    ]
    for path, backend, kind in backends:
        try:
            if kind is _SESAME:
                user = await backend.aauthenticate(
                    request, sesame_token=sesame_token, scope=scope, max_age=max_age
                )
            else:
                credentials = {
                    "sesame_token": sesame_token,
                    "scope": scope,
                    "max_age": max_age,
                }
                try:
                    _signature(backend.authenticate).bind(request, **credentials)
                except TypeError:
                    continue
                user = await backend.aauthenticate(request, **credentials)
        except PermissionDenied:
            break
        if user is None:
            if verify.guest_accepted():
                # A guest link was used: it authenticates no one, and isn't
                # a failed login; no other backend may use it again.
                return None
            continue
        user.backend = path
        return user  # type: ignore[no-any-return]
    await user_login_failed.asend(
        sender=_SENDER, credentials=_failed_credentials(scope, max_age), request=request
    )
    return None

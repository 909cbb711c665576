"""
Authentication backends that accept sesame_db tokens.

They adapt :mod:`sesame_db.verify`, where tokens are checked, to Django's
authentication backend API.

"""

from __future__ import annotations

import datetime
import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import backends as auth_backends
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest

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
        """Load an active user by the field named by :data:`SESAME_PRIMARY_KEY_FIELD`."""
        User = get_user_model()
        try:
            user = User._default_manager.get(**{conf.PRIMARY_KEY_FIELD: user_key})
        except User.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

    async def aget_token_user(self, user_key: Any) -> AbstractBaseUser | None:
        """See :meth:`get_token_user`."""
        User = get_user_model()
        try:
            user = await User._default_manager.aget(
                **{conf.PRIMARY_KEY_FIELD: user_key}
            )
        except User.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

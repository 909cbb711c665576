"""
Authentication backends that accept sesame_db tokens.

"""

from __future__ import annotations

import datetime
import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import backends as auth_backends
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import update_last_login as django_update_last_login
from django.contrib.auth.signals import user_logged_in
from django.db.models import Model
from django.http import HttpRequest
from django.utils import timezone

from . import ratelimit, store, tokens_store
from .conf import conf
from .exceptions import InvalidToken, Reason
from .tokens import aparse_token, parse_token

__all__ = ["ModelBackend", "SesameBackendMixin"]


def _used_up(user: AbstractBaseUser) -> InvalidToken:
    return InvalidToken(
        Reason.USED_UP, "One-time token already used by user pk = %r", user.pk
    )


def _check_installed() -> None:
    if not store.is_installed():
        raise InvalidToken(
            Reason.MALFORMED,
            "Bad token: stored tokens require 'sesame_db' in INSTALLED_APPS",
        )


# The MAC is checked before any query; the rate limit, if any, right after,
# so that a client over the limit gets the same answer for any token. The
# attempt is counted there, before the check, and given back if the token is
# valid (ratelimit.pending).


def _decode_stored(
    token: str, scope: str, request: HttpRequest | None
) -> tokens_store.StoredClaims:
    _check_installed()
    try:
        claims = tokens_store.decode_token(token, scope, timezone.now())
    except InvalidToken as exc:
        ratelimit.check(request, exc.token_id)
        raise
    ratelimit.check(request, claims.record_id)
    return claims


async def _adecode_stored(
    token: str, scope: str, request: HttpRequest | None
) -> tokens_store.StoredClaims:
    _check_installed()
    try:
        claims = tokens_store.decode_token(token, scope, timezone.now())
    except InvalidToken as exc:
        await ratelimit.acheck(request, exc.token_id)
        raise
    await ratelimit.acheck(request, claims.record_id)
    return claims


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
            if tokens_store.detect_token(token):
                claims = _decode_stored(token, scope, request)
                with ratelimit.pending(request, claims.record_id):
                    user, _ = store.redeem(
                        claims,
                        scope=scope,
                        max_age=max_age,
                        request=request,
                        can_authenticate=self._can_authenticate,
                        sender=type(self),
                    )
                return user
            ratelimit.check(request, None)
            with ratelimit.pending(request, None):
                user = parse_token(token, self.get_token_user, scope, max_age)
                if conf.ONE_TIME and not self._consume(user):
                    raise _used_up(user)
        except InvalidToken as exc:
            with ratelimit.auditing(request, exc, scope) as audit:
                store.reject(
                    exc, request=request, scope=scope, sender=type(self), audit=audit
                )
            return None
        store.accept(user, request=request, scope=scope, sender=type(self))
        return user

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
            if tokens_store.detect_token(token):
                claims = await _adecode_stored(token, scope, request)
                async with ratelimit.apending(request, claims.record_id):
                    # One thread hop for the whole redemption, rather than one
                    # per query with the async ORM, whose methods are
                    # sync_to_async wrappers of the same sync code.
                    user, _ = await sync_to_async(store.redeem)(
                        claims,
                        scope=scope,
                        max_age=max_age,
                        request=request,
                        can_authenticate=self._can_authenticate,
                        sender=type(self),
                    )
                return user
            await ratelimit.acheck(request, None)
            async with ratelimit.apending(request, None):
                user = await aparse_token(token, self.aget_token_user, scope, max_age)
                if conf.ONE_TIME and not await self._aconsume(user):
                    raise _used_up(user)
        except InvalidToken as exc:
            async with ratelimit.aauditing(request, exc, scope) as audit:
                await store.areject(
                    exc, request=request, scope=scope, sender=type(self), audit=audit
                )
            return None
        store.accept(user, request=request, scope=scope, sender=type(self))
        return user

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

    @staticmethod
    def _one_time_update(user: AbstractBaseUser) -> tuple[Any, datetime.datetime]:
        # The update succeeds only if last_login is still the value that the
        # token was verified against: a compare-and-set.
        model: type[Model] = type(user)
        # With multi-table inheritance, last_login may be in a parent's
        # table. Update that table: through the child, the ORM would select
        # the matching keys, then update them without the condition.
        owner = model._meta.get_field("last_login").model
        if owner._meta.concrete_model is not model._meta.concrete_model:
            model = owner
        manager = model._default_manager
        return manager.filter(pk=user.pk, last_login=user.last_login), timezone.now()

    def _consume(self, user: AbstractBaseUser) -> bool:
        queryset, now = self._one_time_update(user)
        if queryset.update(last_login=now) == 0:
            return False
        _set_last_login(user, now)
        return True

    async def _aconsume(self, user: AbstractBaseUser) -> bool:
        queryset, now = self._one_time_update(user)
        if await queryset.aupdate(last_login=now) == 0:
            return False
        _set_last_login(user, now)
        return True


# Consuming a one-time token writes last_login = now, and login() would then
# write it again: Django connects its update_last_login() receiver to
# user_logged_in. That second UPDATE is one query more than django-sesame,
# which doesn't consume tokens that login() will invalidate anyway, at the
# cost of letting two concurrent uses both win. Here the compare-and-set
# stays the single point of consumption, and SesameDbConfig.ready() swaps
# Django's receiver for update_last_login() below, under the same
# dispatch_uid: it skips the write for a user whose last_login this module
# has just written, once, and calls Django's receiver for everyone else.
# The mark is the value written, so a last_login changed in between is
# written again. Without "sesame_db" in INSTALLED_APPS, ready() doesn't run
# and login() writes last_login a second time: correct, one query more.
_LAST_LOGIN_WRITTEN = "_sesame_db_last_login_written"


def _set_last_login(user: AbstractBaseUser, now: datetime.datetime) -> None:
    user.last_login = now
    user.__dict__[_LAST_LOGIN_WRITTEN] = now


def update_last_login(sender: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
    """Update the last login date of ``user``, unless consuming a one-time token has just done it."""
    written = user.__dict__.pop(_LAST_LOGIN_WRITTEN, None)
    if written is not None and written == user.last_login:
        return
    # django-stubs types it for the default User model only.
    django_update_last_login(sender, user, **kwargs)  # type: ignore[arg-type]


def replace_update_last_login() -> bool:
    """
    Put :func:`update_last_login` in the place of Django's receiver of ``user_logged_in``.

    Do nothing if Django's receiver isn't connected: the user model has no
    ``last_login`` field, or the project disconnected it on purpose, or
    ``django.contrib.auth`` comes after ``sesame_db`` in
    :setting:`INSTALLED_APPS`. Return whether it was replaced.

    """
    if not user_logged_in.disconnect(dispatch_uid="update_last_login"):
        return False
    user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")
    return True


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

        """
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

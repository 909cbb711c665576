"""
Verification of tokens: the one place that checks them.

A token goes through the same steps whatever its format:

1. :func:`~sesame_db.tokens.decode_token` picks the format (stored ``~``,
   v2 or v1) and checks the MAC, with no query;
2. :func:`~sesame_db.ratelimit.check` counts the attempt, before the check,
   and refuses it if the client or the link is over :data:`SESAME_RATE_LIMIT`,
   so that a client over the limit gets the same answer for any token;
3. a stored token is redeemed by :func:`~sesame_db.store.redeem`, which
   counts its use; a stateless token's user is loaded and checked, and a
   one-time token is consumed by a compare-and-set of ``last_login``;
4. the outcome is recorded: :func:`~sesame_db.store.accept` for a valid
   stateless token (``redeem`` records its own), :func:`~sesame_db.store.reject`
   for a rejection, whose audit rows :func:`~sesame_db.ratelimit.auditing`
   bounds.

A rejection is raised as :exc:`~sesame_db.exceptions.InvalidToken`, rate
limiting included. The authentication backend turns it into :obj:`None`, as
Django's :func:`~django.contrib.auth.authenticate` expects, and
:func:`capture` hands it over to :func:`~sesame_db.utils.get_user`, whose
entry points turn it into a response (:mod:`sesame_db.responses`).

"""

from __future__ import annotations

import contextvars
import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import update_last_login as django_update_last_login
from django.contrib.auth.signals import user_logged_in
from django.db.models import Model
from django.http import HttpRequest
from django.utils import timezone

from . import ratelimit, store
from .conf import conf
from .exceptions import InvalidToken, Reason
from .tokens import DecodedToken, decode_token, verify_user
from .tokens_store import StoredClaims

if TYPE_CHECKING:
    from .models import IssuedToken

__all__ = [
    "Outcome",
    "averify",
    "capture",
    "guest_accepted",
    "replace_update_last_login",
    "update_last_login",
    "verify",
]


class Outcome(list[InvalidToken]):
    """
    The outcome of the checks made in a :class:`capture` block: the list of their rejections.

    ``link`` is the :class:`~sesame_db.models.IssuedToken` of the stored
    token that was accepted, if any, a guest link's included; ``guests``
    tells whether the block accepts guest links.

    """

    __slots__ = ("guests", "link")

    def __init__(self, guests: bool) -> None:
        super().__init__()
        self.guests = guests
        self.link: IssuedToken | None = None


# The outcome of the checks made in a capture() block.
_rejections: contextvars.ContextVar[Outcome | None] = contextvars.ContextVar(
    "sesame_db_rejections", default=None
)


class capture:  # lower case, like a context manager function
    """
    Collect the rejections of the tokens checked in the block, in a list, an :class:`Outcome`.

    Django's :func:`~django.contrib.auth.authenticate` only tells whether a
    backend returned a user; :func:`~sesame_db.utils.get_user` checks tokens
    in this block to learn why one didn't, such as rate limiting, and which
    stored link was used.

    With ``guests``, a guest link is accepted in the block: it's counted and
    recorded in the outcome's ``link``, and the backend returns :obj:`None`,
    since it authenticates no one. Everywhere else, a guest link is refused
    with :attr:`~sesame_db.exceptions.Reason.GUEST_LINK`.

    """

    # A class rather than a generator: it's on the path of every token.
    __slots__ = ("guests", "rejections", "reset")

    def __init__(self, *, guests: bool = False) -> None:
        self.guests = guests

    def __enter__(self) -> Outcome:
        self.rejections = Outcome(self.guests)
        self.reset = _rejections.set(self.rejections)
        return self.rejections

    def __exit__(self, *exc_info: object) -> None:
        _rejections.reset(self.reset)


def _rejected(exc: InvalidToken) -> None:
    rejections = _rejections.get()
    if rejections is not None:
        rejections.append(exc)


def _guests_allowed() -> bool:
    outcome = _rejections.get()
    return outcome is not None and outcome.guests


def _used(record: IssuedToken) -> None:
    outcome = _rejections.get()
    if outcome is not None:
        outcome.link = record


def guest_accepted() -> bool:
    """Tell whether a guest link was accepted in the current :class:`capture` block: no backend need check the token again."""
    outcome = _rejections.get()
    return outcome is not None and outcome.link is not None and outcome.link.is_guest


UserLoader = Callable[[Any], "AbstractBaseUser | None"]
AsyncUserLoader = Callable[[Any], Awaitable["AbstractBaseUser | None"]]
CanAuthenticate = Callable[[AbstractBaseUser], bool]


def _decode(
    token: str,
    scope: str,
    max_age: float | datetime.timedelta | None,
    request: HttpRequest | None,
) -> tuple[DecodedToken | StoredClaims, int | None]:
    # The MAC first, with no query; then the rate limit, which counts the
    # attempt before the check, and the link's attempts once the MAC says
    # which link it is. The attempt is given back if the token turns out
    # valid (ratelimit.pending).
    try:
        decoded = decode_token(token, max_age, scope=scope, stored=True)
    except InvalidToken as exc:
        ratelimit.check(request, exc.token_id)
        raise
    token_id = _stored_id(decoded)
    ratelimit.check(request, token_id)
    return decoded, token_id


async def _adecode(
    token: str,
    scope: str,
    max_age: float | datetime.timedelta | None,
    request: HttpRequest | None,
) -> tuple[DecodedToken | StoredClaims, int | None]:
    # The MAC, with no query; a token that fails it is counted here. The
    # caller counts a valid one: in the thread of its redemption, for a
    # stored token.
    try:
        decoded = decode_token(token, max_age, scope=scope, stored=True)
    except InvalidToken as exc:
        await ratelimit.acheck(request, exc.token_id)
        raise
    return decoded, _stored_id(decoded)


def _stored_id(decoded: DecodedToken | StoredClaims) -> int | None:
    if not isinstance(decoded, StoredClaims):
        return None
    if not store.is_installed():
        raise InvalidToken(
            Reason.MALFORMED,
            "Bad token: stored tokens require 'sesame_db' in INSTALLED_APPS",
        )
    return decoded.record_id


def _used_up(user: AbstractBaseUser) -> InvalidToken:
    return InvalidToken(
        Reason.USED_UP, "One-time token already used by user pk = %r", user.pk
    )


def verify(
    token: str,
    *,
    request: HttpRequest | None,
    scope: str,
    max_age: float | datetime.timedelta | None,
    get_user: UserLoader,
    can_authenticate: CanAuthenticate,
    sender: type,
) -> AbstractBaseUser | None:
    """
    Return the user authenticated by ``token`` in ``scope``, and record the use.

    ``get_user`` loads the user of a stateless token from its key, or returns
    :obj:`None`; ``can_authenticate`` tells whether the user of a stored
    token may log in; ``sender`` is the sender of the signals.

    Raise :exc:`~sesame_db.exceptions.InvalidToken`, once the rejection is
    recorded, if the token is rejected.

    A guest link is accepted only in a :class:`capture` block that allows
    guests: then return :obj:`None`, since it authenticates no one, and
    the link is the block's outcome.

    """
    try:
        decoded, token_id = _decode(token, scope, max_age, request)
        with ratelimit.pending(request, token_id):
            if isinstance(decoded, StoredClaims):
                owner, record = store.redeem(
                    decoded,
                    scope=scope,
                    max_age=max_age,
                    request=request,
                    can_authenticate=can_authenticate,
                    sender=sender,
                    guests=_guests_allowed(),
                )
                _used(record)
                return owner
            user = verify_user(decoded, get_user(decoded.user_key), scope)
            if conf.ONE_TIME and not _consume(user):
                raise _used_up(user)
    except InvalidToken as exc:
        with ratelimit.auditing(request, exc, scope) as audit:
            store.reject(exc, request=request, scope=scope, sender=sender, audit=audit)
        _rejected(exc)
        raise
    store.accept(user, request=request, scope=scope, sender=sender)
    return user


async def averify(
    token: str,
    *,
    request: HttpRequest | None,
    scope: str,
    max_age: float | datetime.timedelta | None,
    aget_user: AsyncUserLoader,
    can_authenticate: CanAuthenticate,
    sender: type,
) -> AbstractBaseUser | None:
    """See :func:`verify`; ``aget_user`` is a coroutine function."""
    try:
        decoded, token_id = await _adecode(token, scope, max_age, request)
    except InvalidToken as exc:
        await _areject(exc, request, scope, sender)
        raise
    if isinstance(decoded, StoredClaims):
        # One thread hop for all of a stored token's work once its MAC is
        # valid: the rate limit, the redemption and its audit, or the
        # rejection and its audit. The async ORM would take one hop per
        # query, since its methods are sync_to_async wrappers of the same
        # sync code, and the cache one per counter.
        try:
            owner, record = await sync_to_async(_redeem)(
                decoded,
                token_id,
                request=request,
                scope=scope,
                max_age=max_age,
                can_authenticate=can_authenticate,
                sender=sender,
                guests=_guests_allowed(),
            )
        except InvalidToken as exc:
            _rejected(exc)  # Recorded by _redeem().
            raise
        _used(record)
        return owner
    try:
        await ratelimit.acheck(request, token_id)
        async with ratelimit.apending(request, token_id):
            user = verify_user(decoded, await aget_user(decoded.user_key), scope)
            if conf.ONE_TIME and not await _aconsume(user):
                raise _used_up(user)
    except InvalidToken as exc:
        await _areject(exc, request, scope, sender)
        raise
    store.accept(user, request=request, scope=scope, sender=sender)
    return user


def _redeem(
    decoded: StoredClaims,
    token_id: int | None,
    *,
    request: HttpRequest | None,
    scope: str,
    max_age: float | datetime.timedelta | None,
    can_authenticate: CanAuthenticate,
    sender: type,
    guests: bool,
) -> tuple[AbstractBaseUser | None, IssuedToken]:
    # The steps of verify() after the MAC, for a stored token, in the thread
    # of averify()'s single hop. Whether guests are accepted is read in the
    # caller's context and passed in, and the caller records the link.
    try:
        ratelimit.check(request, token_id)
        with ratelimit.pending(request, token_id):
            return store.redeem(
                decoded,
                scope=scope,
                max_age=max_age,
                request=request,
                can_authenticate=can_authenticate,
                sender=sender,
                guests=guests,
            )
    except InvalidToken as exc:
        with ratelimit.auditing(request, exc, scope) as audit:
            store.reject(exc, request=request, scope=scope, sender=sender, audit=audit)
        raise


async def _areject(
    exc: InvalidToken, request: HttpRequest | None, scope: str, sender: type
) -> None:
    async with ratelimit.aauditing(request, exc, scope) as audit:
        await store.areject(
            exc, request=request, scope=scope, sender=sender, audit=audit
        )
    _rejected(exc)


# One-time stateless tokens. Their use is counted here, like stored tokens'
# in store.redeem(): by a compare-and-set of last_login, which the token's
# signature covers, so that two concurrent requests cannot both use it.


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


def _consume(user: AbstractBaseUser) -> bool:
    queryset, now = _one_time_update(user)
    if queryset.update(last_login=now) == 0:
        return False
    _set_last_login(user, now)
    return True


async def _aconsume(user: AbstractBaseUser) -> bool:
    queryset, now = _one_time_update(user)
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

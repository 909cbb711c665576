"""
Services of the database store: issue, redeem, reject and revoke tokens.

This is the only place that counts uses, enforces limits and writes the
audit trail. It reaches the models through the app registry when called, so
importing it doesn't require ``"sesame_db"`` in :setting:`INSTALLED_APPS`.

"""

from __future__ import annotations

import datetime
import functools
import hmac
import logging
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.db.models import Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone

from . import browsers, managers, sql, tokens_store
from .clients import client_info, client_ip
from .conf import conf
from .exceptions import InvalidToken, Reason
from .managers import RECIPIENT_CONTROL_CHARACTERS
from .signals import token_issued, token_rejected, token_used

if TYPE_CHECKING:
    from .models import IssuedToken, TokenEvent

__all__ = [
    "accept",
    "areject",
    "client_info",
    "client_ip",
    "create_functions",
    "function_variants",
    "is_installed",
    "issue",
    "issue_guests",
    "issue_many",
    "missing_functions",
    "record_event",
    "redeem",
    "reject",
    "revoke_queryset",
]

logger = logging.getLogger("sesame_db")

BATCH_SIZE = 1000


# The hot path's prebuilt SQL, called through these names.
_fetch = sql.fetch


def is_installed() -> bool:
    """Tell whether the database store is available: ``"sesame_db"`` is installed."""
    return apps.is_installed("sesame_db")


def get_models() -> tuple[type[IssuedToken], type[TokenEvent]]:
    if not is_installed():
        raise ImproperlyConfigured(
            "the database store requires 'sesame_db' in INSTALLED_APPS: add it or set SESAME_STORE to False"
        )
    return apps.get_model("sesame_db", "IssuedToken"), apps.get_model(
        "sesame_db", "TokenEvent"
    )


def _pk(user: AbstractBaseUser | None) -> Any:
    return None if user is None else user.pk


def _seconds(value: float | datetime.timedelta) -> float:
    return (
        value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    )


# Issuing.


def _expires_at(
    now: datetime.datetime, max_age: float | datetime.timedelta | None
) -> datetime.datetime | None:
    if max_age is None:
        max_age = conf.MAX_AGE
    if max_age is None:
        return None
    seconds = _seconds(max_age)
    if not seconds > 0:
        raise ValueError("max_age must be positive")
    return now + datetime.timedelta(seconds=seconds)


def issue_many(
    users: Iterable[AbstractBaseUser],
    scope: str = "",
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
) -> list[tuple[str, IssuedToken]]:
    """
    Issue one stored token per user in ``users``, in batches, in one transaction.

    Return ``(token, issued_token)`` pairs in the order of ``users``. The
    tokens take one ``INSERT`` per batch of up to ``BATCH_SIZE`` (1,000)
    users, that is ``ceil(n / 1000)`` statements for ``n`` users; when
    :data:`SESAME_AUDIT` is on, their ``issued`` events take as many more:
    20 statements for 10,000 users. Django may split batches further to stay
    under the database's limit of parameters per statement: on SQLite with
    Django 5.2, which assumes 999, a statement holds 62 tokens or 76 events
    (294 statements for 10,000 users). The database must return primary keys
    from bulk inserts, as PostgreSQL and SQLite do. If a statement fails,
    nothing is stored.

    ``max_age`` sets the expiry of the tokens, defaulting to
    :data:`SESAME_MAX_AGE`; ``max_uses`` limits how often each can be used.

    """
    return _issue(
        [
            {"user_id": user.pk, "user_digest": tokens_store.user_digest(user)}
            for user in users
        ],
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=False,
    )


def issue_guests(
    recipients: Iterable[str],
    scope: str,
    *,
    max_age: float | datetime.timedelta | None = None,
    max_uses: int | None = None,
    label: str = "",
    issued_by: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    bind_to_browser: bool = False,
) -> list[tuple[str, IssuedToken]]:
    """
    Issue one guest link per recipient in ``recipients``, like :func:`issue_many`.

    A guest link has no user: it never logs anyone in, and only entry points
    that allow guests accept it. ``scope`` is required. With
    ``bind_to_browser``, the link works only in the first browser that
    opens it (:mod:`sesame_db.browsers`).

    Raise :exc:`ValueError` if ``scope`` or a recipient is empty, or if a
    recipient is longer than 254 characters or contains control characters.

    """
    if not scope:
        raise ValueError("a guest link requires a scope")
    if isinstance(recipients, str):
        # Iterating over it would share a link with each character.
        raise TypeError(
            "recipients must be an iterable of strings, not a string: use issue_guest_token() for one"
        )
    fields = []
    for recipient in recipients:
        if not isinstance(recipient, str):
            raise TypeError(
                f"recipient must be a string, got {type(recipient).__name__}"
            )
        recipient = recipient.strip()
        if not recipient:
            raise ValueError("a guest link requires a recipient")
        if len(recipient) > 254:
            raise ValueError("a recipient has at most 254 characters")
        if RECIPIENT_CONTROL_CHARACTERS.search(recipient):
            raise ValueError("a recipient can't contain control characters")
        fields.append({"user_id": None, "recipient": recipient, "user_digest": ""})
    return _issue(
        fields,
        scope,
        max_age=max_age,
        max_uses=max_uses,
        label=label,
        issued_by=issued_by,
        request=request,
        bind_to_browser=bind_to_browser,
    )


def _issue(
    fields: list[dict[str, Any]],
    scope: str,
    *,
    max_age: float | datetime.timedelta | None,
    max_uses: int | None,
    label: str,
    issued_by: AbstractBaseUser | None,
    request: HttpRequest | None,
    bind_to_browser: bool,
) -> list[tuple[str, IssuedToken]]:
    IssuedToken, TokenEvent = get_models()
    if max_uses is not None and max_uses < 1:
        raise ValueError("max_uses must be at least 1")
    now = timezone.now()
    expires_at = _expires_at(now, max_age)
    records = [
        IssuedToken(
            scope=scope,
            label=label,
            issued_by_id=_pk(issued_by),
            expires_at=expires_at,
            max_uses=max_uses,
            bind_to_browser=bind_to_browser,
            created=now,
            modified=now,
            **values,
        )
        for values in fields
    ]
    db = router.db_for_write(IssuedToken)
    with transaction.atomic(using=db, savepoint=False):
        IssuedToken._default_manager.using(db).bulk_create(
            records, batch_size=BATCH_SIZE
        )
        if any(
            record.pk is None for record in records
        ):  # pragma: no cover - every supported database returns ids
            raise ImproperlyConfigured(
                "the database doesn't return primary keys from bulk inserts"
            )
        if conf.AUDIT:
            info = client_info(request)
            TokenEvent._default_manager.using(db).bulk_create(
                [
                    TokenEvent(
                        created_at=now,
                        kind=TokenEvent.Kind.ISSUED,
                        token=record,
                        user_id=record.user_id,
                        actor_id=_pk(issued_by),
                        scope=scope,
                        recipient=record.recipient,
                        detail=label[:255],
                        **info,
                    )
                    for record in records
                ],
                batch_size=BATCH_SIZE,
            )
        for record in records:
            transaction.on_commit(
                functools.partial(
                    token_issued.send,
                    sender=IssuedToken,
                    token=record,
                    issued_by=issued_by,
                ),
                using=db,
            )
    return [
        (tokens_store.create_token(record.pk, scope, expires_at), record)
        for record in records
    ]


def issue(
    user: AbstractBaseUser, scope: str = "", **kwargs: Any
) -> tuple[str, IssuedToken]:
    """
    Issue a stored token for ``user`` in ``scope``.

    Return the token and its :class:`~sesame_db.models.IssuedToken`. Keyword
    arguments are those of :func:`issue_many`.

    """
    [(token, record)] = issue_many([user], scope, **kwargs)
    return token, record


# Redeeming.


def _classify(record: IssuedToken, now: datetime.datetime) -> Reason | None:
    # By the status rule of the model: a revoked, expired or used up token
    # is rejected with the reason of the same name.
    status = record.status_at(now)
    if status == record.Status.ACTIVE:
        return None
    return Reason(status.value)


def _consume(
    record: IssuedToken,
    now: datetime.datetime,
    scope: str,
    request: HttpRequest | None,
    db: str,
    first: bool = False,
) -> bool:
    """Count one use of ``record`` if the database still allows it, and audit it: see :func:`sesame_db.sql.consume`."""
    return sql.consume(
        record,
        now,
        db,
        password=conf.INVALIDATE_ON_PASSWORD_CHANGE,
        email=conf.INVALIDATE_ON_EMAIL_CHANGE,
        scope=scope,
        info=client_info(request) if conf.AUDIT else None,
        synchronous_commit=conf.SYNCHRONOUS_COMMIT,
        first=first,
    )


# The PostgreSQL functions of a use, of sql.fetch() and _consume(): see
# sesame_db.sql.

# The name of the migration that brings them: "migrate sesame_db" back
# before it drops them, and without it, there's none to install.
FUNCTIONS_MIGRATION = "0005_functions"


def function_variants() -> list[tuple[bool, ...]]:
    """Return the arguments of the statements that :func:`_consume` may run with the current settings."""
    return [
        (
            conf.AUDIT,
            conf.INVALIDATE_ON_PASSWORD_CHANGE,
            conf.INVALIDATE_ON_EMAIL_CHANGE,
            asynchronous,
            guest,
            first,
        )
        # Without synchronous_commit, a use in a transaction runs
        # synchronously anyway: see sesame_db.sql.consume().
        for asynchronous in ((False,) if conf.SYNCHRONOUS_COMMIT else (False, True))
        for guest in (False, True)
        for first in (False, True)
    ]


def missing_functions(using: str) -> list[str]:
    """Return the names of the PostgreSQL functions of the current settings that database ``using`` lacks."""
    installed = sql.list_functions(using)
    return [
        function.name
        for function in sql.functions(using, function_variants())
        if function.name not in installed
    ]


def create_functions(
    app_config: Any = None,
    verbosity: int = 2,
    using: str = DEFAULT_DB_ALIAS,
    **kwargs: Any,
) -> None:
    """
    Install the PostgreSQL functions of the current settings in database ``using``.

    Connected to :data:`~django.db.models.signals.post_migrate`, like
    Django's ``create_permissions()``: every ``migrate`` installs them,
    where the store's migrations are applied and the routers allow them.

    """
    from django.db.migrations.recorder import MigrationRecorder

    IssuedToken, _ = get_models()
    connection = connections[using]
    if connection.vendor != "postgresql" or not router.allow_migrate_model(
        using, IssuedToken
    ):
        return
    applied = MigrationRecorder(connection).applied_migrations()
    if ("sesame_db", FUNCTIONS_MIGRATION) not in applied:
        # None to use, as with MIGRATE = False in tests: the process
        # needn't look for them.
        sql._installed[using] = frozenset()
        return
    names = sql.install_functions(using, function_variants())
    if verbosity >= 2 and names:
        stdout = kwargs.get("stdout") or sys.stdout
        stdout.write(f"Installed the functions of sesame_db: {', '.join(names)}\n")


# How many times redeem() tries the UPDATE when the user's row changes
# between the SELECT and the UPDATE without failing the checks.
_ATTEMPTS = 3


def _rejected(reason: Reason, pk: int) -> InvalidToken:
    if reason is Reason.UNKNOWN:
        return InvalidToken(reason, "Unknown stored token %d", pk, token_id=pk)
    return InvalidToken(
        reason, "Stored token %d rejected: %s", pk, reason.value, token_id=pk
    )


def _check(
    record: IssuedToken | None,
    claims: tokens_store.StoredClaims,
    now: datetime.datetime,
    scope: str,
    max_age: float | datetime.timedelta | None,
    can_authenticate: Callable[[AbstractBaseUser], bool],
    guests: bool,
    bound_here: bool,
) -> Reason | None:
    """
    Tell why ``record`` and its user, as read, don't allow a use now, or return :obj:`None`.

    A guest link is refused unless ``guests``; a link bound to a browser,
    once used, is refused unless ``bound_here``: the request comes from the
    browser that used it first.

    """
    if record is None:
        return Reason.UNKNOWN
    reason = _classify(record, now)
    if (
        reason is None
        and max_age is not None
        and record.created + datetime.timedelta(seconds=_seconds(max_age)) <= now
    ):
        reason = Reason.EXPIRED
    if reason is None and record.scope != scope:
        reason = Reason.WRONG_SCOPE
    user = record.user
    if user is None:
        # A guest link: there's no user to check.
        if reason is None and not guests:
            reason = Reason.GUEST_LINK
    else:
        if reason is None and not can_authenticate(user):
            reason = Reason.INACTIVE_USER
        if reason is None and not hmac.compare_digest(
            record.user_digest, claims.user_digest(user)
        ):
            reason = Reason.INVALIDATED
    if (
        reason is None
        and record.bind_to_browser
        and not bound_here
        and record.use_count > 0
    ):
        reason = Reason.OTHER_BROWSER
    return reason


def redeem(
    claims: tokens_store.StoredClaims,
    *,
    scope: str,
    max_age: float | datetime.timedelta | None = None,
    request: HttpRequest | None = None,
    can_authenticate: Callable[[AbstractBaseUser], bool],
    sender: type,
    guests: bool = False,
) -> tuple[AbstractBaseUser | None, IssuedToken]:
    """
    Use the stored token described by ``claims``: check it against the database and count the use.

    Reads and writes go to :func:`~django.db.router.db_for_write` for
    :class:`~sesame_db.models.IssuedToken`, so a revocation is never missed
    because a replica lags. ``max_age``, if set, rejects tokens issued longer
    ago, on top of their own expiry.

    Return the user and the token, and send
    :data:`~sesame_db.signals.token_used` once the use is committed. Raise
    :exc:`~sesame_db.exceptions.InvalidToken` if the database rejects it.

    A guest link's user is :obj:`None`; it's refused with
    :attr:`~sesame_db.exceptions.Reason.GUEST_LINK` unless ``guests``. A
    link bound to a browser is refused with
    :attr:`~sesame_db.exceptions.Reason.OTHER_BROWSER` in any other browser
    than the first that used it, without counting a use.

    """
    IssuedToken, _ = get_models()
    pk = claims.record_id
    db = router.db_for_write(IssuedToken)
    now = timezone.now()
    # 1. The record, joined to its user.
    record = _fetch(db, pk)
    bound_here = browsers.is_bound_here(request, pk)
    reason = _check(
        record, claims, now, scope, max_age, can_authenticate, guests, bound_here
    )
    if reason is not None:
        raise _rejected(reason, pk)
    assert record is not None
    # 2. The use, counted if the database still allows it: the UPDATE checks
    # the record and its user's row again.
    for _ in range(_ATTEMPTS):
        # The first use of a link bound to a browser binds it to this one:
        # counted only if no other browser was first.
        first = record.bind_to_browser and not bound_here
        if _consume(record, now, scope, request, db, first):
            break
        # The record or its user changed since they were read: read them
        # again, to tell why.
        now = timezone.now()
        record = _fetch(db, pk)
        reason = _check(
            record, claims, now, scope, max_age, can_authenticate, guests, bound_here
        )
        if reason is not None:
            raise _rejected(reason, pk)
        assert record is not None
        # A change that the checks allow, such as a deactivation when the
        # backend lets inactive users in: try again with what was just read.
    else:
        raise InvalidToken(
            Reason.INVALIDATED,
            "Stored token %d rejected: its user kept changing during the use",
            pk,
            token_id=pk,
        )
    record.use_count += 1
    record.last_used_at = record.modified = now
    if record.user_id is None:
        logger.debug("Valid guest link %d in scope %r", pk, scope)
    else:
        logger.debug(
            "Valid stored token %d for user pk = %r in scope %r",
            pk,
            record.user_id,
            scope,
        )
    transaction.on_commit(
        functools.partial(
            token_used.send,
            sender=sender,
            request=request,
            user=record.user,
            token=record,
            scope=scope,
        ),
        using=db,
    )
    return record.user, record


def reject(
    exc: InvalidToken,
    *,
    request: HttpRequest | None,
    scope: str,
    sender: type,
    audit: bool = True,
) -> None:
    """
    Record a rejected token: a DEBUG log line, an audit event if the token identifies a stored one, and :data:`~sesame_db.signals.token_rejected`.

    With ``audit`` false, the audit event is left out: the backend passes
    what :func:`~sesame_db.ratelimit.auditing` says, which keeps
    repeated rejections from filling the audit trail.

    """
    logger.debug(exc.message, *exc.log_args)
    send = functools.partial(
        token_rejected.send,
        sender=sender,
        request=request,
        reason=exc.reason,
        token_id=exc.token_id,
        scope=scope,
    )
    if exc.token_id is None or not audit or not conf.AUDIT or not is_installed():
        send()
        return
    IssuedToken, TokenEvent = get_models()
    db = router.db_for_write(TokenEvent)
    # The user, or a guest link's recipient, comes from the token row in
    # the same INSERT.
    token = IssuedToken._default_manager.filter(pk=exc.token_id)
    TokenEvent._default_manager.using(db).create(
        kind=TokenEvent.Kind.REJECTED,
        reason=exc.reason,
        token_id=exc.token_id,
        user_id=Subquery(token.values("user_id")[:1]),
        recipient=Coalesce(Subquery(token.values("recipient")[:1]), Value("")),
        scope=scope,
        **client_info(request),
    )
    transaction.on_commit(send, using=db)


async def areject(
    exc: InvalidToken,
    *,
    request: HttpRequest | None,
    scope: str,
    sender: type,
    audit: bool = True,
) -> None:
    """See :func:`reject`; only a rejection with an audit event needs a thread."""
    if exc.token_id is not None and audit and conf.AUDIT:
        await sync_to_async(reject)(exc, request=request, scope=scope, sender=sender)
    else:
        reject(exc, request=request, scope=scope, sender=sender, audit=audit)


def accept(
    user: AbstractBaseUser, *, request: HttpRequest | None, scope: str, sender: type
) -> None:
    """Record an accepted stateless token: a DEBUG log line and :data:`~sesame_db.signals.token_used`."""
    if logger.isEnabledFor(logging.DEBUG):
        key = conf.PRIMARY_KEY_FIELD
        logger.debug(
            "Valid token for user %s = %r in scope %r", key, getattr(user, key), scope
        )
    token_used.send(sender=sender, request=request, user=user, token=None, scope=scope)


def record_event(
    kind: str,
    *,
    request: HttpRequest | None,
    scope: str,
    detail: str,
    reason: str = "",
    token_id: int | None = None,
    user: AbstractBaseUser | None = None,
) -> None:
    """
    Record an audit event that no other service records, with a ``detail`` text.

    The flow of :mod:`sesame_db.login` records with it what happens around
    its links without a use or a rejection of a token: an email sent, a
    request throttled, a link opened in another browser, a wrong code.
    ``kind`` and ``reason`` are values of
    :class:`~sesame_db.models.TokenEvent.Kind` and
    :class:`~sesame_db.exceptions.Reason`. Nothing is recorded when
    :data:`SESAME_AUDIT` is off.

    """
    if not conf.AUDIT or not is_installed():
        return
    IssuedToken, TokenEvent = get_models()
    user_id: Any = _pk(user)
    if user_id is None and token_id is not None:
        # The user comes from the token row in the same INSERT.
        user_id = Subquery(
            IssuedToken._default_manager.filter(pk=token_id).values("user_id")[:1]
        )
    TokenEvent._default_manager.using(router.db_for_write(TokenEvent)).create(
        kind=kind,
        reason=reason,
        token_id=token_id,
        user_id=user_id,
        scope=scope,
        detail=detail[:255],
        **client_info(request),
    )


# Revoking.


def revoke_queryset(
    queryset: Any,
    *,
    by: AbstractBaseUser | None = None,
    reason: str = "",
    request: HttpRequest | None = None,
) -> int:
    """
    Revoke the tokens of ``queryset`` that aren't revoked yet, in batches.

    Each batch of up to ``BATCH_SIZE`` (1,000) tokens is one transaction:
    one ``UPDATE`` and, when :data:`SESAME_AUDIT` is on, one ``INSERT`` of
    ``revoked`` events, split by Django into ``INSERT`` statements of 76 events
    on SQLite with Django 5.2. Return how many tokens were revoked.

    This is :meth:`IssuedTokenQuerySet.revoke()
    <sesame_db.managers.IssuedTokenQuerySet.revoke>`, for any query set of
    :class:`~sesame_db.models.IssuedToken`.

    """
    get_models()
    return managers.revoke(queryset, by=by, reason=reason, request=request)

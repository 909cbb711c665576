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
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections, router, transaction
from django.db.models import Exists, Field, ForeignKey, Model, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.manager import BaseManager
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from . import tokens_store
from .conf import conf
from .exceptions import InvalidToken, Reason
from .signals import token_issued, token_rejected, token_revoked, token_used

if TYPE_CHECKING:
    from .models import IssuedToken, TokenEvent

__all__ = [
    "accept",
    "areject",
    "client_info",
    "client_ip",
    "is_installed",
    "issue",
    "issue_many",
    "redeem",
    "reject",
    "revoke_queryset",
]

logger = logging.getLogger("sesame_db")

BATCH_SIZE = 1000


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


# Client information for the audit trail.


def client_ip(request: HttpRequest) -> str | None:
    """
    Return the IP address of the client of ``request``, or :obj:`None`.

    It's ``REMOTE_ADDR``, unless :data:`SESAME_TRUSTED_PROXIES` is set to the
    number of reverse proxies in front of Django: then it's the address that
    the outermost trusted proxy added to ``X-Forwarded-For``.

    """
    address = request.META.get("REMOTE_ADDR", "")
    source = "REMOTE_ADDR"
    hops = conf.TRUSTED_PROXIES
    if hops:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        # Entries left of those added by trusted proxies are client-controlled.
        if len(forwarded) >= hops:
            address = forwarded[-hops]
            source = "X-Forwarded-For"
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        _log_unknown_address(source, address)
        return None


# Whether this process logged an unparsable client address at WARNING yet.
_unknown_address_logged = False


def _log_unknown_address(source: str, address: str) -> None:
    # A deployment where no request has an address (a server on a Unix
    # socket, a proxy that isn't counted in SESAME_TRUSTED_PROXIES) can't be
    # seen by a system check: say it once per process, loudly enough.
    global _unknown_address_logged
    if _unknown_address_logged:
        logger.debug("Unknown client address in %s: %r", source, address[:64])
        return
    _unknown_address_logged = True
    logger.warning(
        "Unknown client address in %s: %r. The audit trail records no address, "
        "and SESAME_RATE_LIMIT counts every such client together. Behind a reverse "
        "proxy, set SESAME_TRUSTED_PROXIES to the number of proxies that append to "
        "X-Forwarded-For. Logged once per process.",
        source,
        address[:64],
    )


def client_info(request: HttpRequest | None) -> dict[str, Any]:
    """Return the audit fields describing ``request``: IP, user agent, method and path."""
    if request is None:
        return {}
    return {
        "ip": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:255],
        "method": (request.method or "")[:16],
        # The path only: the query string holds the token.
        "path": request.path[:255],
    }


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
    Django 5.2, which assumes 999, a statement holds 71 tokens or 83 events
    (262 statements for 10,000 users). The database must return primary keys
    from bulk inserts, as PostgreSQL and SQLite do. If a statement fails,
    nothing is stored.

    ``max_age`` sets the expiry of the tokens, defaulting to
    :data:`SESAME_MAX_AGE`; ``max_uses`` limits how often each can be used.

    """
    IssuedToken, TokenEvent = get_models()
    if max_uses is not None and max_uses < 1:
        raise ValueError("max_uses must be at least 1")
    now = timezone.now()
    expires_at = _expires_at(now, max_age)
    records = [
        IssuedToken(
            user_id=user.pk,
            scope=scope,
            label=label,
            issued_by_id=_pk(issued_by),
            expires_at=expires_at,
            max_uses=max_uses,
            user_digest=tokens_store.user_digest(user),
            created=now,
            modified=now,
        )
        for user in users
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
    if record.revoked_at is not None:
        return Reason.REVOKED
    if record.expires_at is not None and record.expires_at <= now:
        return Reason.EXPIRED
    if record.max_uses is not None and record.use_count >= record.max_uses:
        return Reason.USED_UP
    return None


def _hides_users(User: type[Model]) -> bool:
    # A default manager that overrides get_queryset() may hide users (soft
    # deletion). Its condition may change with time or context (the current
    # tenant), so it's compiled on each use rather than with the SQL.
    manager = User._default_manager
    return type(manager).get_queryset is not BaseManager.get_queryset


class _Select:
    """A prebuilt ``SELECT`` of a token joined to its user, with the converters of each column."""

    def __init__(self, db: str) -> None:
        IssuedToken, _ = get_models()
        user_field = IssuedToken._meta.get_field("user")
        assert isinstance(user_field, ForeignKey)
        User: type[Model] = user_field.related_model
        connection = connections[db]

        def column(alias: str, field: Field[Any, Any]) -> str:
            return f"{alias}.{connection.ops.quote_name(str(field.column))}"

        def table(model: type[Model]) -> str:
            return str(connection.ops.quote_name(model._meta.db_table))

        self.token_model = IssuedToken
        self.user_model = User
        self.hides_users = _hides_users(User)
        # With multi-table inheritance, user fields span several tables:
        # leave those models to the ORM. Proxy models share their table.
        self.sql: str | None = None
        concrete = User._meta.concrete_model
        assert concrete is not None
        if concrete._meta.parents:
            return
        self.token_fields: list[Field[Any, Any]] = list(
            IssuedToken._meta.concrete_fields
        )
        self.user_fields: list[Field[Any, Any]] = list(User._meta.concrete_fields)
        columns = [column("t", f) for f in self.token_fields] + [
            column("u", f) for f in self.user_fields
        ]
        self.sql_select = f"SELECT {', '.join(columns)}"
        self.sql_from = (
            f" FROM {table(IssuedToken)} t "
            f"INNER JOIN {table(User)} u ON {column('u', user_field.target_field)} = {column('t', user_field)} "
            f"WHERE {column('t', IssuedToken._meta.pk)} = %s"
        )
        self.sql = self.sql_select + self.sql_from
        # The user's key in the outer query, for the default manager's
        # subquery, when it may hide users.
        self.user_pk = RawSQL(column("u", User._meta.pk), ())
        # What the ORM would apply to each value: backend and field converters.
        self.converters: list[tuple[int, list[Callable[..., Any]], Any]] = []
        for index, field in enumerate(self.token_fields + self.user_fields):
            col = field.get_col("t")
            functions = [
                *connection.ops.get_db_converters(col),
                *col.get_db_converters(connection),
            ]
            if functions:
                self.converters.append((index, functions, col))
        self.token_attnames = [f.attname for f in self.token_fields]
        self.user_attnames = [f.attname for f in self.user_fields]

    def visible_sql(self, db: str) -> tuple[str, tuple[Any, ...]]:
        """Compile ``EXISTS`` (the user is among the default manager's), correlated to the outer query."""
        queryset = self.user_model._default_manager.db_manager(db).get_queryset()
        query = queryset.query.exists(limit=False)
        query.add_q(Q(pk=self.user_pk))
        sql, params = query.get_compiler(db, elide_empty=False).as_sql()
        return f"EXISTS ({sql})", tuple(params)


@functools.cache
def _select(db: str) -> _Select:
    return _Select(db)


@receiver(setting_changed, dispatch_uid="sesame_db.store.clear_sql")
def clear_sql(*, setting: str, **kwargs: Any) -> None:
    # The prebuilt SQL depends on the database engine and the user model.
    if setting in ("DATABASES", "AUTH_USER_MODEL"):
        _select.cache_clear()
        _consume_statements.cache_clear()


def _hidden_user(pk: int) -> InvalidToken:
    # Like a stateless token whose user the default manager doesn't find.
    reason = Reason.UNKNOWN_USER
    return InvalidToken(
        reason, "Stored token %d rejected: %s", pk, reason.value, token_id=pk
    )


def _fetch(db: str, pk: int) -> IssuedToken | None:
    """
    Load token ``pk`` and its user in one query, or return :obj:`None`.

    This equals ``select_related("user").get(pk=pk)``, without compiling the
    query on every use: it's the hot path of every use.

    The user is loaded as the user model's default manager would, like a
    stateless token's: if that manager hides the user (soft deletion), raise
    :exc:`~sesame_db.exceptions.InvalidToken` with
    :attr:`~sesame_db.exceptions.Reason.UNKNOWN_USER`. Only its condition is
    compiled on each use, still in the same query.

    """
    select = _select(db)
    if select.sql is None:
        queryset = select.token_model._default_manager.using(db).select_related("user")
        if select.hides_users:
            users = select.user_model._default_manager.db_manager(db).get_queryset()
            queryset = queryset.annotate(
                sesame_db_visible=Exists(users.filter(pk=OuterRef("user_id")))
            )
        record = queryset.filter(pk=pk).first()
        if record is not None and not getattr(record, "sesame_db_visible", True):
            raise _hidden_user(pk)
        return record
    sql, params = select.sql, [pk]
    if select.hides_users:
        visible, visible_params = select.visible_sql(db)
        sql = f"{select.sql_select}, {visible}{select.sql_from}"
        params = [*visible_params, pk]
    connection = connections[db]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    if select.hides_users and not row[-1]:
        raise _hidden_user(pk)
    values = list(row)
    for index, functions, column in select.converters:
        for function in functions:
            values[index] = function(values[index], column, connection)
    split = len(select.token_attnames)
    record = select.token_model.from_db(db, select.token_attnames, values[:split])
    user = select.user_model.from_db(
        db, select.user_attnames, values[split : split + len(select.user_attnames)]
    )
    record.user = user  # type: ignore[assignment]
    return record


def _consume(
    record: IssuedToken,
    now: datetime.datetime,
    scope: str,
    request: HttpRequest | None,
    db: str,
) -> bool:
    """
    Count one use of ``record`` if the database still allows it, and audit it.

    The conditions are repeated in the ``UPDATE``, so that concurrent
    redemptions cannot exceed ``max_uses`` or follow a revocation: the row
    count decides. The ``UPDATE`` also requires that the user's row still
    holds the values that :func:`redeem` checked: the password hash and the
    email that the user digest covers, and ``is_active``. So a password
    change or a deactivation committed since the ``SELECT`` stops the use.
    On PostgreSQL, the update and the audit insert are one statement;
    elsewhere, two in one transaction.

    This is the hot path of every use, so its SQL is built once per database
    from the models' metadata rather than compiled by the ORM each time.

    """
    connection = connections[db]
    audit = conf.AUDIT
    statements, guarded = _consume_statements(
        db, audit, conf.INVALIDATE_ON_PASSWORD_CHANGE, conf.INVALIDATE_ON_EMAIL_CHANGE
    )
    moment = connection.ops.adapt_datetimefield_value(now)
    params: list[Any] = [moment, moment, record.pk, moment]
    if guarded:
        user = record.user
        params += [
            field.get_db_prep_value(getattr(user, field.attname), connection)
            for field in guarded
        ]
    if audit:
        info = client_info(request)
        ip = info.get("ip")
        event = [
            moment,
            scope,
            None if ip is None else connection.ops.adapt_ipaddressfield_value(ip),
            info.get("user_agent", ""),
            info.get("method", ""),
            info.get("path", ""),
        ]
    if len(statements) == 1:
        with connection.cursor() as cursor:
            cursor.execute(statements[0], params + event if audit else params)
            return bool(cursor.rowcount == 1)
    update, insert = statements
    with transaction.atomic(using=db, savepoint=False), connection.cursor() as cursor:
        cursor.execute(update, params)
        if cursor.rowcount != 1:
            return False
        # The driver gets what the ORM would send: a UUID key becomes a
        # string on SQLite, for example.
        user_id = record._meta.get_field("user").get_db_prep_value(
            record.user_id, connection
        )
        cursor.execute(insert, [event[0], record.pk, user_id, *event[1:]])
    return True


def _guarded_fields(
    User: type[Model], password: bool, email: bool
) -> list[Field[Any, Any]]:
    """Return the columns of ``User`` that the checks of :func:`redeem` read."""
    # What tokens_store.user_digest() covers, and what the default
    # user_can_authenticate() reads. A name that isn't a column (a property,
    # or AbstractBaseUser's is_active = True) can't change under us.
    names = []
    if password:
        names.append("password")
    if email:
        names.append(User.get_email_field_name())  # type: ignore[attr-defined]
    names.append("is_active")
    fields = []
    for name in names:
        try:
            field = User._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if isinstance(field, Field) and field.concrete and field not in fields:
            fields.append(field)
    return fields


@functools.cache
def _consume_statements(
    db: str, audit: bool, password: bool, email: bool
) -> tuple[tuple[str, ...], tuple[Field[Any, Any], ...]]:
    """
    Build the SQL of :func:`_consume` for database ``db``.

    Return the statements, and the user fields whose values they take as
    parameters after those of the token, in this order.

    """
    IssuedToken, TokenEvent = get_models()
    connection = connections[db]
    qn = connection.ops.quote_name
    t = {f.name: qn(f.column) for f in IssuedToken._meta.concrete_fields if f.column}
    e = {f.name: qn(f.column) for f in TokenEvent._meta.concrete_fields if f.column}
    token_table = qn(IssuedToken._meta.db_table)
    update = (
        f"UPDATE {token_table} "
        f"SET {t['use_count']} = {t['use_count']} + 1, {t['last_used_at']} = %s, {t['modified']} = %s "
        f"WHERE {t['id']} = %s AND {t['revoked_at']} IS NULL AND ({t['expires_at']} IS NULL OR {t['expires_at']} > %s) "
        f"AND ({t['max_uses']} IS NULL OR {t['use_count']} < {t['max_uses']})"
    )
    user_field = IssuedToken._meta.get_field("user")
    assert isinstance(user_field, ForeignKey)
    User: type[Model] = user_field.related_model
    guarded = _guarded_fields(User, password, email)
    if guarded:
        # A compare-and-set on the user's row: it still holds the values that
        # were checked. With multi-table inheritance, they may live in the
        # tables of parent models, joined through their parent links.
        concrete = User._meta.concrete_model
        assert concrete is not None
        aliases: dict[type[Model], str] = {concrete: "u"}

        def column(alias: str, field: Any) -> str:
            return f"{alias}.{qn(str(field.column))}"

        joins = ""
        for field in guarded:
            for path in concrete._meta.get_path_to_parent(field.model):
                parent = path.to_opts.model
                if parent not in aliases:
                    aliases[parent] = alias = f"u{len(aliases)}"
                    joins += (
                        f" INNER JOIN {qn(path.to_opts.db_table)} {alias} "
                        f"ON {column(alias, path.target_fields[0])} = "
                        f"{column(aliases[path.from_opts.model], path.join_field)}"
                    )
        # NULL-safe equality where the column allows NULL; elsewhere, "="
        # never matches NULL, which refuses the use rather than allowing it.
        same = {"postgresql": "IS NOT DISTINCT FROM", "sqlite": "IS"}.get(
            connection.vendor, "="
        )
        conditions = "".join(
            f" AND {column(aliases[field.model], field)} {same if field.null else '='} %s"
            for field in guarded
        )
        update += (
            f" AND EXISTS (SELECT 1 FROM {qn(concrete._meta.db_table)} u{joins} "
            f"WHERE {column('u', user_field.target_field)} = {token_table}.{t['user']}{conditions})"
        )
    if not audit:
        return (update,), tuple(guarded)
    insert = (
        f"INSERT INTO {qn(TokenEvent._meta.db_table)} ({e['created_at']}, {e['kind']}, {e['reason']}, {e['token']}, "
        f"{e['user']}, {e['scope']}, {e['detail']}, {e['ip']}, {e['user_agent']}, {e['method']}, {e['path']}) "
    )
    used = f"'{TokenEvent.Kind.USED.value}'"
    if connection.vendor == "postgresql":
        # One statement, atomic by itself: one round trip.
        return (
            f"WITH used AS ({update} RETURNING {t['id']} AS token_id, {t['user']} AS user_id) "
            f"{insert}SELECT %s, {used}, '', used.token_id, used.user_id, %s, '', %s, %s, %s, %s FROM used",
        ), tuple(guarded)
    return (
        update,
        f"{insert}VALUES (%s, {used}, '', %s, %s, %s, '', %s, %s, %s, %s)",
    ), tuple(guarded)


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
) -> Reason | None:
    """Tell why ``record`` and its user, as read, don't allow a use now, or return :obj:`None`."""
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
    if reason is None and not can_authenticate(record.user):
        reason = Reason.INACTIVE_USER
    if reason is None and not hmac.compare_digest(
        record.user_digest, claims.user_digest(record.user)
    ):
        reason = Reason.INVALIDATED
    return reason


def redeem(
    claims: tokens_store.StoredClaims,
    *,
    scope: str,
    max_age: float | datetime.timedelta | None = None,
    request: HttpRequest | None = None,
    can_authenticate: Callable[[AbstractBaseUser], bool],
    sender: type,
) -> tuple[AbstractBaseUser, IssuedToken]:
    """
    Use the stored token described by ``claims``: check it against the database and count the use.

    Reads and writes go to :func:`~django.db.router.db_for_write` for
    :class:`~sesame_db.models.IssuedToken`, so a revocation is never missed
    because a replica lags. ``max_age``, if set, rejects tokens issued longer
    ago, on top of their own expiry.

    Return the user and the token, and send
    :data:`~sesame_db.signals.token_used` once the use is committed. Raise
    :exc:`~sesame_db.exceptions.InvalidToken` if the database rejects it.

    """
    IssuedToken, _ = get_models()
    pk = claims.record_id
    db = router.db_for_write(IssuedToken)
    now = timezone.now()
    # 1. The record, joined to its user.
    record = _fetch(db, pk)
    reason = _check(record, claims, now, scope, max_age, can_authenticate)
    if reason is not None:
        raise _rejected(reason, pk)
    assert record is not None
    # 2. The use, counted if the database still allows it: the UPDATE checks
    # the record and its user's row again.
    for _ in range(_ATTEMPTS):
        if _consume(record, now, scope, request, db):
            break
        # The record or its user changed since they were read: read them
        # again, to tell why.
        now = timezone.now()
        record = _fetch(db, pk)
        reason = _check(record, claims, now, scope, max_age, can_authenticate)
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
    logger.debug(
        "Valid stored token %d for user pk = %r in scope %r", pk, record.user_id, scope
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
    # The user comes from the token row in the same INSERT.
    TokenEvent._default_manager.using(db).create(
        kind=TokenEvent.Kind.REJECTED,
        reason=exc.reason,
        token_id=exc.token_id,
        user_id=Subquery(
            IssuedToken._default_manager.filter(pk=exc.token_id).values("user_id")[:1]
        ),
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
    ``revoked`` events, split by Django into ``INSERT`` statements of 83 events
    on SQLite with Django 5.2. Return how many tokens were revoked.

    """
    IssuedToken, TokenEvent = get_models()
    db = router.db_for_write(IssuedToken)
    reason = reason[:255]
    info = client_info(request)
    total = 0
    # Lock rows through a plain query of the token table: the query set may
    # join other tables or use distinct(), where FOR UPDATE isn't allowed.
    pending = (
        IssuedToken._default_manager.using(db)
        .filter(pk__in=queryset.using(db).values("pk"), revoked_at__isnull=True)
        .order_by("pk")
    )
    last_pk = None
    while True:
        batch = pending if last_pk is None else pending.filter(pk__gt=last_pk)
        with transaction.atomic(using=db):
            rows = list(
                batch.select_for_update(of=("self",)).values_list(
                    "pk", "user_id", "scope"
                )[:BATCH_SIZE]
            )
            if not rows:
                break
            ids = [pk for pk, _, _ in rows]
            now = timezone.now()
            revoked = (
                IssuedToken._default_manager.using(db)
                .filter(pk__in=ids, revoked_at__isnull=True)
                .update(
                    revoked_at=now,
                    revoked_by_id=_pk(by),
                    revoke_reason=reason,
                    modified=now,
                )
            )
            if conf.AUDIT:
                TokenEvent._default_manager.using(db).bulk_create(
                    [
                        TokenEvent(
                            created_at=now,
                            kind=TokenEvent.Kind.REVOKED,
                            token_id=pk,
                            user_id=user_id,
                            actor_id=_pk(by),
                            scope=scope,
                            detail=reason,
                            **info,
                        )
                        for pk, user_id, scope in rows
                    ]
                )
            transaction.on_commit(
                functools.partial(
                    token_revoked.send,
                    sender=IssuedToken,
                    token_ids=ids,
                    revoked_by=by,
                    reason=reason,
                ),
                using=db,
            )
        total += revoked
        last_pk = ids[-1]
        if len(rows) < BATCH_SIZE:
            break
    if total:
        logger.info("Revoked %d stored tokens", total)
    return total

"""
The prebuilt SQL of the store's hot path: the ``SELECT`` of a token with its user, and the conditional ``UPDATE`` that counts a use.

Each statement is built once per database from the models' metadata, rather
than compiled by the ORM on every use, and converts values as the ORM would:
``tests/test_sql.py`` proves that both return the same rows and values, on
SQLite and PostgreSQL, for several user models. The models are reached
through the app registry when called, like the store's.

"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.core.signals import setting_changed
from django.db import DatabaseError, connections, transaction
from django.db.models import (
    DateTimeField,
    Exists,
    Field,
    ForeignKey,
    Model,
    OuterRef,
    Q,
)
from django.db.models.expressions import Expression, RawSQL
from django.db.models.manager import BaseManager
from django.dispatch import receiver

from .exceptions import DatabaseUnavailable, InvalidToken, Reason

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

    from .models import IssuedToken, TokenEvent

__all__ = [
    "consume",
    "drop_functions",
    "fetch",
    "functions",
    "install_functions",
    "list_functions",
]

logger = logging.getLogger("sesame_db")


def get_models() -> tuple[type[IssuedToken], type[TokenEvent]]:
    return apps.get_model("sesame_db", "IssuedToken"), apps.get_model(
        "sesame_db", "TokenEvent"
    )


# Stands for the time of the use among the parameters of a prebuilt statement.
_USE_TIME = object()


class _UseTime(Expression):
    """The time of the use in a condition compiled once: a parameter bound on each execution."""

    output_field = DateTimeField()

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, Any]:
        return "%s", (_USE_TIME,)


def _hides_users(User: type[Model]) -> bool:
    # A default manager that overrides get_queryset() may hide users (soft
    # deletion). Its condition may change with time or context (the current
    # tenant), so it's compiled on each use rather than with the SQL.
    manager = User._default_manager
    return type(manager).get_queryset is not BaseManager.get_queryset


# Django's conversion of "%s" placeholders for SQLite, done once per statement.
_FORMAT_QMARK_RE = re.compile(r"(?<!%)%s")


def _qmark(sql: str) -> str:
    return _FORMAT_QMARK_RE.sub("?", sql).replace("%%", "%")


def _driver_connection(connection: BaseDatabaseWrapper) -> Any:
    """
    Return the sqlite3 connection under ``connection``, to run prebuilt statements on it, or :obj:`None`.

    Django's cursor converts the placeholders of every statement with a
    regular expression and wraps it in several layers: on SQLite, they take
    about as long as running it. The prebuilt statements are converted once
    and run on the driver's connection, with Django's error translation,
    unless something watches Django's cursors: assertNumQueries(),
    DEBUG's query log or an execute_wrapper() get the statements through
    them, as before.

    """
    if (
        connection.vendor != "sqlite"
        or connection.queries_logged
        or connection.execute_wrappers
    ):
        return None
    connection.validate_no_broken_transaction()
    if connection.connection is None:
        connection.ensure_connection()
    return connection.connection


def _pg_type(connection: BaseDatabaseWrapper, field: Any) -> str | None:
    """Return the type of ``field``'s column for a function's parameter or result, or :obj:`None`."""
    # Without its modifier, which a function's parameters and results
    # ignore: varchar(150) is varchar.
    db_type = field.db_type(connection)
    return None if db_type is None else re.sub(r"\(.*\)", "", db_type).strip()


# The types that cast to length 1 without a modifier, and their types of
# any length, for the casts of a function's arguments: 'abc'::char is 'a'.
_UNSIZED = {"char": "bpchar", "character": "bpchar", "bit": "varbit"}


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
        self.function: _Function | None = None
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
        # A LEFT JOIN: a guest link has no user.
        self.sql_from = (
            f" FROM {table(IssuedToken)} t "
            f"LEFT JOIN {table(User)} u ON {column('u', user_field.target_field)} = {column('t', user_field)} "
            f"WHERE {column('t', IssuedToken._meta.pk)} = %s"
        )
        self.sql = self.sql_select + self.sql_from
        self.qmark_sql = _qmark(self.sql)
        # On PostgreSQL, the same SELECT in a function (see below), which
        # declares the types of its columns: where one isn't the column's,
        # the function fails its check at installation, and isn't used.
        if connection.vendor == "postgresql":
            types = [_pg_type(connection, f) for f in self.token_fields]
            types += [_pg_type(connection, f) for f in self.user_fields]
            key = _pg_type(connection, IssuedToken._meta.pk)
            if key is not None and None not in types:
                results = tuple(t for t in types if t is not None)
                self.function = _function("fetch", self.sql, (key,), results)
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
        # Where the token's user key is among the columns: NULL for a guest link.
        self.user_id_index = self.token_attnames.index(user_field.attname)

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


@receiver(setting_changed, dispatch_uid="sesame_db.sql.clear_sql")
def clear_sql(*, setting: str, **kwargs: Any) -> None:
    # The prebuilt SQL depends on the database engine and the user model.
    if setting in ("DATABASES", "AUTH_USER_MODEL"):
        _select.cache_clear()
        _consume_statements.cache_clear()
    if setting == "DATABASES":
        _installed.clear()


def _hidden_user(pk: int) -> InvalidToken:
    # Like a stateless token whose user the default manager doesn't find.
    reason = Reason.UNKNOWN_USER
    return InvalidToken(
        reason, "Stored token %d rejected: %s", pk, reason.value, token_id=pk
    )


def fetch(db: str, pk: int) -> IssuedToken | None:
    """
    Load token ``pk`` and its user in one query, or return :obj:`None`.

    This equals ``select_related("user").get(pk=pk)``, without compiling the
    query on every use: it's the hot path of every use.

    The user is loaded as the user model's default manager would, like a
    stateless token's: if that manager hides the user (soft deletion), raise
    :exc:`~sesame_db.exceptions.InvalidToken` with
    :attr:`~sesame_db.exceptions.Reason.UNKNOWN_USER`. Only its condition is
    compiled on each use, still in the same query. A guest link has no user:
    its ``user`` is :obj:`None`.

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
        if (
            record is not None
            and record.user_id is not None
            and not getattr(record, "sesame_db_visible", True)
        ):
            raise _hidden_user(pk)
        return record
    connection = connections[db]
    row: Any = _MISSING
    if select.function is not None and not select.hides_users:
        # On PostgreSQL, the function of the SELECT, if the database has it.
        row = _call(db, select.function, [pk])
    if row is _MISSING:
        sql, params = select.sql, [pk]
        if select.hides_users:
            visible, visible_params = select.visible_sql(db)
            sql = f"{select.sql_select}, {visible}{select.sql_from}"
            params = [*visible_params, pk]
        driver = None if select.hides_users else _driver_connection(connection)
        if driver is not None:
            with connection.wrap_database_errors:
                row = driver.execute(select.qmark_sql, params).fetchone()
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone()
    if row is None:
        return None
    guest = row[select.user_id_index] is None
    if select.hides_users and not guest and not row[-1]:
        raise _hidden_user(pk)
    values = list(row)
    split = len(select.token_attnames)
    for index, functions, column in select.converters:
        if guest and index >= split:
            break  # The NULLs of the missing user.
        for function in functions:
            values[index] = function(values[index], column, connection)
    record = select.token_model.from_db(db, select.token_attnames, values[:split])
    if guest:
        record.user = None
        return record
    user = select.user_model.from_db(
        db, select.user_attnames, values[split : split + len(select.user_attnames)]
    )
    record.user = user  # type: ignore[assignment]
    return record


def _guarded_fields(
    User: type[Model], password: bool, email: bool
) -> list[Field[Any, Any]]:
    """Return the columns of ``User`` that the checks of :func:`~sesame_db.store.redeem` read."""
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


class _Function(NamedTuple):
    """A PostgreSQL function that runs the statement of :func:`fetch` or :func:`consume`."""

    name: str
    # CREATE OR REPLACE FUNCTION ...
    create: str
    # SELECT name(%s::type, ...), the number of uses counted, or
    # SELECT * FROM name(%s::type), the rows of the SELECT.
    call: str
    # The types of its parameters, and the statement it runs, with $1, $2...
    types: tuple[str, ...]
    body: str
    # The call with NULL values, which find no row: to check it.
    check: str


class _Consume(NamedTuple):
    """The prebuilt SQL of :func:`consume` for a database."""

    statements: tuple[str, ...]
    # The statements with SQLite's placeholders, for the driver's connection.
    qmark: tuple[str, ...]
    active_params: tuple[Any, ...]
    guarded: tuple[Field[Any, Any], ...]
    # The token's user field: its value goes into the audit event.
    user_field: Field[Any, Any]
    # What starts a transaction on SQLite, as Django does it.
    begin: str
    # On PostgreSQL, the function that runs the statement, if it can be one.
    function: _Function | None


@functools.cache
def _consume_statements(
    db: str,
    audit: bool,
    password: bool,
    email: bool,
    asynchronous: bool = False,
    guest: bool = False,
    first: bool = False,
) -> _Consume:
    statements, active_params, guarded, types = _build_consume(
        db, audit, password, email, asynchronous, guest, first
    )
    connection = connections[db]
    IssuedToken, _ = get_models()
    mode = getattr(connection, "transaction_mode", None)
    return _Consume(
        statements,
        tuple(_qmark(sql) for sql in statements)
        if connection.vendor == "sqlite"
        else (),
        active_params,
        guarded,
        IssuedToken._meta.get_field("user"),
        "BEGIN" if mode is None else f"BEGIN {mode}",
        None if types is None else _function("use", statements[0], types),
    )


def _types(
    connection: BaseDatabaseWrapper, types: list[str | None]
) -> tuple[str, ...] | None:
    # Only PostgreSQL runs the statement in a function, and only where
    # every parameter has a type.
    if connection.vendor != "postgresql" or None in types:
        return None
    return tuple(t for t in types if t is not None)


def _build_consume(
    db: str,
    audit: bool,
    password: bool,
    email: bool,
    asynchronous: bool,
    guest: bool = False,
    first: bool = False,
) -> tuple[
    tuple[str, ...],
    tuple[Any, ...],
    tuple[Field[Any, Any], ...],
    tuple[str, ...] | None,
]:
    """
    Build the SQL of :func:`consume` for database ``db``.

    For a ``guest`` link, the condition requires that the link still has no
    user, instead of the user's row holding the values that were checked.
    For the ``first`` use of a link bound to a browser, it requires that
    the link was never used: only one browser can be the first.

    Return the statements; the parameters of the status condition, where
    ``_USE_TIME`` stands for the time of the use; and the user fields whose
    values they take as parameters after those of the token and the
    token's user key twice, in this order. On PostgreSQL, where it's one
    statement, return the types of its parameters too, for a function that
    runs it (see :func:`_function`); elsewhere, :obj:`None`.

    """
    IssuedToken, TokenEvent = get_models()
    connection = connections[db]
    qn = connection.ops.quote_name
    t = {f.name: qn(f.column) for f in IssuedToken._meta.concrete_fields if f.column}
    e = {f.name: qn(f.column) for f in TokenEvent._meta.concrete_fields if f.column}
    token_table = qn(IssuedToken._meta.db_table)
    # The condition of an active token, from the status rule, compiled by the
    # ORM once; the time of the use is bound on each execution.
    active = (
        IssuedToken._base_manager.db_manager(db)
        .filter(IssuedToken.status_condition(IssuedToken.Status.ACTIVE, _UseTime()))
        .query
    )
    active_sql, active_params = active.get_compiler(db).compile(active.where)

    def pg_type(model: type[Model], name: str) -> str | None:
        return _pg_type(connection, model._meta.get_field(name))

    # The types of the parameters, in their order, for PostgreSQL.
    types = [
        pg_type(IssuedToken, "last_used_at"),
        pg_type(IssuedToken, "modified"),
        pg_type(IssuedToken, IssuedToken._meta.pk.name),
        *[
            pg_type(IssuedToken, "expires_at") if param is _USE_TIME else None
            for param in active_params
        ],
    ]
    update_set = (
        f"UPDATE {token_table} "
        f"SET {t['use_count']} = {t['use_count']} + 1, {t['last_used_at']} = %s, {t['modified']} = %s "
    )
    update = f"WHERE {t['id']} = %s AND {active_sql}"
    user_field = IssuedToken._meta.get_field("user")
    assert isinstance(user_field, ForeignKey)
    User: type[Model] = user_field.related_model
    guarded = [] if guest else _guarded_fields(User, password, email)
    if guest:
        update += f" AND {t['user']} IS NULL"
    if first:
        update += f" AND {t['use_count']} = 0"
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
        types += [pg_type(IssuedToken, "user")] * 2
        types += [pg_type(field.model, field.name) for field in guarded]
        # The user's key is a parameter, not a reference to the token's row:
        # PostgreSQL plans an uncorrelated EXISTS as a one-time filter
        # rather than joining the two tables (docs/performance.rst). The
        # token's user key is compared with the NULL-safe operator, which no
        # index serves: a plan made without the values, as a function's
        # may be, can't look the token up by its user, whose links may be
        # many, rather than by its primary key. (It's never NULL here.)
        update += (
            f" AND {t['user']} {same} %s AND EXISTS (SELECT 1 FROM {qn(concrete._meta.db_table)} u{joins} "
            f"WHERE {column('u', user_field.target_field)} = %s{conditions})"
        )
    # SESAME_SYNCHRONOUS_COMMIT = False: the transaction of the statement
    # doesn't wait for its WAL flush, as SET LOCAL would do it, from within
    # the statement, so that it stays one round trip.
    asynchronous_cte = "sesame_db_commit AS (SELECT set_config('synchronous_commit', 'off', true) AS value)"
    if asynchronous:
        assert connection.vendor == "postgresql"
    if not audit:
        if asynchronous:
            update = (
                f"WITH {asynchronous_cte} {update_set}FROM sesame_db_commit {update}"
            )
        else:
            update = update_set + update
        return (
            (update,),
            tuple(active_params),
            tuple(guarded),
            _types(connection, types),
        )
    update = update_set + update
    insert = (
        f"INSERT INTO {qn(TokenEvent._meta.db_table)} ({e['created_at']}, {e['kind']}, {e['reason']}, {e['token']}, "
        f"{e['user']}, {e['scope']}, {e['recipient']}, {e['detail']}, {e['ip']}, {e['user_agent']}, {e['method']}, {e['path']}) "
    )
    used = f"'{TokenEvent.Kind.USED.value}'"
    if connection.vendor == "postgresql":
        types += [
            pg_type(TokenEvent, name)
            for name in (
                "created_at",
                "scope",
                "recipient",
                "ip",
                "user_agent",
                "method",
                "path",
            )
        ]
        # One statement, atomic by itself: one round trip.
        return (
            (
                f"WITH used AS ({update} RETURNING {t['id']} AS token_id, {t['user']} AS user_id)"
                f"{', ' + asynchronous_cte if asynchronous else ''} "
                f"{insert}SELECT %s, {used}, '', used.token_id, used.user_id, %s, %s, '', %s, %s, %s, %s "
                f"FROM used{', sesame_db_commit' if asynchronous else ''}",
            ),
            tuple(active_params),
            tuple(guarded),
            _types(connection, types),
        )
    return (
        (
            update,
            f"{insert}VALUES (%s, {used}, '', %s, %s, %s, %s, '', %s, %s, %s, %s)",
        ),
        tuple(active_params),
        tuple(guarded),
        None,
    )


# PostgreSQL functions.
#
# With Django's default client-side binding, PostgreSQL parses and plans
# every statement it gets, at every use: for the two statements of a use,
# that took about as long as their work and the durable commit together
# (docs/performance.rst). PL/pgSQL keeps the plans of a function's
# statements for the session, as it would a prepared statement's (made
# with the values for its first five runs, then without them if that costs
# no more), but without a prepared statement's name on the connection,
# which poolers in transaction mode can't follow. So on PostgreSQL, the SELECT of fetch()
# and the statement of consume() run in functions: the same statements,
# built by the code above, with their placeholders numbered. A function's
# name ends with a digest of its definition, so a process only ever calls
# a function that runs the very statement it would run; "migrate" installs
# the functions of the current settings (sesame_db.store.create_functions),
# and where one is missing, the statement runs as it is.

# Their names: sesame_db_fetch_<digest> and sesame_db_use_<digest>.
_FUNCTION_NAME = r"^sesame_db_(fetch|use)_[0-9a-f]{24}$"
# The names of those functions that each database has, read at the first
# use of a process, or when installing them.
_installed: dict[str, frozenset[str]] = {}
# What PostgreSQL answers when a function is missing.
_UNDEFINED_FUNCTION = "42883"
# What _call() returns when the database lacks the function.
_MISSING: Any = object()


def _function(
    kind: str,
    statement: str,
    types: tuple[str, ...],
    results: tuple[str, ...] | None = None,
) -> _Function | None:
    """
    Return the function that runs ``statement``, whose parameters have ``types``.

    With ``results``, the types of the statement's columns, the function
    returns its rows; otherwise, its row count.

    """
    numbers = iter(range(1, len(types) + 1))
    body = _FORMAT_QMARK_RE.sub(lambda match: f"${next(numbers)}", statement)
    body = body.replace("%%", "%")
    if next(numbers, None) is not None or "$sesame_db$" in body:
        return None
    # Its variables have names that no column takes precedence over.
    if results is None:
        # The row count: of the INSERT of the audit event, which inserts
        # one row if the UPDATE counted the use.
        returns = "integer"
        code = (
            "DECLARE sesame_db_count integer;\n"
            f"BEGIN\n{body};\n"
            "GET DIAGNOSTICS sesame_db_count = ROW_COUNT;\n"
            "RETURN sesame_db_count;\n"
            "END"
        )
    else:
        columns = ", ".join(f"sesame_db_{i} {t}" for i, t in enumerate(results))
        returns = f"TABLE ({columns}) STABLE"
        code = f"BEGIN\nRETURN QUERY {body};\nEND"
    definition = (
        f"({', '.join(types)}) RETURNS {returns} LANGUAGE plpgsql AS $sesame_db$\n"
        f"#variable_conflict use_column\n{code}\n$sesame_db$"
    )
    digest = hashlib.sha256(definition.encode()).hexdigest()[:24]
    name = f"sesame_db_{kind}_{digest}"
    # Each argument is cast to its parameter's type, whatever the driver
    # sends, in parentheses: -2147483648::integer would be out of range.
    casts = [_UNSIZED.get(t, t) for t in types]
    arguments = ", ".join(f"(%s)::{t}" for t in casts)
    nulls = ", ".join(f"NULL::{t}" for t in casts)
    select = "SELECT" if results is None else "SELECT * FROM"
    return _Function(
        name,
        f"CREATE OR REPLACE FUNCTION {name}{definition}",
        f"{select} {name}({arguments})",
        types,
        body,
        f"{select} {name}({nulls})",
    )


def list_functions(db: str, *, executable: bool = True) -> frozenset[str]:
    """
    Read the names of the functions of sesame_db that ``db`` has, and that its role may execute.

    With ``executable=False``, whether the role may execute them or not.
    The process uses those it may execute.

    """
    with connections[db].cursor() as cursor:
        cursor.execute(
            "SELECT p.proname FROM pg_catalog.pg_proc p "
            "WHERE p.proname ~ %s AND pg_catalog.pg_function_is_visible(p.oid)"
            + (
                " AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')"
                if executable
                else ""
            ),
            [_FUNCTION_NAME],
        )
        names = frozenset(name for (name,) in cursor.fetchall())
    if executable:
        _installed[db] = names
    return names


def _call(db: str, function: _Function, params: list[Any]) -> Any:
    """Call ``function`` on ``db`` and return its first row, or :data:`_MISSING` if the database lacks it."""
    names = _installed.get(db)
    if names is None:
        names = list_functions(db)
    if function.name not in names:
        return _MISSING
    connection = connections[db]
    try:
        with connection.cursor() as cursor:
            cursor.execute(function.call, params)
            return cursor.fetchone()
    except DatabaseError as error:
        # Django's exception wraps the driver's: psycopg's has sqlstate,
        # psycopg2's pgcode. An undefined function that its statement
        # calls isn't a missing function of sesame_db's.
        cause = error.__cause__
        code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if code != _UNDEFINED_FUNCTION or function.name not in str(cause):
            raise
        # Dropped since the process read the list: read it again at the
        # next use. In a transaction, the error aborted it: the database
        # changed under the process, like a failover to a server without
        # it, and the client may try again.
        _installed.pop(db, None)
        if connection.in_atomic_block:
            raise DatabaseUnavailable(
                f"the function {function.name} of sesame_db is missing: run migrate"
            ) from error
        logger.warning(
            "The function %s of sesame_db is missing in database %r: "
            "run migrate to install it. Its statement runs without it.",
            function.name,
            db,
        )
        return _MISSING


def functions(db: str, variants: list[tuple[bool, ...]]) -> list[_Function]:
    """Return the functions of :func:`fetch` and of :func:`consume`'s ``variants`` on ``db``, without repeats."""
    candidates = [_select(db).function]
    candidates += [_consume_statements(db, *v).function for v in variants]
    found: dict[str, _Function] = {}
    for function in candidates:
        if function is not None:
            found.setdefault(function.name, function)
    return list(found.values())


def install_functions(db: str, variants: list[tuple[bool, ...]]) -> list[str]:
    """
    Create the functions of :func:`functions` on PostgreSQL database ``db``, and return their names.

    Each variant is the arguments of :func:`_consume_statements` after
    ``db``. The functions that ``db`` lacks are created; none is dropped:
    another version of the code may still call them during a deployment.
    Since a function's name is a digest of its definition, one that exists
    is the same. Each is called once with NULL values, which find no row,
    in a savepoint rolled back: if that fails, for example because a
    column's type isn't the one its field declares, the function isn't
    installed, and its statement will run as it is.

    """
    created = []
    connection = connections[db]
    existing = list_functions(db, executable=False)
    with transaction.atomic(using=db), connection.cursor() as cursor:
        for function in functions(db, variants):
            if function.name in existing:
                continue
            try:
                with transaction.atomic(using=db):
                    cursor.execute(function.create)
                    with transaction.atomic(using=db):
                        cursor.execute(function.check)
                        transaction.set_rollback(True, using=db)
            except DatabaseError as error:
                logger.warning(
                    "Cannot install the function %s of sesame_db in database %r: %s",
                    function.name,
                    db,
                    error,
                )
            else:
                created.append(function.name)
    list_functions(db)
    return created


def drop_functions(db: str) -> list[str]:
    """Drop the functions of sesame_db that ``db`` has, in any version; return their names."""
    connection = connections[db]
    with transaction.atomic(using=db), connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.oid::regprocedure::text, p.proname FROM pg_catalog.pg_proc p "
            "WHERE p.proname ~ %s AND pg_catalog.pg_function_is_visible(p.oid)",
            [_FUNCTION_NAME],
        )
        found = cursor.fetchall()
        for signature, _name in found:
            cursor.execute(f"DROP FUNCTION {signature}")
    _installed[db] = frozenset()
    return [name for _signature, name in found]


def consume(
    record: IssuedToken,
    now: datetime.datetime,
    db: str,
    *,
    password: bool,
    email: bool,
    scope: str,
    info: dict[str, Any] | None,
    synchronous_commit: bool = True,
    first: bool = False,
) -> bool:
    """
    Count one use of ``record`` in ``scope`` if the database still allows it, and audit it unless ``info`` is :obj:`None`.

    The status rule is repeated in the ``UPDATE``, so that concurrent
    redemptions cannot exceed ``max_uses`` or follow a revocation: the row
    count decides. The ``UPDATE`` also requires that the user's row still
    holds the values that :func:`~sesame_db.store.redeem` checked: the
    password hash (if ``password``), the email (if ``email``) that the user
    digest covers, and ``is_active``. So a password change or a deactivation
    committed since the ``SELECT`` stops the use. On PostgreSQL, the update
    and the audit insert are one statement; elsewhere, two in one
    transaction. Without ``synchronous_commit``, on PostgreSQL, that
    statement, when it's its own transaction, doesn't wait for its WAL flush:
    see :data:`SESAME_SYNCHRONOUS_COMMIT`.

    ``info`` holds the audit fields of :func:`~sesame_db.clients.client_info`.

    A guest link (without a user) is counted if it still has none; with
    ``first``, only if it was never used (the first use of a link bound to
    a browser). The audit event names the guest link's recipient.

    """
    connection = connections[db]
    audit = info is not None
    # Without synchronous_commit, on PostgreSQL, when the statement is its
    # own transaction: the durability of a caller's transaction is theirs.
    asynchronous = (
        not synchronous_commit
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and connection.get_autocommit()
    )
    guest = record.user_id is None
    prebuilt = _consume_statements(
        db, audit, password, email, asynchronous, guest, first
    )
    moment = connection.ops.adapt_datetimefield_value(now)
    params: list[Any] = [
        moment,
        moment,
        record.pk,
        *[moment if param is _USE_TIME else param for param in prebuilt.active_params],
    ]
    # The driver gets what the ORM would send: a UUID key becomes a string
    # on SQLite, for example.
    user_id = prebuilt.user_field.get_db_prep_value(record.user_id, connection)
    if prebuilt.guarded:
        user = record.user
        params += [user_id, user_id]
        params += [
            field.get_db_prep_value(getattr(user, field.attname), connection)
            for field in prebuilt.guarded
        ]
    values: list[Any] = []
    if info is not None:
        ip = info.get("ip")
        values = [
            moment,
            scope,
            record.recipient,
            None if ip is None else connection.ops.adapt_ipaddressfield_value(ip),
            info.get("user_agent", ""),
            info.get("method", ""),
            info.get("path", ""),
        ]
    if prebuilt.function is not None:
        row = _call(db, prebuilt.function, params + values)
        if row is not _MISSING:
            return bool(row is not None and row[0] == 1)
    driver = _driver_connection(connection)
    if len(prebuilt.statements) == 1:
        if driver is not None:
            with connection.wrap_database_errors:
                cursor = driver.execute(prebuilt.qmark[0], params + values)
                return bool(cursor.rowcount == 1)
        with connection.cursor() as cursor:
            cursor.execute(prebuilt.statements[0], params + values)
            return bool(cursor.rowcount == 1)
    audit_params = [values[0], record.pk, user_id, *values[1:]]
    if driver is not None and connection.autocommit and not connection.in_atomic_block:
        # The transaction of the two statements, without atomic()'s
        # bookkeeping: the same BEGIN and COMMIT as atomic() under
        # autocommit, or a ROLLBACK if a statement fails.
        update, insert = prebuilt.qmark
        with connection.wrap_database_errors:
            driver.execute(prebuilt.begin)
            try:
                if driver.execute(update, params).rowcount != 1:
                    counted = False
                else:
                    driver.execute(insert, audit_params)
                    counted = True
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise
        return counted
    # In a transaction already, or watched: Django's way.
    update, insert = prebuilt.statements
    with transaction.atomic(using=db, savepoint=False), connection.cursor() as cursor:
        cursor.execute(update, params)
        if cursor.rowcount != 1:
            return False
        cursor.execute(insert, audit_params)
    return True

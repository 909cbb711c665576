"""
A prototype, measured only: what one round trip per stored use would save on PostgreSQL.

Usage::

    python -m benchmarks.one_round_trip [--quick]

Today a stored use takes two round trips on PostgreSQL: the ``SELECT`` of
the link and its user (:func:`sesame_db.sql.fetch`), then one statement that
counts the use and inserts the audit event (:func:`sesame_db.sql.consume`).
The checks that only Python makes (the user digest, ``user_can_authenticate``)
run between them, and the second statement repeats the user's values that
they read, as a compare-and-set.

The prototype folds both into one statement: a ``WITH`` that counts the use
(if the link is active and its user active), inserts the audit event, and
returns the link and its user, read from the same snapshot, with whether the
use was counted. Python would then make its checks on the row, and undo the
use in a second statement when they fail (the rare path: a changed password).
This script times the database part of both, on Django's cursor as the
hot path does on PostgreSQL, with the same conversion of the row into model instances,
on the bench's durable PostgreSQL cluster and on connections with
``synchronous_commit = off`` (no WAL flush: the round trips show), next to
django-sesame's ``get_user`` of a valid token. The undo path isn't built.

Nothing in sesame_db uses this code.

"""

from __future__ import annotations

import argparse
import datetime
import itertools
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import bench

LINKS = 1000


def one_statement(alias: str) -> tuple[str, Any]:
    """Return the single statement of the prototype, and the prebuilt pieces of the hot path it reuses."""
    from sesame_db import sql

    select = sql._select(alias)
    # The compare-and-set keeps only is_active: the other values are read
    # by the same statement, from the same snapshot.
    consume = sql._consume_statements(alias, True, False, False)
    (statement,) = consume.statements
    # The hot path passes the user's key, which it read in the SELECT; here
    # the statement reads it from the token's row, as it did before.
    from django.db import connections

    qn = connections[alias].ops.quote_name
    field = select.token_model._meta.get_field("user")
    table = qn(select.token_model._meta.db_table)
    column = qn(str(field.column))
    target_column = qn(str(field.target_field.column))
    key = f" AND {column} IS NOT DISTINCT FROM %s AND EXISTS"
    target = f"u.{target_column} = %s"
    assert key in statement and target in statement, statement
    statement = statement.replace(key, " AND EXISTS", 1).replace(
        target, f"u.{target_column} = {table}.{column}", 1
    )
    split = statement.index(" INSERT INTO")
    assert select.sql is not None
    one = (
        f"{statement[:split]}, event AS ({statement[split + 1 :]} RETURNING 1) "
        f"{select.sql_select}, (SELECT count(*) FROM used){select.sql_from}"
    )
    return one, (select, consume)


def make_fetch_and_consume(alias: str) -> Callable[[int], tuple[Any, bool]]:
    """Return the prototype: load link ``pk`` and its user, count the use and audit it, in one round trip."""
    from django.db import connections

    from sesame_db import sql

    connection = connections[alias]
    one, (select, consume) = one_statement(alias)
    info = {"ip": "127.0.0.1", "user_agent": "bench", "method": "GET", "path": "/"}

    def fetch_and_consume(pk: int) -> tuple[Any, bool]:
        now = datetime.datetime.now(datetime.timezone.utc)
        moment = connection.ops.adapt_datetimefield_value(now)
        params = [
            moment,
            moment,
            pk,
            *[moment if p is sql._USE_TIME else p for p in consume.active_params],
            True,  # is_active
            moment,
            "",  # scope
            "",  # recipient: a user link's
            connection.ops.adapt_ipaddressfield_value(info["ip"]),
            info["user_agent"],
            info["method"],
            info["path"],
            pk,
        ]
        # Django's cursor, as fetch() and consume() use on PostgreSQL.
        with connection.cursor() as cursor:
            cursor.execute(one, params)
            row = cursor.fetchone()
        values = list(row[:-1])
        for index, functions, column in select.converters:
            for function in functions:
                values[index] = function(values[index], column, connection)
        split = len(select.token_attnames)
        record = select.token_model.from_db(
            alias, select.token_attnames, values[:split]
        )
        record.user = select.user_model.from_db(
            alias, select.user_attnames, values[split:]
        )
        return record, row[-1] == 1

    return fetch_and_consume


def make_two_trips(alias: str) -> Callable[[int], tuple[Any, bool]]:
    """Return today's database part of a stored use: fetch(), then consume()."""
    from sesame_db import sql

    info = {"ip": "127.0.0.1", "user_agent": "bench", "method": "GET", "path": "/"}

    def two_trips(pk: int) -> tuple[Any, bool]:
        now = datetime.datetime.now(datetime.timezone.utc)
        record = sql.fetch(alias, pk)
        assert record is not None
        counted = sql.consume(
            record, now, alias, password=True, email=False, scope="", info=info
        )
        return record, counted

    return two_trips


def cases_for(alias: str, label: str, pks: Sequence[int]) -> list[bench.Case]:
    cycle = itertools.cycle(pks)
    one = make_fetch_and_consume(alias)
    two = make_two_trips(alias)

    def counted(result: object) -> bool:
        return isinstance(result, tuple) and result[1] is True

    return [
        bench.Case(f"two round trips{label}", alias, lambda: two(next(cycle)), counted),
        bench.Case(f"one round trip{label}", alias, lambda: one(next(cycle)), counted),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    rounds, min_time = (9, 0.01) if args.quick else (21, 0.03)
    postgresql = bench.durable_cluster_settings()
    databases = bench.Databases()
    try:
        bench.configure(tempfile.mkdtemp(prefix="sesame_db_one_trip_"), postgresql)
        import sesame.utils

        import sesame_db.utils
        from sesame_db.models import IssuedToken

        alias, async_alias = bench.POSTGRESQL, bench.POSTGRESQL_ASYNC
        databases.get(alias)
        databases.mirror(async_alias, alias)
        summary = bench.machine_summary(bench.show_settings(databases.get(alias)), "")
        with bench.using(alias):
            user = bench.get_user_john()
            token = sesame_db.utils.get_token(user)
            _, record = sesame_db.utils.issue_token(user)
            bench.fill(alias, record, LINKS)
            pks = list(IssuedToken.objects.values_list("pk", flat=True))
        baseline = bench.Case(
            "django-sesame get_user (baseline)",
            alias,
            lambda: sesame.utils.get_user(token),
            lambda result: result == user,
            {"AUTHENTICATION_BACKENDS": bench.SESAME_BACKENDS},
        )
        cases = [
            baseline,
            *cases_for(alias, ", durable", pks),
            *cases_for(async_alias, ", synchronous_commit=off", pks),
        ]
        bench.measure(cases, rounds, min_time)
        print(f"One round trip per stored use: a prototype\n\n{summary}\n")
        rows = [("database part of a stored use", "µs [IQR]", "ratio [IQR]")]
        for case in cases:
            rows.append(
                (
                    case.label,
                    bench.us(case.summary),
                    bench.times(*bench.ratio(case, baseline)),
                )
            )
        bench.print_rows(rows)
        for two, one in (cases[1:3], cases[3:5]):
            saved = two.summary.median - one.summary.median
            print(
                f"\n{one.label}: saves {saved * 1e6:.0f} µs per use,"
                f" {saved / baseline.summary.median:.2f}x of django-sesame's get_user."
            )
        print(
            "\nratio: to django-sesame's get_user of a valid token on the same"
            "\ndatabase, the median [IQR] of the ratios of each round."
        )
    finally:
        databases.destroy()


if __name__ == "__main__":
    main()

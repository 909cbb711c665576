"""
Measure the admin of the database store on large tables, on PostgreSQL.

Usage::

    python -m benchmarks.admin_bench [--rows N]

This script starts a throwaway PostgreSQL server (tests/postgres.py),
configures Django itself, fills the tables with ``--rows`` issued links and
as many events (a million by default) with ``INSERT ... SELECT
generate_series``, runs ``ANALYZE``, then requests the changelists of links
and events as a superuser with :class:`django.test.Client`: unfiltered,
filtered by status or kind, and searched. For each page it prints the number
of queries and the best time of a few requests, then ``EXPLAIN ANALYZE`` of
each query on the store's tables, to show which indexes they use and that
no query counts every row.

It needs Django, django-model-utils, psycopg and Debian's postgresql
package; pytest doesn't collect it. It takes a minute or two.

"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any

import django
from django.conf import settings

# The admin needs a URLconf: this module is its own.
urlpatterns: list[Any] = []

REPEATS = 3


def configure() -> None:
    from tests.postgres import database_settings

    settings.configure(
        SECRET_KEY="benchmark-secret-key",
        DEBUG=False,
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.admin",
            "sesame_db",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": database_settings()},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        STATIC_URL="/static/",
        LOGGING_CONFIG=None,
        SESAME_ADMIN_SCOPES=["login", "report:42"],
    )
    django.setup()
    from django.contrib import admin
    from django.urls import path

    urlpatterns.append(path("admin/", admin.site.urls))


def fill(rows: int) -> None:
    """Fill the tables: 1000 users, ``rows`` links over the last year, ``rows`` events."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            "SELECT '!', false, 'user' || i, '', '', 'user' || i || '@example.com', false, true, now() "
            "FROM generate_series(1, 1000) AS i"
        )
        cursor.execute("SELECT min(id) FROM auth_user WHERE username LIKE 'user%%'")
        (first_user,) = cursor.fetchone()
        # States: a seventh revoked, a fifth expired, a third limited to one
        # use, of which some are used up; scopes: login, report:0 to report:99.
        cursor.execute(
            "INSERT INTO sesame_db_issuedtoken (created, modified, user_id, scope, label, "
            "issued_by_id, expires_at, max_uses, use_count, last_used_at, revoked_at, "
            "revoked_by_id, revoke_reason, user_digest) "
            "SELECT now() - i * (interval '1 year' / %(rows)s), now(), %(first)s + i %% 1000, "
            "CASE WHEN i %% 2 = 0 THEN 'login' ELSE 'report:' || (i %% 100) END, "
            "'Link ' || i, NULL, "
            "CASE WHEN i %% 5 = 0 THEN now() - interval '1 day' ELSE now() + interval '30 days' END, "
            "CASE WHEN i %% 3 = 0 THEN 1 END, CASE WHEN i %% 6 = 0 THEN 1 ELSE 0 END, NULL, "
            "CASE WHEN i %% 7 = 0 THEN now() END, NULL, '', '' "
            "FROM generate_series(1, %(rows)s) AS i",
            {"rows": rows, "first": first_user},
        )
        cursor.execute("SELECT min(id) FROM sesame_db_issuedtoken")
        (first_token,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO sesame_db_tokenevent (created_at, kind, reason, token_id, user_id, "
            "actor_id, scope, detail, ip, user_agent, method, path) "
            "SELECT now() - i * (interval '1 year' / %(rows)s), "
            "(ARRAY['issued', 'used', 'used', 'rejected'])[1 + i %% 4], "
            "CASE WHEN i %% 4 = 3 THEN 'expired' ELSE '' END, "
            "%(first_token)s + (i::bigint * 7919) %% %(rows)s, %(first)s + i %% 1000, NULL, 'login', '', "
            "('10.' || (i / 65536) %% 256 || '.' || (i / 256) %% 256 || '.' || i %% 256)::inet, "
            "'Mozilla/5.0', 'GET', '/report/' || (i %% 100) || '/' "
            "FROM generate_series(1, %(rows)s) AS i",
            {"rows": rows, "first": first_user, "first_token": first_token},
        )
        cursor.execute("ANALYZE auth_user")
        cursor.execute("ANALYZE sesame_db_issuedtoken")
        cursor.execute("ANALYZE sesame_db_tokenevent")


def measure(client: Any, path: str) -> tuple[int, float, list[dict[str, str]]]:
    """Request ``path`` a few times; return the queries, the best time and the SQL of the last request."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    best = float("inf")
    queries: list[dict[str, str]] = []
    for _ in range(REPEATS):
        with CaptureQueriesContext(connection) as context:
            start = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
        best = min(best, elapsed)
        queries = context.captured_queries
    return len(queries), best, queries


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
        return [row[0] for row in cursor.fetchall()]


def short(sql: str, width: int = 150) -> str:
    """The SELECT list elided: it's long and says nothing about the plan."""
    if sql.startswith("SELECT ") and " FROM " in sql:
        columns, rest = sql[len("SELECT ") :].split(" FROM ", 1)
        if len(columns) > 60:
            sql = f"SELECT ... FROM {rest}"
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="issued links and events to create (default: a million each)",
    )
    args = parser.parse_args(argv)

    configure()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from sesame_db.models import IssuedToken

    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    fill(args.rows)
    print(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"PostgreSQL {'.'.join(map(str, connection.get_database_version()))}; "
        f"{IssuedToken.objects.order_by().values('pk').count():,} links and "
        f"{args.rows:,} events, filled in {time.perf_counter() - start:.1f} s"
    )
    superuser = User.objects.create_superuser("admin", "admin@example.com", "x")
    client = Client()
    client.force_login(superuser)
    some_link = IssuedToken.objects.filter(events__isnull=False).order_by("pk").first()
    assert some_link is not None
    pages = [
        ("links", "/admin/sesame_db/issuedtoken/"),
        ("links, status active", "/admin/sesame_db/issuedtoken/?status=active"),
        ("links, scope login", "/admin/sesame_db/issuedtoken/?scope=login"),
        ("links, search user42", "/admin/sesame_db/issuedtoken/?q=user42"),
        ("links, page 50", "/admin/sesame_db/issuedtoken/?p=50"),
        ("link change page", f"/admin/sesame_db/issuedtoken/{some_link.pk}/change/"),
        ("events", "/admin/sesame_db/tokenevent/"),
        ("events, kind used", "/admin/sesame_db/tokenevent/?kind__exact=used"),
        ("events, search IP", "/admin/sesame_db/tokenevent/?q=10.1.2.3"),
        ("events, search user42", "/admin/sesame_db/tokenevent/?q=user42"),
        (
            "events of a link",
            f"/admin/sesame_db/tokenevent/?token__id__exact={some_link.pk}",
        ),
    ]
    results = []
    for name, path in pages:
        results.append((name, path, *measure(client, path)))

    print(
        f"\n{'page':<24} {'queries':>7} {'SQL':>8} {'page':>8}  slowest query"
        f"\n{'':<24} {'':>7} {'(ms)':>8} {'(ms)':>8}"
    )
    for name, _, count, best, queries in results:
        sql_time = sum(float(q["time"]) for q in queries)
        slowest = max(queries, key=lambda q: float(q["time"]))
        print(
            f"{name:<24} {count:>7} {sql_time * 1000:>8.1f} {best * 1000:>8.0f}  "
            f"{float(slowest['time']) * 1000:.1f} ms: {short(slowest['sql'], 60)}"
        )
    print(
        f"\nSQL: the queries of the last request; page: the best of {REPEATS} "
        "requests, rendering included."
    )
    print("\nEXPLAIN ANALYZE of the queries on the store's tables:")
    for name, path, _, _, queries in results:
        print(f"\n=== {name}: GET {path}")
        for query in queries:
            sql = query["sql"]
            if "sesame_db_" not in sql and "pg_class" not in sql:
                continue
            print(f"\n  {short(sql)}")
            for line in explain(sql):
                print(f"    {line}")
    print(f"\nTotal time: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

# The PostgreSQL functions that count a use (sesame_db.sql) depend on the
# settings and the user model, so they aren't created here: every
# "migrate" installs those of the current settings once this migration is
# applied (sesame_db.store.create_functions). Migrating back before it
# drops them all, whatever settings or version created them.

from __future__ import annotations

from typing import Any

from django.db import migrations


def drop_functions(apps: Any, schema_editor: Any) -> None:
    from sesame_db import sql

    if schema_editor.connection.vendor == "postgresql":
        sql.drop_functions(schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("sesame_db", "0004_event_foreign_key_indexes"),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, drop_functions),
    ]

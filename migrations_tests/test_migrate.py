from __future__ import annotations

import io

from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.test import TransactionTestCase

TABLES = {"sesame_db_issuedtoken", "sesame_db_tokenevent"}


class MigrateTests(TransactionTestCase):
    """Unapply every sesame_db migration, then apply them again."""

    def tables(self):
        return TABLES & set(connection.introspection.table_names())

    def applied(self):
        return {
            name
            for app, name in MigrationRecorder(connection).applied_migrations()
            if app == "sesame_db"
        }

    def test_migrate_zero_and_back(self):
        self.assertEqual(self.tables(), TABLES)
        applied = self.applied()
        self.assertIn("0001_initial", applied)
        # Leave the schema complete for the next tests, even if this one fails.
        self.addCleanup(call_command, "migrate", "sesame_db", verbosity=0)

        call_command("migrate", "sesame_db", "zero", verbosity=0)
        self.assertEqual(self.tables(), set())
        self.assertEqual(self.applied(), set())

        call_command("migrate", "sesame_db", verbosity=0)
        self.assertEqual(self.tables(), TABLES)
        self.assertEqual(self.applied(), applied)
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(
                cursor, "sesame_db_issuedtoken"
            )
        # Indexes and constraints are named explicitly, so they're back by name.
        for name in [
            "sesame_db_token_use_count_lte_max_uses",
            "sesame_db_token_user_idx",
            "sesame_db_token_expires_idx",
        ]:
            self.assertIn(name, constraints)

    def test_primary_keys_are_pinned(self):
        # SesameDbConfig pins BigAutoField whatever DEFAULT_AUTO_FIELD says,
        # in the migrations...
        state = MigrationLoader(connection).project_state()
        for model in ("issuedtoken", "tokenevent"):
            with self.subTest(model=model):
                pk = state.models["sesame_db", model].fields["id"]
                self.assertEqual(type(pk).__name__, "BigAutoField")
        # ...and in the database. SQLite declares both as "integer", so only
        # PostgreSQL tells them apart.
        if connection.vendor != "postgresql":
            return
        for table in sorted(TABLES):
            with connection.cursor() as cursor:
                description = connection.introspection.get_table_description(
                    cursor, table
                )
            [id_column] = [c for c in description if c.name == "id"]
            with self.subTest(table=table):
                self.assertEqual(
                    connection.introspection.get_field_type(
                        id_column.type_code, id_column
                    ),
                    "BigAutoField",
                )


class PendingMigrationsCheckTests(TransactionTestCase):
    """sesame_db.W004: reported by check --database, not by the migrate that applies them."""

    def test_w004_in_check_not_in_migrate(self):
        self.addCleanup(call_command, "migrate", "sesame_db", verbosity=0)
        call_command("migrate", "sesame_db", "0001", verbosity=0)
        out, err = io.StringIO(), io.StringIO()
        call_command("check", "--database", "default", stdout=out, stderr=err)
        self.assertIn("sesame_db.W004", out.getvalue() + err.getvalue())
        out, err = io.StringIO(), io.StringIO()
        # call_command() skips the checks unless told otherwise.
        call_command("migrate", "sesame_db", skip_checks=False, stdout=out, stderr=err)
        self.assertNotIn("sesame_db.W004", out.getvalue() + err.getvalue())
        self.assertIn("Applying sesame_db.0002", out.getvalue())

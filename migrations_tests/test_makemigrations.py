from __future__ import annotations

from io import StringIO

from django.core.management import call_command
from django.test import TestCase


class MakeMigrationsTests(TestCase):
    def test_no_missing_migrations(self):
        # makemigrations --check exits with status 1 when a model change has
        # no migration; --dry-run keeps it from writing one.
        out = StringIO()
        try:
            call_command(
                "makemigrations",
                "sesame_db",
                "--check",
                "--dry-run",
                stdout=out,
                stderr=out,
            )
        except SystemExit:
            self.fail(f"Missing migrations for sesame_db:\n{out.getvalue()}")

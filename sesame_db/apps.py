from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SesameDbConfig(AppConfig):
    name = "sesame_db"
    verbose_name = _("Magic links")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.db.models.signals import post_migrate

        from . import checks as sesame_checks
        from .backends import replace_update_last_login
        from .store import create_functions

        checks.register(sesame_checks.check_settings, checks.Tags.security)
        checks.register(sesame_checks.check_user_model, checks.Tags.models)
        checks.register(sesame_checks.check_backends, checks.Tags.security)
        checks.register(sesame_checks.check_middleware, checks.Tags.security)
        checks.register(sesame_checks.check_store_settings, checks.Tags.security)
        checks.register(sesame_checks.check_migrations, checks.Tags.database)
        checks.register(sesame_checks.check_login_settings, checks.Tags.security)
        # login() mustn't write last_login again after a one-time token's
        # consumption wrote it; see sesame_db.backends.update_last_login().
        replace_update_last_login()
        # The PostgreSQL functions of a use: see sesame_db.sql.
        post_migrate.connect(
            create_functions, sender=self, dispatch_uid="sesame_db.create_functions"
        )

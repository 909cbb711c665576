from __future__ import annotations

from django.apps import AppConfig


class UserModelsConfig(AppConfig):
    name = "tests.usermodels"
    label = "usermodels"
    default_auto_field = "django.db.models.AutoField"

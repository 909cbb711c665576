"""The models that the documentation's examples assume."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Report(models.Model):
    title = models.CharField(max_length=100)

    class Meta:
        app_label = "tests"
        # No table: the snippets only need the model and its label.
        managed = False

    def __str__(self) -> str:
        return self.title


class Document(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    title = models.CharField(max_length=100)

    class Meta:
        app_label = "tests"
        managed = False

    def __str__(self) -> str:
        return self.title

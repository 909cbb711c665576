from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tests.models import BigUser, UserManager


class EmailUser(AbstractBaseUser):
    """A user model whose ``USERNAME_FIELD`` is the email address."""

    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"

    objects = UserManager()

    def __str__(self):
        return self.email


class ProxyUser(BigUser):
    """A proxy user model."""

    class Meta:
        proxy = True


class LegacyUser(AbstractBaseUser):
    """A user model in a table and columns of its own naming, which need quoting."""

    id = models.AutoField(primary_key=True, db_column="PersonId")
    username = models.CharField(max_length=150, unique=True, db_column="Login")
    password = models.CharField(max_length=128, db_column="Secret Hash")
    email = models.EmailField(blank=True, db_column="Mail")
    is_active = models.BooleanField(default=True, db_column="Enabled")

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"

    objects = UserManager()

    class Meta:
        db_table = "LegacyPeople"

    def __str__(self):
        return self.username


class VisibleUserManager(UserManager):
    """Hide deleted users: those whose deletion time has come."""

    def get_queryset(self):
        # The condition has a parameter that changes with time: it must be
        # evaluated on each use, not when the store first builds its SQL.
        return (
            super()
            .get_queryset()
            .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=timezone.now()))
        )


class SoftDeleteUser(AbstractBaseUser):
    """A user model whose default manager hides deleted users, a common soft-delete pattern."""

    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"

    objects = VisibleUserManager()
    all_objects = UserManager()

    def __str__(self):
        return self.username


class SoftDeleteChildUser(SoftDeleteUser):
    """A soft-delete user model with multi-table inheritance: the manager's condition is on the parent's table."""

    nickname = models.CharField(max_length=50, blank=True)


class FixedCharField(models.CharField):  # type: ignore[type-arg]
    """A fixed-length column, as some projects declare for codes: char(n)."""

    def db_type(self, connection):
        return f"char({self.max_length})"


class FixedCharUser(AbstractBaseUser):
    """A user model with a fixed-length column, char(n), which keeps its padding."""

    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    code = FixedCharField(max_length=6, default="ab")

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"

    objects = UserManager()

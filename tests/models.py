from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager
from django.db import models


class UserManager(BaseUserManager["BaseCustomUser"]):
    def create_user(self, username, email="", password=None, **extra):
        user = self.model(username=username, email=email, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user


class BaseCustomUser(AbstractBaseUser):
    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"

    objects = UserManager()

    class Meta:
        abstract = True

    def __str__(self):
        return self.username


class UUIDUser(BaseCustomUser):
    """A user model with a UUID primary key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)


class StrUser(BaseCustomUser):
    """A user model with a string primary key."""

    id = models.CharField(primary_key=True, max_length=255)


class BigUser(BaseCustomUser):
    """A user model with a 64-bit integer primary key."""

    id = models.BigAutoField(primary_key=True)


class NoEmailUser(AbstractBaseUser):
    """A user model whose EMAIL_FIELD doesn't exist."""

    username = models.CharField(max_length=150, unique=True)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "missing"

    objects = UserManager()


class ChildUser(UUIDUser):
    """A user model with multi-table inheritance: its primary key is a OneToOneField."""

    nickname = models.CharField(max_length=50, blank=True)

"""
Query sets of the database store.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = ["IssuedTokenQuerySet", "TokenEventQuerySet"]


def _not_revoked() -> Q:
    return Q(revoked_at__isnull=True)


def _not_expired() -> Q:
    # Now() is evaluated by the database: nothing is frozen at import.
    return Q(expires_at__isnull=True) | Q(expires_at__gt=Now())


def _not_used_up() -> Q:
    return Q(max_uses__isnull=True) | Q(use_count__lt=F("max_uses"))


class IssuedTokenQuerySet(models.QuerySet[Any]):
    """Query set of :class:`~sesame_db.models.IssuedToken`."""

    def active(self) -> IssuedTokenQuerySet:
        """Tokens that can still be used: not revoked, not expired, not used up."""
        return self.filter(_not_revoked() & _not_expired() & _not_used_up())

    def revoked(self) -> IssuedTokenQuerySet:
        """Revoked tokens."""
        return self.filter(revoked_at__isnull=False)

    def expired(self) -> IssuedTokenQuerySet:
        """Tokens past their expiry that weren't revoked."""
        return self.filter(_not_revoked(), expires_at__lte=Now())

    def used_up(self) -> IssuedTokenQuerySet:
        """Tokens used as many times as allowed that aren't revoked or expired."""
        return self.filter(
            _not_revoked() & _not_expired(),
            max_uses__isnull=False,
            use_count__gte=F("max_uses"),
        )

    def for_user(self, user: AbstractBaseUser) -> IssuedTokenQuerySet:
        """Tokens that authenticate ``user``."""
        return self.filter(user=user)

    def for_scope(self, scope: str) -> IssuedTokenQuerySet:
        """Tokens valid in ``scope``."""
        return self.filter(scope=scope)

    def issued_by(self, user: AbstractBaseUser | None) -> IssuedTokenQuerySet:
        """Tokens issued by ``user``."""
        return self.filter(issued_by=user)

    def revoke(
        self,
        by: AbstractBaseUser | None = None,
        reason: str = "",
        *,
        request: Any = None,
    ) -> int:
        """
        Revoke the tokens of this query set that aren't revoked yet.

        Each is updated once, with a ``revoked`` audit event recording ``by``
        and ``reason``, in batches of a thousand rows. Return how many tokens
        were revoked. Links already sent stop working at once.

        """
        from .store import revoke_queryset

        return revoke_queryset(self, by=by, reason=reason, request=request)


class TokenEventQuerySet(models.QuerySet[Any]):
    """Query set of :class:`~sesame_db.models.TokenEvent`."""

    def for_user(self, user: AbstractBaseUser) -> TokenEventQuerySet:
        """Events about ``user``'s tokens."""
        return self.filter(user=user)

"""
Query sets of the database store.

"""

from __future__ import annotations

import datetime
import functools
import logging
import re
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import models, router, transaction
from django.utils import timezone

from .clients import client_info
from .conf import conf
from .signals import token_revoked

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.http import HttpRequest

__all__ = ["IssuedTokenQuerySet", "TokenEventQuerySet", "revoke"]

logger = logging.getLogger("sesame_db")

#: Tokens revoked per transaction by :func:`revoke`.
BATCH_SIZE = 1000

# What a guest link's recipient can't contain, which issuing refuses, as
# the admin's form does, and which no link is shared with: the control
# characters of Unicode (category Cc). NUL, which PostgreSQL can't store,
# line breaks, which would forge log lines, and terminal escapes have no
# place in an email address or a name.
RECIPIENT_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _pk(user: AbstractBaseUser | None) -> Any:
    return None if user is None else user.pk


class IssuedTokenQuerySet(models.QuerySet[Any]):
    """
    Query set of :class:`~sesame_db.models.IssuedToken`.

    The status filters take their conditions from the model's status rule,
    :data:`~sesame_db.models.STOPS`, through ``self.model``.

    """

    def _status(self, status: Any) -> IssuedTokenQuerySet:
        return self.filter(self.model.status_condition(status))

    def active(self) -> IssuedTokenQuerySet:
        """Tokens that can still be used: not revoked, not expired, not used up."""
        return self._status(self.model.Status.ACTIVE)

    def revoked(self) -> IssuedTokenQuerySet:
        """Revoked tokens."""
        return self._status(self.model.Status.REVOKED)

    def expired(self) -> IssuedTokenQuerySet:
        """Tokens past their expiry that weren't revoked."""
        return self._status(self.model.Status.EXPIRED)

    def used_up(self) -> IssuedTokenQuerySet:
        """Tokens used as many times as allowed that aren't revoked or expired."""
        return self._status(self.model.Status.USED_UP)

    def stopped_before(self, when: datetime.datetime) -> IssuedTokenQuerySet:
        """Tokens that were revoked, expired or used up before ``when``."""
        return self.filter(self.model.stopped_before_condition(when))

    def for_user(self, user: AbstractBaseUser) -> IssuedTokenQuerySet:
        """Tokens that authenticate ``user``."""
        return self.filter(user=user)

    def for_scope(self, scope: str) -> IssuedTokenQuerySet:
        """Tokens valid in ``scope``."""
        return self.filter(scope=scope)

    def issued_by(self, user: AbstractBaseUser | None) -> IssuedTokenQuerySet:
        """Tokens issued by ``user``."""
        return self.filter(issued_by=user)

    def guests(self) -> IssuedTokenQuerySet:
        """Guest links: links without a user, shared with a recipient."""
        return self.filter(user__isnull=True)

    def users(self) -> IssuedTokenQuerySet:
        """Links that authenticate a user: not guest links."""
        return self.filter(user__isnull=False)

    def shared_by(self, user: AbstractBaseUser) -> IssuedTokenQuerySet:
        """Guest links that ``user`` shared (issued)."""
        return self.guests().filter(issued_by=user)

    def shared_with(self, recipient: str) -> IssuedTokenQuerySet:
        """
        Guest links shared with ``recipient``, compared without regard to case, as email addresses are in practice.

        None for a recipient with control characters, which no link can
        have: such input doesn't reach the database, which may refuse it.

        """
        recipient = recipient.strip()
        if RECIPIENT_CONTROL_CHARACTERS.search(recipient):
            return self.none()
        return self.guests().filter(recipient__iexact=recipient)

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
        return revoke(self, by=by, reason=reason, request=request)


class TokenEventQuerySet(models.QuerySet[Any]):
    """Query set of :class:`~sesame_db.models.TokenEvent`."""

    def for_user(self, user: AbstractBaseUser) -> TokenEventQuerySet:
        """Events about ``user``'s tokens."""
        return self.filter(user=user)

    def for_recipient(self, recipient: str) -> TokenEventQuerySet:
        """Events about the guest links shared with ``recipient``, compared without regard to case."""
        return self.filter(recipient__iexact=recipient.strip())


def revoke(
    queryset: Any,
    *,
    by: AbstractBaseUser | None = None,
    reason: str = "",
    request: HttpRequest | None = None,
) -> int:
    """
    Revoke the tokens of ``queryset`` that aren't revoked yet, in batches.

    Each batch of up to ``BATCH_SIZE`` (1,000) tokens is one transaction:
    one ``UPDATE`` and, when :data:`SESAME_AUDIT` is on, one ``INSERT`` of
    ``revoked`` events, split by Django into ``INSERT`` statements of 76 events
    on SQLite with Django 5.2. Return how many tokens were revoked.

    """
    IssuedToken = queryset.model
    TokenEvent = apps.get_model("sesame_db", "TokenEvent")
    revoked_status = IssuedToken.status_condition(IssuedToken.Status.REVOKED)
    db = router.db_for_write(IssuedToken)
    reason = reason[:255]
    info = client_info(request)
    total = 0
    # Lock rows through a plain query of the token table: the query set may
    # join other tables or use distinct(), where FOR UPDATE isn't allowed.
    pending = (
        IssuedToken._default_manager.using(db)
        .filter(pk__in=queryset.using(db).values("pk"))
        .exclude(revoked_status)
        .order_by("pk")
    )
    last_pk = None
    while True:
        batch = pending if last_pk is None else pending.filter(pk__gt=last_pk)
        with transaction.atomic(using=db):
            rows = list(
                batch.select_for_update(of=("self",)).values_list(
                    "pk", "user_id", "scope", "recipient"
                )[:BATCH_SIZE]
            )
            if not rows:
                break
            ids = [row[0] for row in rows]
            now = timezone.now()
            revoked = (
                IssuedToken._default_manager.using(db)
                .filter(pk__in=ids)
                .exclude(revoked_status)
                .update(
                    revoked_at=now,
                    revoked_by_id=_pk(by),
                    revoke_reason=reason,
                    modified=now,
                )
            )
            if conf.AUDIT:
                TokenEvent._default_manager.using(db).bulk_create(
                    [
                        TokenEvent(
                            created_at=now,
                            kind=TokenEvent.Kind.REVOKED,
                            token_id=pk,
                            user_id=user_id,
                            actor_id=_pk(by),
                            scope=scope,
                            recipient=recipient,
                            detail=reason,
                            **info,
                        )
                        for pk, user_id, scope, recipient in rows
                    ]
                )
            transaction.on_commit(
                functools.partial(
                    token_revoked.send,
                    sender=IssuedToken,
                    token_ids=ids,
                    revoked_by=by,
                    reason=reason,
                ),
                using=db,
            )
        total += revoked
        last_pk = ids[-1]
        if len(rows) < BATCH_SIZE:
            break
    if total:
        logger.info("Revoked %d stored tokens", total)
    return total

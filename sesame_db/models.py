"""
Models of the database store: issued tokens and their audit trail.

Neither model stores a usable secret: a token can be made from a record only
with the secret key.

"""

from __future__ import annotations

import datetime
import functools
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from model_utils.models import TimeStampedModel

from .exceptions import Reason
from .managers import IssuedTokenQuerySet, TokenEventQuerySet

__all__ = ["STOPS", "IssuedToken", "Stop", "TokenEvent"]


class IssuedToken(TimeStampedModel):
    """
    A token issued with the database store on.

    The database decides whether it's valid: revoking it, shortening its
    expiry or lowering its use limit takes effect on the next use.

    """

    class Status(models.TextChoices):
        ACTIVE = "active", _("active")
        EXPIRED = "expired", _("expired")
        REVOKED = "revoked", _("revoked")
        USED_UP = "used_up", _("used up")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sesame_tokens",
        verbose_name=_("user"),
        help_text=_("Empty for a guest link."),
    )
    # A guest link has no user: it names its recipient instead.
    # The columns added for guest links have database defaults too, so that
    # rows inserted without them, by the previous version during a rolling
    # deployment or by raw SQL, are user links as before.
    recipient = models.CharField(
        _("recipient"),
        max_length=254,
        blank=True,
        default="",
        db_default="",
        help_text=_("Who a guest link was shared with: an email address or a name."),
    )
    bind_to_browser = models.BooleanField(
        _("bound to the first browser"),
        default=False,
        db_default=False,
        help_text=_(
            "Refuse the link in any browser other than the first that opened it."
        ),
    )
    scope = models.CharField(_("scope"), max_length=255, blank=True)
    label = models.CharField(_("label"), max_length=255, blank=True)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("issued by"),
    )
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    max_uses = models.PositiveIntegerField(
        _("maximum uses"), null=True, blank=True, help_text=_("Empty for unlimited.")
    )
    use_count = models.PositiveIntegerField(_("uses"), default=0, editable=False)
    last_used_at = models.DateTimeField(
        _("last used at"), null=True, blank=True, editable=False
    )
    revoked_at = models.DateTimeField(
        _("revoked at"), null=True, blank=True, editable=False
    )
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
        verbose_name=_("revoked by"),
    )
    revoke_reason = models.CharField(
        _("revocation reason"), max_length=255, blank=True, editable=False
    )
    # Keyed digest of the user's password hash (and email), to invalidate
    # the token when they change; useless without the secret key.
    user_digest = models.CharField(max_length=32, editable=False)

    objects = IssuedTokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("issued link")
        verbose_name_plural = _("issued links")
        permissions = [("revoke_issuedtoken", _("Can revoke issued links"))]
        indexes = [
            models.Index(fields=["user", "-created"], name="sesame_db_token_user_idx"),
            models.Index(
                fields=["scope", "-created"], name="sesame_db_token_scope_idx"
            ),
            models.Index(fields=["-created"], name="sesame_db_token_created_idx"),
            models.Index(fields=["expires_at"], name="sesame_db_token_expires_idx"),
            models.Index(fields=["revoked_at"], name="sesame_db_token_revoked_idx"),
            models.Index(fields=["issued_by"], name="sesame_db_token_issuer_idx"),
            models.Index(
                fields=["recipient", "-created"], name="sesame_db_token_recipient_idx"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(use_count__lte=F("max_uses")),
                name="sesame_db_token_use_count_lte_max_uses",
            ),
            # A link authenticates a user, or is a guest link with a
            # recipient, which always has a scope.
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(recipient=""),
                name="sesame_db_token_user_or_recipient",
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(scope=""),
                name="sesame_db_guest_token_scope",
            ),
        ]

    def __str__(self) -> str:
        """
        Show the id, the user and the scope: ``Link #1 for alice (report:1)``.

        The user is named by their username (:attr:`USERNAME_FIELD`) when it
        is loaded, as the admin does with ``select_related("user")``, and by
        their primary key otherwise (``Link #1 for user #5``): this never
        runs a query, so that listing links costs no query per row. A guest
        link is named by its recipient: ``Link #2 for bob@example.com
        (report:1)``. It never shows a secret; the admin's history keeps it.

        """
        if self.user_id is None:
            user = self.recipient or "?"
        elif IssuedToken.user.is_cached(self) and self.user is not None:
            user = self.user.get_username()
        else:
            user = _("user #%(pk)s") % {"pk": self.user_id}
        if self.scope:
            return _("Link #%(pk)s for %(user)s (%(scope)s)") % {
                "pk": self.pk,
                "user": user,
                "scope": self.scope,
            }
        return _("Link #%(pk)s for %(user)s") % {"pk": self.pk, "user": user}

    @property
    def status(self) -> IssuedToken.Status:
        """Whether the token is active, expired, revoked or used up, as the database would decide now."""
        return self.status_at(timezone.now())

    @property
    def is_guest(self) -> bool:
        """Whether this is a guest link: it has a recipient and no user, and never logs anyone in."""
        return self.user_id is None

    def status_at(self, now: datetime.datetime) -> IssuedToken.Status:
        """Return the status of this token at ``now``, by the rule of :data:`STOPS`, without a query."""
        for stop in STOPS:
            if stop.holds(self, now):
                return stop.status
        return self.Status.ACTIVE

    @classmethod
    def status_condition(cls, status: IssuedToken.Status, now: Any = None) -> Q:
        """
        Return the condition, for a query, of the tokens that have ``status`` at ``now``, by the rule of :data:`STOPS`.

        ``now`` is a datetime or an expression; it defaults to the database's
        clock, :class:`~django.db.models.functions.Now`.

        """
        if now is None:
            now = Now()
        conditions = []
        for stop in STOPS:
            if stop.status == status:
                conditions.append(stop.condition(now))
                break
            # A stop that comes first takes precedence.
            conditions.append(~stop.condition(now))
        return functools.reduce(operator.and_, conditions)

    @classmethod
    def stopped_before_condition(cls, when: datetime.datetime) -> Q:
        """Return the condition, for a query, of the tokens that stopped working before ``when``, by the rule of :data:`STOPS`."""
        return functools.reduce(
            operator.or_,
            (stop.condition(when) & Q(**{f"{stop.since}__lt": when}) for stop in STOPS),
        )

    def revoke(self, by: AbstractBaseUser | None = None, reason: str = "") -> bool:
        """
        Revoke this token, recording ``by`` and ``reason``.

        Return :obj:`False` if it was already revoked.

        """
        revoked = (
            type(self)._default_manager.filter(pk=self.pk).revoke(by=by, reason=reason)
        )
        if revoked:
            self.refresh_from_db(
                fields=["revoked_at", "revoked_by", "revoke_reason", "modified"]
            )
        return bool(revoked)


class Stop(NamedTuple):
    """A condition that stops a token from working, in the two forms of :data:`STOPS`."""

    #: The status of a token that meets the condition.
    status: IssuedToken.Status
    #: The condition for a query, at a time (a datetime or an expression).
    condition: Callable[[Any], Q]
    #: The same condition, on a token loaded in memory.
    holds: Callable[[IssuedToken, datetime.datetime], bool]
    #: The field that dates when the condition started to hold.
    since: str


#: The status rule of a link, stated once: what stops a token from working,
#: in order of precedence. A token that meets none of them is active. The
#: model (:attr:`IssuedToken.status`), the store's checks, the query sets,
#: the purge command and the prebuilt SQL of the store all derive their
#: conditions from it. ``tests/test_models.py`` proves that the two forms of
#: each condition select the same tokens.
STOPS: tuple[Stop, ...] = (
    Stop(
        IssuedToken.Status.REVOKED,
        lambda now: Q(revoked_at__isnull=False),
        lambda token, now: token.revoked_at is not None,
        "revoked_at",
    ),
    Stop(
        IssuedToken.Status.EXPIRED,
        lambda now: Q(expires_at__lte=now),
        lambda token, now: token.expires_at is not None and token.expires_at <= now,
        "expires_at",
    ),
    Stop(
        IssuedToken.Status.USED_UP,
        lambda now: Q(max_uses__isnull=False, use_count__gte=F("max_uses")),
        lambda token, now: (
            token.max_uses is not None and token.use_count >= token.max_uses
        ),
        "last_used_at",
    ),
)


class TokenEvent(models.Model):
    """
    An audit record: a token was issued, used, rejected or revoked.

    Events are never updated. They outlive their token: ``token`` and the user
    references aren't database constraints, so purging tokens or deleting
    users keeps the trail.

    """

    class Kind(models.TextChoices):
        ISSUED = "issued", _("issued")
        USED = "used", _("used")
        REJECTED = "rejected", _("rejected")
        REVOKED = "revoked", _("revoked")

    created_at = models.DateTimeField(_("time"), default=timezone.now, editable=False)
    kind = models.CharField(_("event"), max_length=16, choices=Kind.choices)
    reason = models.CharField(
        _("reason"), max_length=32, choices=Reason.choices, blank=True
    )
    # No index of their own: the composite indexes below start with them.
    token = models.ForeignKey(
        IssuedToken,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        blank=True,
        related_name="events",
        verbose_name=_("link"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("user"),
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
        help_text=_("Who issued or revoked the link."),
    )
    scope = models.CharField(
        _("scope"),
        max_length=255,
        blank=True,
        help_text=_("The scope that was requested."),
    )
    recipient = models.CharField(
        _("recipient"),
        max_length=254,
        blank=True,
        default="",
        db_default="",
        help_text=_("The recipient of a guest link."),
    )
    detail = models.CharField(_("detail"), max_length=255, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=255, blank=True)
    method = models.CharField(_("method"), max_length=16, blank=True)
    path = models.CharField(_("path"), max_length=255, blank=True)

    objects = TokenEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("link event")
        verbose_name_plural = _("link events")
        indexes = [
            models.Index(fields=["-created_at"], name="sesame_db_event_created_idx"),
            models.Index(
                fields=["token", "-created_at"], name="sesame_db_event_token_idx"
            ),
            models.Index(
                fields=["user", "-created_at"], name="sesame_db_event_user_idx"
            ),
            models.Index(
                fields=["kind", "-created_at"], name="sesame_db_event_kind_idx"
            ),
            models.Index(fields=["ip"], name="sesame_db_event_ip_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.token_id} {self.created_at:%Y-%m-%d %H:%M:%S}"

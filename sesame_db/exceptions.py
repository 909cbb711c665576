"""
Why a token was rejected, or couldn't be checked.

:exc:`InvalidToken` is internal: token parsing raises it,
:mod:`sesame_db.verify` records it (a log line, an audit event, a
:data:`~sesame_db.signals.token_rejected` signal), the authentication
backend turns it into :obj:`None`, and the entry points get it back from
``sesame_db.utils.check_user()`` to choose their answer
(:mod:`sesame_db.responses`), 429 Too Many Requests for
:attr:`Reason.RATE_LIMITED`.

:exc:`DatabaseUnavailable` is public: :func:`~sesame_db.utils.get_user`
raises it when the database fails during a check.

"""

from __future__ import annotations

from typing import Any

from django.db import OperationalError, models
from django.utils.translation import gettext_lazy as _

__all__ = ["DatabaseUnavailable", "InvalidToken", "Reason"]


class Reason(models.TextChoices):
    """Why a token was rejected; values are stable and stored in the audit log."""

    MALFORMED = "malformed", _("malformed token")
    BAD_SIGNATURE = "bad_signature", _("bad signature")
    EXPIRED = "expired", _("expired")
    WRONG_SCOPE = "wrong_scope", _("wrong scope")
    UNKNOWN_USER = "unknown_user", _("unknown or inactive user")
    USED_UP = "used_up", _("used up")
    # Stored tokens only
    UNKNOWN = "unknown", _("unknown link")
    REVOKED = "revoked", _("revoked")
    INACTIVE_USER = "inactive_user", _("inactive user")
    INVALIDATED = "invalidated", _("invalidated by a password or email change")
    # Any token, when SESAME_RATE_LIMIT is set
    RATE_LIMITED = "rate_limited", _("too many failed attempts")
    # Guest links (stored links without a user)
    GUEST_LINK = "guest_link", _("guest link where guests aren't allowed")
    OTHER_BROWSER = "other_browser", _("opened from another browser")


class InvalidToken(Exception):
    """
    A token was rejected for ``reason``.

    ``message`` and ``args`` are a ``%``-style log message that never contains
    the token. ``token_id`` is the primary key of the
    :class:`~sesame_db.models.IssuedToken` when the token authentically
    identifies one.

    """

    def __init__(
        self, reason: Reason, message: str, *args: Any, token_id: int | None = None
    ) -> None:
        super().__init__(reason, message, *args)
        self.reason = reason
        self.message = message
        self.log_args = args
        self.token_id = token_id

    def __str__(self) -> str:
        return self.message % self.log_args


class DatabaseUnavailable(OperationalError):
    """
    A token couldn't be checked because the database failed.

    :func:`~sesame_db.utils.get_user` and :func:`~sesame_db.utils.aget_user`
    raise it, chained to the database error, when the connection is lost or
    refused, a statement times out, or the database reports another
    :exc:`~django.db.OperationalError` or :exc:`~django.db.InterfaceError`
    while checking a token. The token is neither accepted nor rejected: a
    stored token's use isn't counted unless the database committed it.

    :func:`~sesame_db.decorators.authenticate`,
    :class:`~sesame_db.middleware.AuthenticationMiddleware`,
    :class:`~sesame_db.views.LoginView`,
    :class:`~sesame_db.views.TokenAuthenticationMixin` and
    :class:`~sesame_db.contrib.rest_framework.SesameTokenAuthentication`
    answer 503 Service Unavailable with a ``Retry-After`` header;
    :class:`~sesame_db.contrib.channels.SesameAuthMiddleware` closes the
    connection with code 1013, Try Again Later.

    It subclasses :exc:`~django.db.OperationalError`, so code that handled
    database errors around django-sesame's ``get_user()`` still does.

    """

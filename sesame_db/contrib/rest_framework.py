"""
Authenticate Django REST framework requests with sesame_db tokens.

This module requires the ``drf`` extra: ``pip install 'django-sesame-db[drf]'``.

"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import (
    BaseAuthentication,
    get_authorization_header,
)

from sesame_db.conf import conf
from sesame_db.confirm import SAFE_METHODS, confirm_enabled
from sesame_db.exceptions import DatabaseUnavailable, InvalidToken
from sesame_db.ratelimit import retry_after
from sesame_db.responses import RETRY_AFTER, is_rate_limited
from sesame_db.utils import check_link, require_scope

if TYPE_CHECKING:
    from sesame_db.models import IssuedToken

__all__ = ["SesameTokenAuthentication", "ServiceUnavailable"]


class ServiceUnavailable(exceptions.APIException):  # type: ignore[misc]
    """
    503 Service Unavailable: the database failed while checking the token.

    DRF's exception handler adds a ``Retry-After`` header from ``wait``.

    """

    status_code = 503
    default_detail = _("The token can't be checked right now. Try again later.")
    default_code = "service_unavailable"
    wait = RETRY_AFTER


# rest_framework has no type annotations.
class SesameTokenAuthentication(BaseAuthentication):  # type: ignore[misc]
    """
    Authenticate API requests with a token, like a magic link does.

    The client sends the token in the ``Authorization`` header::

        Authorization: Sesame <token>

    or in the :data:`SESAME_TOKEN_NAME` query string parameter, as in a link.
    The header wins when both are present. Add the class to the
    ``DEFAULT_AUTHENTICATION_CLASSES`` of ``REST_FRAMEWORK``, or to the
    ``authentication_classes`` of a view.

    A request without a token isn't authenticated by this class, so other
    authentication classes get their turn. An invalid token is answered with
    401 Unauthorized and a ``WWW-Authenticate: Sesame`` header; a client over
    :data:`SESAME_RATE_LIMIT` gets 429 Too Many Requests. When the database
    fails during the check, the answer is 503 Service Unavailable.

    The token goes through :func:`~sesame_db.utils.get_user`, like tokens in
    links: stored tokens are counted, limited and audited, with the request's
    client address and path.

    Subclass it to change its attributes:

    ``keyword``
        The authentication scheme in the ``Authorization`` header,
        ``"Sesame"`` by default; matched case-insensitively.
    ``scope``
        The :ref:`scope <scoped-tokens>` that tokens must have, ``""`` by
        default.
    ``max_age``
        Overrides :data:`SESAME_MAX_AGE` when set.
    ``allow_query_string``
        Whether to accept a token in the query string, :obj:`True` by
        default. Query strings end up in server logs; prefer the header
        for API clients.
    ``confirm``
        Whether tokens in the query string are :ref:`scanner-safe links
        <scanner-safe>`; defaults to :data:`SESAME_CONFIRM`. Then a GET,
        HEAD, OPTIONS or TRACE request, which a mail scanner may send, can't
        use a token in the query string: it's answered 401 Unauthorized and
        the token isn't checked. Other methods, and tokens in the header,
        which scanners don't send, are accepted.

    ``guests``
        Whether to accept :doc:`guest links </guests>`, :obj:`False` by
        default. A valid guest link authenticates no one: ``request.user``
        is an :class:`~django.contrib.auth.models.AnonymousUser` and
        ``request.auth`` is the link's
        :class:`~sesame_db.models.IssuedToken`, which permission classes
        can check. Without it, a guest link is refused with 401.

    ``request.auth`` is :obj:`None` for a user's token: the token isn't kept
    once checked.

    """

    keyword: str = "Sesame"
    scope: str = ""
    max_age: float | datetime.timedelta | None = None
    allow_query_string: bool = True
    confirm: bool | None = None
    guests: bool = False

    # AuthenticationMiddleware leaves tokens to the views that use this class.
    _sesame_db_checks_tokens: ClassVar[bool] = True

    def authenticate(
        self, request: Any
    ) -> tuple[AbstractBaseUser | AnonymousUser, IssuedToken | None] | None:
        """
        Return ``(user, None)`` for a valid token, :obj:`None` without a token.

        With ``guests``, return ``(AnonymousUser(), link)`` for a valid guest
        link.

        Raise :exc:`~rest_framework.exceptions.AuthenticationFailed` for an
        invalid token, :exc:`~rest_framework.exceptions.Throttled` when
        the client is over :data:`SESAME_RATE_LIMIT`, and
        :exc:`ServiceUnavailable` when the database fails during the check.

        """
        require_scope(self.guests, self.scope, type(self).__name__)
        # The Django request: the audit trail records its client and path.
        django_request: HttpRequest = getattr(request, "_request", request)
        token = self.get_header_token(request)
        try:
            if token is not None:
                user, link = check_link(
                    django_request,
                    self.scope,
                    self.max_age,
                    guests=self.guests,
                    token=token,
                )
            elif self.allow_query_string and conf.TOKEN_NAME in django_request.GET:
                if (
                    confirm_enabled(self.confirm)
                    and django_request.method in SAFE_METHODS
                ):
                    raise exceptions.AuthenticationFailed(
                        _("This link must be confirmed: send it with a POST request.")
                    )
                user, link = check_link(
                    django_request, self.scope, self.max_age, guests=self.guests
                )
            else:
                return None
        except InvalidToken as exc:
            if is_rate_limited(exc):
                raise exceptions.Throttled(wait=retry_after()) from None
            raise exceptions.AuthenticationFailed(
                _("Invalid or expired token.")
            ) from None
        except DatabaseUnavailable:
            raise ServiceUnavailable from None
        if user is None and link is not None:
            # A guest link: no one is authenticated.
            return (AnonymousUser(), link)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid or expired token."))
        return (user, None)

    def get_header_token(self, request: Any) -> str | None:
        """Return the token of the ``Authorization`` header, or :obj:`None` if it has another scheme."""
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed(
                _("Invalid Sesame header: expected one token, without spaces.")
            )
        try:
            return str(auth[1].decode("ascii"))
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                _("Invalid Sesame header: the token contains invalid characters.")
            ) from None

    def authenticate_header(self, request: Any) -> str:
        """Return the ``WWW-Authenticate`` header of 401 responses: the ``keyword``."""
        return self.keyword

"""
Authenticate WebSocket connections with sesame_db tokens, with Django Channels or any ASGI server.

The middleware and the helper are plain ASGI: they work with Channels'
routing and consumers, which the ``channels`` extra installs, and don't
import Channels themselves.

"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import close_old_connections
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from sesame_db.conf import conf
from sesame_db.exceptions import DatabaseUnavailable, InvalidToken

# POLICY_VIOLATION and TRY_AGAIN_LATER, the close codes, were defined here.
from sesame_db.responses import (  # noqa: F401
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    close_code,
)
from sesame_db.utils import acheck_link, require_scope

if TYPE_CHECKING:
    from sesame_db.models import IssuedToken

__all__ = ["SesameAuthMiddleware", "authenticate_connection", "request_from_scope"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_from_scope(connection_scope: Scope) -> HttpRequest:
    """
    Make an :class:`~django.http.HttpRequest` that describes the client of an ASGI connection.

    The audit trail records its client address, user agent and path, and
    :data:`SESAME_RATE_LIMIT` counts failures by its client address, which
    honours :data:`SESAME_TRUSTED_PROXIES`. Its method is ``GET``, that of a
    WebSocket handshake, unless the scope has another. It has no query string
    and no body; its cookies are those of the handshake, for :doc:`guest
    links </guests>` bound to a browser.

    """
    request = HttpRequest()
    request.method = str(connection_scope.get("method", "GET"))
    request.path = request.path_info = str(connection_scope.get("path", ""))
    client = connection_scope.get("client")
    if client:
        request.META["REMOTE_ADDR"] = client[0]
    # As django.core.handlers.asgi.ASGIRequest does.
    for name, value in connection_scope.get("headers", []):
        key = name.decode("latin1").upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        text = value.decode("latin1")
        if key in request.META:
            text = request.META[key] + "," + text
        request.META[key] = text
    request.COOKIES = parse_cookie(request.META.get("HTTP_COOKIE", ""))
    return request


def _query_token(connection_scope: Scope) -> str | None:
    query_string = connection_scope.get("query_string", b"")
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin1")
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == conf.TOKEN_NAME:
            return str(value)
    return None


async def _acheck_user(
    request: HttpRequest,
    scope: str,
    max_age: float | datetime.timedelta | None,
    token: str,
    guests: bool = False,
) -> tuple[AbstractBaseUser | None, IssuedToken | None]:
    try:
        return await acheck_link(request, scope, max_age, guests=guests, token=token)
    except DatabaseUnavailable:
        # Channels sends no request_finished signal, which would close a
        # broken connection, as Django's handlers do after a request: close
        # it here, in the thread that ran the check, so that the next
        # connection attempt reconnects.
        await sync_to_async(close_old_connections)()
        raise


async def authenticate_connection(
    connection_scope: Scope,
    token: str,
    scope: str = "",
    max_age: float | datetime.timedelta | None = None,
) -> AbstractBaseUser | None:
    """
    Authenticate an open connection with ``token``, received for example in its first message.

    Return the user, or :obj:`None` if the token is invalid. When it's
    valid, also set ``connection_scope["user"]``, as Channels'
    ``AuthMiddleware`` does, so that ``self.scope["user"]`` is the user in
    the consumer from then on. ``scope`` and ``max_age`` are those of
    :func:`~sesame_db.utils.get_user`.

    The token goes through :func:`~sesame_db.utils.aget_user` with a request
    made by :func:`request_from_scope`, so stored tokens are counted, limited
    and audited with the client's address. Keeping the token out of the URL
    keeps it out of server logs.

    Raise :exc:`~sesame_db.exceptions.DatabaseUnavailable` when the database
    fails during the check; a consumer may close the connection with code
    1013, Try Again Later.

    """
    try:
        user, _ = await _acheck_user(
            request_from_scope(connection_scope), scope, max_age, token
        )
    except InvalidToken:
        return None
    if user is not None:
        connection_scope["user"] = user
    return user


class SesameAuthMiddleware:
    """
    ASGI middleware that authenticates WebSocket connections with a token in their URL.

    It reads the token from the :data:`SESAME_TOKEN_NAME` parameter of the
    query string of a WebSocket connection and sets ``scope["user"]`` to its
    user, or to an :class:`~django.contrib.auth.models.AnonymousUser` when
    the token is invalid. Without a token, it leaves ``scope["user"]`` as
    it is, for example set by Channels' ``AuthMiddlewareStack`` from the
    session, or else sets an anonymous user. Other connections, such as HTTP
    requests, pass through.

    Wrap the WebSocket application with it; inside Channels'
    ``AuthMiddlewareStack``, a token overrides the user of the session:

    .. code-block:: python

        from channels.auth import AuthMiddlewareStack
        from channels.routing import ProtocolTypeRouter, URLRouter
        from sesame_db.contrib.channels import SesameAuthMiddleware

        application = ProtocolTypeRouter({
            "http": django_asgi_app,
            "websocket": AuthMiddlewareStack(
                SesameAuthMiddleware(URLRouter(websocket_urlpatterns), scope="chat")
            ),
        })

    ``scope`` is the :ref:`scope <scoped-tokens>` that tokens must have,
    not to be confused with the ASGI connection scope, and ``max_age``
    overrides :data:`SESAME_MAX_AGE`. With ``required=True``, a connection
    without a valid token is closed before it's accepted, which the server
    answers with 403 Forbidden; the application doesn't see it. When the
    database fails during the check, the connection is closed the same way,
    with code 1013, Try Again Later, whether a token is ``required`` or not.

    The user isn't logged in: the token authenticates this connection only.

    With ``guests=True``, a valid :doc:`guest link </guests>` lets the
    connection through without authenticating anyone: ``scope["user"]``
    stays as it is (or anonymous), and ``scope["sesame_link"]`` is the
    link's :class:`~sesame_db.models.IssuedToken`, as it is for a user's
    stored token. Without it, a guest link is refused like an invalid token.

    """

    def __init__(
        self,
        inner: ASGIApp,
        scope: str = "",
        *,
        max_age: float | datetime.timedelta | None = None,
        required: bool = False,
        guests: bool = False,
    ) -> None:
        require_scope(guests, scope, type(self).__name__)
        self.inner = inner
        self.guests = guests
        # Not self.scope: in ASGI, "scope" is the connection.
        self.token_scope = scope
        self.max_age = max_age
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        # Don't change the scope of the caller.
        scope = dict(scope)
        token = _query_token(scope)
        user: AbstractBaseUser | None = None
        link: IssuedToken | None = None
        rejection: InvalidToken | None = None
        if token is not None:
            request = request_from_scope(scope)
            try:
                user, link = await _acheck_user(
                    request, self.token_scope, self.max_age, token, self.guests
                )
            except InvalidToken as exc:
                rejection = exc
            except DatabaseUnavailable as exc:
                await self.deny(receive, send, code=close_code(exc))
                return
            if link is not None:
                scope["sesame_link"] = link
            if user is None and link is not None:
                # A guest link: no one is authenticated.
                scope.setdefault("user", AnonymousUser())
            else:
                scope["user"] = user if user is not None else AnonymousUser()
        else:
            scope.setdefault("user", AnonymousUser())
        if self.required and user is None and link is None:
            await self.deny(receive, send, code=close_code(rejection))
            return
        await self.inner(scope, receive, send)

    @staticmethod
    async def deny(receive: Receive, send: Send, *, code: int) -> None:
        """Refuse the WebSocket handshake with close ``code``: the server answers 403 Forbidden."""
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": code})

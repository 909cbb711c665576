"""
Rate limiting of failed token checks: :data:`SESAME_RATE_LIMIT`.

Failed attempts are counted in Django's cache, per client IP address and per
stored link, by the authentication backend only: this module is the one place
that counts them. When a counter reaches the limit, the backend rejects
further attempts with :attr:`~sesame_db.exceptions.Reason.RATE_LIMITED`
before any query; the rejection reaches the views that check tokens, which
answer 429 Too Many Requests (:mod:`sesame_db.responses`).

Counters use a fixed window: the first failure starts it, and it lasts the
configured period. Successful attempts don't reset counters, so a client
can't clear its record with a link of its own.

"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import math
import sys
import weakref
from collections.abc import AsyncIterator
from types import TracebackType

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches
from django.http import HttpRequest, HttpResponse

from .clients import client_ip
from .conf import conf
from .exceptions import InvalidToken, Reason

__all__ = ["is_rate_limited", "rate_limited_response", "retry_after"]

# The requests whose token get_user() rejected for going over the limit,
# for is_rate_limited(); the entry points of sesame_db get the rejection
# itself from utils.check_user() instead.
_limited: weakref.WeakSet[HttpRequest] = weakref.WeakSet()

# The key of clients whose address can't be parsed.
UNKNOWN_CLIENT = "unknown"

# The audit trail records, per window of AUDIT_WINDOW seconds, the first
# rejection of a stored link for a reason from each client, for at most
# AUDIT_CLIENTS clients: see docs/store.rst.
AUDIT_WINDOW = 300
AUDIT_CLIENTS = 10


def _limits() -> tuple[int, float] | None:
    setting = conf.RATE_LIMIT
    if setting is None:
        return None
    period = setting["period"]
    if isinstance(period, datetime.timedelta):
        period = period.total_seconds()
    return int(setting["failures"]), float(period)


def retry_after() -> int:
    """Return the period of :data:`SESAME_RATE_LIMIT` in whole seconds, for a ``Retry-After`` header."""
    limits = _limits()
    return 0 if limits is None else math.ceil(limits[1])


def is_rate_limited(request: HttpRequest | None) -> bool:
    """
    Tell whether the token of ``request`` was rejected because of :data:`SESAME_RATE_LIMIT`.

    Call it after :func:`~sesame_db.utils.get_user` or
    :func:`~sesame_db.utils.aget_user` returned :obj:`None` for ``request``,
    to answer 429 Too Many Requests rather than 403 or 401, as
    :func:`~sesame_db.decorators.authenticate`,
    :class:`~sesame_db.views.LoginView` and
    :class:`~sesame_db.contrib.rest_framework.SesameTokenAuthentication` do.

    """
    return request is not None and request in _limited


def remember(request: HttpRequest | None) -> None:
    """Record that the token of ``request`` was rejected because of :data:`SESAME_RATE_LIMIT`, for :func:`is_rate_limited`."""
    if request is not None:
        _limited.add(request)


def rate_limited_response() -> HttpResponse:
    """Return a 429 Too Many Requests response with a ``Retry-After`` header."""
    return HttpResponse(
        "Too many failed attempts. Try again later.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
        headers={"Retry-After": str(retry_after())},
    )


def _client(request: HttpRequest | None) -> str | None:
    if request is None or not hasattr(request, "META"):
        return None
    ip = client_ip(request)
    if ip is None:
        # Without an address, clients share one count rather than none:
        # the limit must not fail open. client_ip() logs a warning.
        return UNKNOWN_CLIENT
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # A dual-stack server sees IPv4 clients as ::ffff:a.b.c.d: count
            # them as IPv4 clients, not all together in ::/64.
            return str(address.ipv4_mapped)
        # A client usually has a whole /64: count them together.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return ip


def _keys(request: HttpRequest | None, token_id: int | None) -> list[str]:
    keys = []
    client = _client(request)
    if client is not None:
        keys.append(f"sesame_db:failures:ip:{client}")
    if token_id is not None:
        keys.append(f"sesame_db:failures:link:{token_id}")
    return keys


def _cache() -> BaseCache:
    return caches[conf.RATE_LIMIT_CACHE]


def _count(cache: BaseCache, key: str, timeout: float) -> int:
    """Add one to counter ``key``, starting a window of ``timeout`` seconds if it has none, and return the new count."""
    # add() starts the window; incr() keeps its expiry and is atomic on
    # Redis, Memcached and the local-memory cache (the W006 check warns
    # about the others).
    for _ in range(3):
        try:
            return int(cache.incr(key))
        except ValueError:  # No window yet, or it just ended.
            if cache.add(key, 1, timeout):
                return 1
            # Another attempt started one between incr() and add().
    # A cache that says the key exists and doesn't, again and again: refuse
    # rather than let the attempt through uncounted.
    return sys.maxsize


def _release(cache: BaseCache, keys: list[str]) -> None:
    for key in keys:
        # ValueError: the window ended, there's nothing to give back.
        with contextlib.suppress(ValueError):
            cache.decr(key)


def _reject(token_id: int | None) -> InvalidToken:
    if token_id is None:
        return InvalidToken(Reason.RATE_LIMITED, "Rate limited: too many failures")
    return InvalidToken(
        Reason.RATE_LIMITED,
        "Rate limited: too many failures for stored token %d or its client",
        token_id,
        token_id=token_id,
    )


def check(request: HttpRequest | None, token_id: int | None) -> None:
    """
    Count an attempt for the client of ``request`` and for link ``token_id``; raise :exc:`~sesame_db.exceptions.InvalidToken` if either goes over the limit.

    The attempt is counted before the token is checked, with the cache's
    atomic ``incr()``, so that concurrent attempts can't all pass: no more
    than ``failures`` attempts are checked per window, and a refused attempt
    gives its counts back. It stays counted as a failure unless
    :func:`pending` gives it back when the token turns out valid.

    ``token_id`` must come from a token whose MAC is valid.

    """
    limits = _limits()
    if limits is None:
        return
    failures, period = limits
    keys = _keys(request, token_id)
    if not keys:
        return
    cache = _cache()
    counts = [_count(cache, key, period) for key in keys]
    if any(count > failures for count in counts):
        _release(cache, keys)
        raise _reject(token_id)


async def acheck(request: HttpRequest | None, token_id: int | None) -> None:
    """See :func:`check`."""
    # In a thread: the async methods of Django's caches increment with a
    # read then a write, neither atomic nor keeping the window's expiry.
    if _limits() is not None:
        await sync_to_async(check)(request, token_id)


class pending:  # lower case, like the context manager functions of this module
    """
    Give back the attempt counted by :func:`check` unless the block rejects the token.

    A valid token doesn't count as a failure, so an honest user isn't
    limited by their own uses. A database failure doesn't either: the token
    was neither accepted nor rejected.

    """

    # A class rather than a generator: it's on the path of every token.
    __slots__ = ("request", "token_id")

    def __init__(self, request: HttpRequest | None, token_id: int | None) -> None:
        self.request = request
        self.token_id = token_id

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None or not issubclass(exc_type, InvalidToken):
            release(self.request, self.token_id)


@contextlib.asynccontextmanager
async def apending(
    request: HttpRequest | None, token_id: int | None
) -> AsyncIterator[None]:
    """See :func:`pending`."""
    try:
        yield
    except InvalidToken:
        raise
    except BaseException:
        await arelease(request, token_id)
        raise
    await arelease(request, token_id)


def release(request: HttpRequest | None, token_id: int | None) -> None:
    """Give back the attempt that :func:`check` counted."""
    if _limits() is not None:
        _release(_cache(), _keys(request, token_id))


async def arelease(request: HttpRequest | None, token_id: int | None) -> None:
    """See :func:`release`."""
    if _limits() is not None:
        await sync_to_async(release)(request, token_id)


def _rejection_keys(
    request: HttpRequest | None, exc: InvalidToken, scope: str
) -> tuple[str, str]:
    link = f"sesame_db:rejected:{exc.token_id}:{exc.reason.value}"
    # The requested scope comes from the URL: hashed, it makes a short key
    # of safe characters for any cache.
    scope_hash = hashlib.blake2b(scope.encode(), digest_size=8).hexdigest()
    return link, f"{link}:{scope_hash}:{_client(request) or '-'}"


def _first_rejection(
    request: HttpRequest | None, exc: InvalidToken, scope: str
) -> bool:
    if exc.token_id is None or not conf.AUDIT:
        return True  # Nothing is recorded anyway.
    cache = _cache()
    link, client = _rejection_keys(request, exc, scope)
    if not cache.add(client, 1, AUDIT_WINDOW):
        return False
    return _count(cache, link, AUDIT_WINDOW) <= AUDIT_CLIENTS


def _forget_rejection(
    request: HttpRequest | None, exc: InvalidToken, scope: str
) -> None:
    cache = _cache()
    link, client = _rejection_keys(request, exc, scope)
    cache.delete(client)
    _release(cache, [link])


class auditing:  # lower case, like the context manager functions of this module
    """
    Tell whether to record the rejection ``exc`` of a stored link in the audit trail.

    Within a window of :data:`AUDIT_WINDOW` seconds, only the first rejection
    of a link for a reason, from a client, in a requested ``scope``, is
    recorded, and at most :data:`AUDIT_CLIENTS` for a link and a reason, so
    that repeating a rejected link can't fill the audit trail. They're
    counted in :data:`SESAME_RATE_LIMIT_CACHE`, whether or not
    :data:`SESAME_RATE_LIMIT` is set. If the block fails, the rejection isn't
    counted as recorded.

    """

    # A class rather than a generator: it's on the path of every rejection.
    __slots__ = ("audit", "exc", "request", "scope")

    def __init__(
        self, request: HttpRequest | None, exc: InvalidToken, scope: str
    ) -> None:
        self.request = request
        self.exc = exc
        self.scope = scope
        self.audit = False

    def __enter__(self) -> bool:
        self.audit = _first_rejection(self.request, self.exc, self.scope)
        return self.audit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if (
            exc_type is not None
            and self.audit
            and self.exc.token_id is not None
            and conf.AUDIT
        ):
            _forget_rejection(self.request, self.exc, self.scope)


@contextlib.asynccontextmanager
async def aauditing(
    request: HttpRequest | None, exc: InvalidToken, scope: str
) -> AsyncIterator[bool]:
    """See :func:`auditing`."""
    if exc.token_id is None or not conf.AUDIT:
        yield True  # Nothing is recorded anyway.
        return
    audit = await sync_to_async(_first_rejection)(request, exc, scope)
    try:
        yield audit
    except BaseException:
        if audit:
            await sync_to_async(_forget_rejection)(request, exc, scope)
        raise

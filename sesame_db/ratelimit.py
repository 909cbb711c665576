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

On Django's :class:`~django.core.cache.backends.redis.RedisCache`, a counter
is incremented and given its expiry in one Lua script, atomic across every
process that shares the server. When the cache can't be reached, counters
live in a cache of the process until it can (:data:`FALLBACK_RETRY`): valid
links keep working, failures are still limited, per process, and the
``sesame_db`` logger says so once when the outage starts and once when it
ends (docs/scale.rst).

"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import logging
import math
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from . import browsers
from .clients import client_ip
from .conf import conf
from .exceptions import InvalidToken, Reason

__all__ = ["is_rate_limited", "rate_limited_response", "retry_after"]

logger = logging.getLogger("sesame_db")

_T = TypeVar("_T")

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
    # Not for the first browser of a link bound to it: whoever holds the
    # link elsewhere can't use it, and mustn't lock that browser out by
    # failing on purpose. Its client's counter still applies.
    if token_id is not None and not browsers.is_bound_here(request, token_id):
        keys.append(f"sesame_db:failures:link:{token_id}")
    return keys


# While the cache of counters can't be reached, counters live here, in the
# process; the cache is tried again FALLBACK_RETRY seconds after its last
# failure.
FALLBACK_RETRY = 1.0
_fallback = LocMemCache(
    "sesame_db-ratelimit-fallback", {"OPTIONS": {"MAX_ENTRIES": 10_000}}
)
_outages: dict[str, float] = {}
_outages_lock = threading.Lock()


@receiver(setting_changed)
def _reset_fallback(*, setting: str, **kwargs: Any) -> None:
    # Another cache, or the same alias for another cache: start afresh.
    if setting in {"CACHES", "SESAME_RATE_LIMIT_CACHE"}:
        with _outages_lock:
            _outages.clear()
        _fallback.clear()


def _unreachable() -> tuple[type[Exception], ...]:
    # The errors of a cache that can't be reached, as opposed to a bug: a
    # refused or reset connection (OSError, as Memcached clients raise it),
    # and redis-py's own exceptions for these.
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - redis is an optional extra
        return (OSError,)
    return (OSError, ConnectionError, TimeoutError)


def _call(operation: Callable[[BaseCache], _T]) -> _T:
    """Run ``operation`` on the cache of counters, or on the fallback of the process while it can't be reached."""
    alias = conf.RATE_LIMIT_CACHE
    since = _outages.get(alias)
    if since is not None and time.monotonic() - since < FALLBACK_RETRY:
        return operation(_fallback)
    try:
        result = operation(caches[alias])
    except _unreachable() as exc:
        with _outages_lock:
            first = alias not in _outages
            _outages[alias] = time.monotonic()
        if first:
            logger.warning(
                "Rate limit cache %r unreachable (%s): counting failures "
                "in each process until it's back",
                alias,
                exc,
            )
        return operation(_fallback)
    if since is not None:
        with _outages_lock:
            recovered = _outages.pop(alias, None) is not None
        if recovered:
            logger.warning(
                "Rate limit cache %r reachable again: counting failures in it", alias
            )
    return result


# INCR, and PEXPIRE for the first failure of a window, in one step: Django's
# RedisCache.incr() checks that the key exists, then increments it, and a
# key that expires in between comes back without an expiry.
_REDIS_INCR = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""
# DECR, of an existing key only: giving back a count never starts a window.
_REDIS_DECR = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('DECR', KEYS[1])
end
return false
"""
_scripts: dict[str, Any] = {}


def _redis_eval(cache: RedisCache, script: str, key: str, *args: int) -> Any:
    from redis.commands.core import Script

    key = cache.make_and_validate_key(key)
    # RedisCache keeps its client in _cache; get_client() is its API to
    # reach redis-py.
    client = cache._cache.get_client(key, write=True)
    runner = _scripts.get(script)
    if runner is None:
        runner = _scripts[script] = Script(client, script)
    return runner(keys=[key], args=args, client=client)


def _count(cache: BaseCache, key: str, timeout: float) -> int:
    """Add one to counter ``key``, starting a window of ``timeout`` seconds if it has none, and return the new count."""
    if isinstance(cache, RedisCache):
        return int(_redis_eval(cache, _REDIS_INCR, key, max(1, int(timeout * 1000))))
    # add() starts the window; incr() keeps its expiry and is atomic on
    # Memcached and the local-memory cache (the W006 check warns about the
    # others).
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
    if isinstance(cache, RedisCache):
        for key in keys:
            _redis_eval(cache, _REDIS_DECR, key)
        return
    for key in keys:
        # ValueError: the window ended, there's nothing to give back.
        with contextlib.suppress(ValueError):
            cache.decr(key)


def count(key: str, timeout: float) -> int:
    """
    Add one to the counter ``key`` of the rate limit's cache and return it; the first count starts a window of ``timeout`` seconds.

    For the counters of other features, such as the login flow's throttle:
    they share this module's atomic counting and its fallback while the
    cache can't be reached.

    """
    return _call(lambda cache: _count(cache, key, timeout))


def get_count(key: str) -> int:
    """Return the counter ``key`` of the rate limit's cache, 0 if it has none."""
    return int(_call(lambda cache: cache.get(key, 0)))


def first_in_window(key: str, timeout: float) -> bool:
    """Tell whether ``key`` is new in the rate limit's cache, marking it for ``timeout`` seconds."""
    return bool(_call(lambda cache: cache.add(key, 1, timeout)))


def forget(key: str) -> None:
    """Delete ``key`` from the rate limit's cache."""
    _call(lambda cache: cache.delete(key))


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

    def count_all(cache: BaseCache) -> bool:
        counts = [_count(cache, key, period) for key in keys]
        if any(count > failures for count in counts):
            _release(cache, keys)
            return False
        return True

    if not _call(count_all):
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
        keys = _keys(request, token_id)
        _call(lambda cache: _release(cache, keys))


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
    link, client = _rejection_keys(request, exc, scope)

    def first(cache: BaseCache) -> bool:
        if not cache.add(client, 1, AUDIT_WINDOW):
            return False
        return _count(cache, link, AUDIT_WINDOW) <= AUDIT_CLIENTS

    return _call(first)


def _forget_rejection(
    request: HttpRequest | None, exc: InvalidToken, scope: str
) -> None:
    link, client = _rejection_keys(request, exc, scope)

    def forget_both(cache: BaseCache) -> None:
        cache.delete(client)
        _release(cache, [link])

    _call(forget_both)


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

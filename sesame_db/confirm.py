"""
Scanner-safe links and the transaction of redemptions.

Shared by :mod:`sesame_db.decorators` and :mod:`sesame_db.views`.

"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from .conf import conf

__all__ = [
    "ALL_ALIASES",
    "atomic_requests",
    "confirm_enabled",
    "csrf_rejection",
    "needs_confirmation",
    "render_confirmation",
]

SAFE_METHODS = ("GET", "HEAD")


def confirm_enabled(confirm: bool | None) -> bool:
    return conf.CONFIRM if confirm is None else confirm


def needs_confirmation(
    request: HttpRequest, confirm: bool | None
) -> HttpResponseBase | None:
    """
    Return the response to send instead of using the token, if any.

    With confirmation on, that's the confirmation page for GET and HEAD
    requests with a token, and a 403 response for other requests that fail
    the CSRF check.

    """
    if not confirm_enabled(confirm) or conf.TOKEN_NAME not in request.GET:
        return None
    if request.method in SAFE_METHODS:
        return render_confirmation(request)
    return csrf_rejection(request)


def _csrf() -> CsrfViewMiddleware:
    return CsrfViewMiddleware(lambda request: HttpResponse())


def csrf_rejection(request: HttpRequest) -> HttpResponseBase | None:
    """
    Check the CSRF token of a confirmation POST; return a 403 response if it fails.

    This works whether :class:`~django.middleware.csrf.CsrfViewMiddleware`
    is installed or not; when it is and it already accepted the request,
    this is a no-op.

    """
    middleware = _csrf()
    middleware.process_request(request)
    return middleware.process_view(request, None, (), {})  # type: ignore[arg-type]


def render_confirmation(
    request: HttpRequest, context: dict[str, Any] | None = None
) -> HttpResponseBase:
    """
    Render :data:`SESAME_CONFIRM_TEMPLATE`: a form that POSTs back to the same URL.

    Email scanners that fetch links with GET or HEAD then don't use the token.

    """
    middleware = _csrf()
    middleware.process_request(request)
    response = render(
        request,
        conf.CONFIRM_TEMPLATE,
        {"action": request.get_full_path(), **(context or {})},
    )
    # The URL contains the token: keep it out of caches and Referer headers.
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    # Set the CSRF cookie that {% csrf_token %} asked for.
    return middleware.process_response(request, response)


class _AllAliases(frozenset[str]):
    # Django's handler wraps a view in atomic() for every database with
    # ATOMIC_REQUESTS unless the alias is in view._non_atomic_requests.
    def __contains__(self, alias: object) -> bool:
        return True


ALL_ALIASES = _AllAliases()


@contextlib.contextmanager
def atomic_requests(view: Callable[..., Any]) -> Any:
    """
    Open the transactions that ATOMIC_REQUESTS would have opened around ``view``.

    Views that redeem tokens opt out of ATOMIC_REQUESTS with
    :data:`ALL_ALIASES`, redeem the token in autocommit mode, then run the
    view's code in this block. So a view that fails after authentication
    rolls back its own changes, but not the use of a one-time link, nor its
    audit event.

    """
    opted_out = getattr(view, "_non_atomic_requests", ())
    with contextlib.ExitStack() as stack:
        for alias, settings_dict in connections.settings.items():
            if settings_dict.get("ATOMIC_REQUESTS") and alias not in opted_out:
                stack.enter_context(transaction.atomic(using=alias))
        yield

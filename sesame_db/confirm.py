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
from django.utils.encoding import escape_uri_path, iri_to_uri
from django.utils.http import escape_leading_slashes

from .conf import conf

__all__ = [
    "ALL_ALIASES",
    "CHECKS_TOKENS_ATTR",
    "atomic_requests",
    "confirm_enabled",
    "csrf_rejection",
    "local_url",
    "mark_view",
    "needs_confirmation",
    "render_confirmation",
    "view_confirms",
]

# The methods that the CSRF check lets through: the token of a link that needs
# confirmation is never used on them, since a scanner, a link preview or a
# cross-site page can send them.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


def local_url(request: HttpRequest, *, keep_token: bool = True) -> str:
    """
    Return the URL of ``request`` as a path on this site, optionally without the token.

    The path is escaped, so ``%3F`` stays in the path, and so is a leading
    ``//``, which browsers read as another host: ``//evil.example/`` becomes
    ``/%2Fevil.example/``, as :func:`~django.utils.http.escape_leading_slashes`
    does for Django's own redirects. A backslash is escaped too, since
    browsers read ``/\\host`` as ``//host``.

    """
    url = escape_leading_slashes(escape_uri_path(request.path))
    if keep_token:
        query = request.META.get("QUERY_STRING", "")
        return f"{url}?{iri_to_uri(query)}" if query else url
    params = request.GET.copy()
    params.pop(conf.TOKEN_NAME, None)
    return f"{url}?{params.urlencode()}" if params else url


def confirm_enabled(confirm: bool | None) -> bool:
    return conf.CONFIRM if confirm is None else confirm


# The attribute that marks the views that check tokens themselves, with their
# confirm option: the middleware leaves tokens to them.
_CONFIRM_ATTR = "_sesame_db_confirm"
# The attribute that marks authentication classes of Django REST framework
# that check tokens; their confirm option is their confirm attribute.
CHECKS_TOKENS_ATTR = "_sesame_db_checks_tokens"


def mark_view(view: Callable[..., Any], confirm: bool | None) -> None:
    """Mark ``view`` as checking tokens itself, with the ``confirm`` option."""
    setattr(view, _CONFIRM_ATTR, confirm)


def view_confirms(view: Callable[..., Any]) -> bool | None:
    """
    Tell whether ``view`` checks tokens itself, and if so whether it confirms links.

    Return :obj:`None` if ``view`` doesn't check tokens, else whether it asks
    for confirmation. Views made by
    :func:`~sesame_db.decorators.authenticate`,
    :class:`~sesame_db.views.LoginView` and
    :class:`~sesame_db.views.TokenAuthenticationMixin` check tokens, and so
    do views of Django REST framework with
    :class:`~sesame_db.contrib.rest_framework.SesameTokenAuthentication`.

    """
    options: list[bool | None] = []
    if hasattr(view, _CONFIRM_ATTR):
        options.append(getattr(view, _CONFIRM_ATTR))
    view_class = getattr(view, "cls", None)  # Django REST framework's views
    for auth in getattr(view_class, "authentication_classes", ()):
        if getattr(auth, CHECKS_TOKENS_ATTR, False):
            options.append(auth.confirm)
    if not options:
        return None
    return any(confirm_enabled(confirm) for confirm in options)


def needs_confirmation(
    request: HttpRequest, confirm: bool | None
) -> HttpResponseBase | None:
    """
    Return the response to send instead of using the token, if any.

    With confirmation on, that's the confirmation page for requests with a
    token whose method the CSRF check lets through (GET, HEAD, OPTIONS and
    TRACE), and a 403 response for other requests that fail the CSRF check.

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
    request: HttpRequest,
    context: dict[str, Any] | None = None,
    *,
    template_name: str | None = None,
) -> HttpResponseBase:
    """
    Render :data:`SESAME_CONFIRM_TEMPLATE`, or ``template_name``: a form that POSTs back to the same URL.

    Email scanners that fetch links with GET or HEAD then don't use the token.

    """
    middleware = _csrf()
    middleware.process_request(request)
    response = render(
        request,
        template_name or conf.CONFIRM_TEMPLATE,
        {"action": local_url(request), **(context or {})},
    )
    # The URL contains the token: keep it out of caches and Referer headers.
    # strict-origin sends the origin alone, never the path and query string,
    # and only over HTTPS. "no-referrer" would make Chromium send
    # "Origin: null" with the form's POST, which Django's CSRF check refuses
    # (tests/browser/test_login_flow.py).
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "strict-origin"
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

"""
Keep tokens out of Django's error reports and request logs.

Django's error pages, error emails and the records of the ``django.request``
logger carry the request: its URL, ``GET`` and ``POST`` parameters and
headers, so a token in the :data:`SESAME_TOKEN_NAME` parameter or in an
``Authorization`` header ends up in every report. The classes of this module
mask it; see :ref:`error-reports`.

This module works without ``"sesame_db"`` in :setting:`INSTALLED_APPS`.

"""

from __future__ import annotations

import copy
import io
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

from django.http import HttpRequest, QueryDict
from django.template.defaultfilters import pprint
from django.utils.datastructures import MultiValueDict
from django.utils.safestring import SafeString, mark_safe
from django.views import debug

from .conf import conf

__all__ = [
    "ExceptionReporter",
    "RedactTokenFilter",
    "SafeExceptionReporterFilter",
    "redact_request",
]

# The same stars as Django's SafeExceptionReporterFilter.
SUBSTITUTE = "********************"

# Secrets are replaced in free text, rendered HTML included, only when they
# look like tokens: long enough not to match unrelated words, and made of
# characters that never form markup, so that replacing them can't change the
# structure of a page. Every token that sesame_db creates qualifies; other
# values are still masked where they are the token parameter.
_SECRET_RE = re.compile(r"[A-Za-z0-9_~.%+=/-]{8,}")

# Headers whose values are URLs that may carry a token.
_URL_HEADERS = ("HTTP_REFERER", "REQUEST_URI", "RAW_URI")


def _parameter_re() -> re.Pattern[str]:
    # "sesame=<value>" at the start of a query string or after ?, & or ;:
    # in QUERY_STRING, in a URL, or in a request line of the server's log.
    name = re.escape(conf.TOKEN_NAME)
    return re.compile(rf"(?P<prefix>(?:^|[?&;]){name}=)[^&;#\s\"'<>]*")


def _credentials(authorization: str) -> str:
    # "Sesame <token>": the credentials, whatever the scheme; a subclass of
    # the DRF authentication class may use another keyword, and the
    # credentials of other schemes are secrets too.
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip()


def _query_tokens(query: str) -> list[str]:
    # The values of the token parameter in a raw query string.
    name = conf.TOKEN_NAME
    tokens = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if sep and unquote_plus(key) == name:
            tokens.append(unquote_plus(value))
    return tokens


def _request_secrets(request: HttpRequest) -> list[str]:
    """
    Return the tokens that ``request`` carries, in every form they may take in text.

    They come from ``GET``, from ``POST`` if it was parsed already (this
    never reads the body), from the ``Authorization`` header, and from the
    URLs in ``Referer``, ``REQUEST_URI`` and ``RAW_URI``.

    """
    name = conf.TOKEN_NAME
    found: list[str] = []
    meta = getattr(request, "META", None) or {}
    found += _query_tokens(str(meta.get("QUERY_STRING", "")))
    for header in _URL_HEADERS:
        url = meta.get(header)
        if isinstance(url, str):
            found += _query_tokens(urlsplit(url).query)
    authorization = meta.get("HTTP_AUTHORIZATION")
    if isinstance(authorization, str):
        found.append(_credentials(authorization))
    get = request.__dict__.get("GET", None)
    if isinstance(get, MultiValueDict):
        found += [str(value) for value in get.getlist(name)]
    post = request.__dict__.get("_post", None)
    if isinstance(post, MultiValueDict):
        found += [str(value) for value in post.getlist(name)]
    secrets: list[str] = []
    for token in found:
        if not _SECRET_RE.fullmatch(token):
            continue
        for form in (token, quote(token, safe=""), quote_plus(token, safe="")):
            if form not in secrets:
                secrets.append(form)
    # Longest first, so that no secret is left half-replaced.
    secrets.sort(key=len, reverse=True)
    return secrets


def _scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the token parameter in ``text``, and every one of ``secrets``."""
    text = _parameter_re().sub(rf"\g<prefix>{SUBSTITUTE}", text)
    for secret in secrets:
        text = text.replace(secret, SUBSTITUTE)
    return text


def _scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    for secret in secrets:
        data = data.replace(secret.encode(), SUBSTITUTE.encode())
    return data


def _scrub_meta(meta: Mapping[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    secrets = list(secrets)
    safe = {}
    for key, value in meta.items():
        if key == "HTTP_AUTHORIZATION" and isinstance(value, str):
            scheme, _, credentials = value.strip().partition(" ")
            if credentials:
                value = f"{scheme} {SUBSTITUTE}"
        elif isinstance(value, str):
            value = _scrub_text(value, secrets)
        safe[key] = value
    return safe


def _scrub_query_dict(
    params: MultiValueDict[str, Any], secrets: Iterable[str]
) -> QueryDict:
    secrets = list(secrets)
    safe = QueryDict(mutable=True)
    for key, values in params.lists():
        if key == conf.TOKEN_NAME:
            values = [SUBSTITUTE for _ in values]
        else:
            values = [
                _scrub_text(v, secrets) if isinstance(v, str) else v for v in values
            ]
        safe.setlist(key, values)
    safe._mutable = False
    return safe


def redact_request(request: HttpRequest) -> HttpRequest:
    """
    Return a copy of ``request`` without its tokens.

    The copy's ``GET``, ``POST``, ``META`` (and so its :func:`repr`, its
    :meth:`~django.http.HttpRequest.get_full_path` and
    :meth:`~django.http.HttpRequest.build_absolute_uri`) show stars in place
    of the :data:`SESAME_TOKEN_NAME` parameter and of the credentials of the
    ``Authorization`` header. Everything else is shared with ``request``,
    which is left untouched.

    The copy never reads the request body: when ``request.POST`` wasn't
    parsed yet, the copy's ``POST`` is empty.

    """
    secrets = _request_secrets(request)
    clone = copy.copy(request)
    meta = _scrub_meta(request.META, secrets)
    clone.META = meta
    if "environ" in request.__dict__:
        # WSGIRequest.META is its environ: keep them the same dict.
        clone.environ = meta  # type: ignore[attr-defined]
    # Immutable, as Django's.
    clone.GET = _scrub_query_dict(request.GET, secrets)  # type: ignore[assignment]
    post = request.__dict__.get("_post", None)
    if isinstance(post, MultiValueDict):
        clone._post = _scrub_query_dict(post, secrets)  # type: ignore[attr-defined]
    body = request.__dict__.get("_body", None)
    if isinstance(body, bytes):
        clone._body = _scrub_bytes(body, secrets)
    # The copy must not read the stream that the request shares with the
    # view: as far as it knows, the body was read already.
    clone._stream = io.BytesIO()
    clone._read_started = True  # type: ignore[attr-defined]
    scope = request.__dict__.get("scope", None)
    if isinstance(scope, dict):
        # ASGIRequest keeps the ASGI scope: its query string and headers.
        safe_scope = dict(scope)
        query_string = scope.get("query_string")
        if isinstance(query_string, bytes):
            safe_scope["query_string"] = _scrub_text(
                query_string.decode("latin-1"), secrets
            ).encode("latin-1")
        headers = scope.get("headers")
        if isinstance(headers, Iterable):
            safe_scope["headers"] = [
                (
                    name,
                    (
                        _scrub_meta(
                            {"HTTP_AUTHORIZATION": value.decode("latin-1")}, ()
                        )["HTTP_AUTHORIZATION"].encode("latin-1")
                        if name.lower() == b"authorization"
                        else _scrub_bytes(value, secrets)
                    ),
                )
                for name, value in headers
            ]
        clone.scope = safe_scope  # type: ignore[attr-defined]
    return clone


class _Redacted:
    # Shows as the text it was given, once pretty-printed by the report.

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """
    Mask tokens in Django's error reports, on top of Django's own masking.

    Set :setting:`DEFAULT_EXCEPTION_REPORTER_FILTER` to
    ``"sesame_db.reporting.SafeExceptionReporterFilter"``. The filter hides
    the :data:`SESAME_TOKEN_NAME` parameter in ``POST`` and in ``META``
    (``QUERY_STRING``, ``REQUEST_URI``, ``RAW_URI``, ``HTTP_REFERER``, and any
    other value that holds the parameter), the credentials of the
    ``Authorization`` header, and the request's tokens wherever they show in
    the local variables of the traceback.

    Unlike the rest of Django's filter, it works when :setting:`DEBUG` is on
    too: a token is a live credential, and debug pages get copied into bug
    reports.

    The report also shows the request URL and the ``GET`` parameters, which
    don't go through the filter: set :setting:`DEFAULT_EXCEPTION_REPORTER` to
    :class:`ExceptionReporter` as well.

    """

    def get_safe_request_meta(self, request: HttpRequest | None) -> dict[str, Any]:
        """Return ``request.META`` with tokens masked."""
        if request is None:
            return {}
        meta = super().get_safe_request_meta(request)
        return _scrub_meta(meta, _request_secrets(request))

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        """Return ``request.POST`` with tokens masked."""
        params = super().get_post_parameters(request)
        if request is None or not isinstance(params, MultiValueDict):
            return params
        return _scrub_query_dict(params, _request_secrets(request))

    def cleanse_special_types(self, request: HttpRequest | None, value: Any) -> Any:
        """Mask tokens in a local variable of the traceback."""
        value = super().cleanse_special_types(request, value)
        if isinstance(value, HttpRequest):
            return redact_request(value)
        if request is None:
            return value
        secrets = _request_secrets(request)
        if not secrets:
            return value
        if isinstance(value, MultiValueDict):
            return _scrub_query_dict(value, secrets)
        # Anything else, such as a DRF request or a string holding the token,
        # is shown as the report would show it, with the tokens masked.
        text = pprint(value)
        safe = _scrub_text(text, secrets)
        return value if safe == text else _Redacted(safe)


class ExceptionReporter(debug.ExceptionReporter):
    """
    Show Django's error reports without the tokens of the request.

    Set :setting:`DEFAULT_EXCEPTION_REPORTER` to
    ``"sesame_db.reporting.ExceptionReporter"``. The debug page and the
    emails of :class:`~django.utils.log.AdminEmailHandler` then show the
    request URL, ``GET``, ``POST`` and ``META`` with tokens masked, whatever
    the filter, and, as a last resort, every remaining occurrence of the
    request's tokens in the report is masked. Use it with
    :class:`SafeExceptionReporterFilter`, which masks the local variables of
    the traceback more precisely.

    """

    def get_traceback_data(self) -> dict[str, Any]:
        """Return the data of the report, with tokens masked."""
        data: dict[str, Any] = super().get_traceback_data()
        if self.request is None:
            return data
        secrets = _request_secrets(self.request)
        safe = redact_request(self.request)
        data["request"] = safe
        data["request_GET_items"] = safe.GET.items()
        data["request_meta"] = _scrub_meta(data["request_meta"], secrets)
        data["filtered_POST_items"] = list(
            _scrub_query_dict(
                _as_query_dict(data["filtered_POST_items"]), secrets
            ).items()
        )
        for key in ("request_insecure_uri", "exception_value"):
            if isinstance(data.get(key), str):
                data[key] = _scrub_text(data[key], secrets)
        return data

    def get_traceback_html(self) -> SafeString:
        """Return the HTML report, with tokens masked."""
        return self._scrub(super().get_traceback_html())

    def get_traceback_text(self) -> SafeString:
        """Return the text report, with tokens masked."""
        return self._scrub(super().get_traceback_text())

    def _scrub(self, report: SafeString) -> SafeString:
        if self.request is None:
            return report
        # Stars in place of URL-safe characters keep escaped HTML safe.
        return mark_safe(_scrub_text(report, _request_secrets(self.request)))


def _as_query_dict(items: Iterable[tuple[str, Any]]) -> MultiValueDict[str, Any]:
    params: MultiValueDict[str, Any] = MultiValueDict()
    for key, value in items:
        params.appendlist(key, value)
    return params


class RedactTokenFilter(logging.Filter):
    """
    Mask tokens in log records: their message, arguments and request.

    Add it to the handlers of your :setting:`LOGGING` configuration. Django
    attaches the request to the records of the ``django.request`` logger (and
    of ``django.security.*`` and ``django.channels`` ones), where formatters
    with ``%(request)s`` and error trackers read it: the filter replaces it
    with a copy made by :func:`redact_request`. It masks the
    :data:`SESAME_TOKEN_NAME` parameter in the message and its string
    arguments, such as the request line that ``runserver`` logs on the
    ``django.server`` logger, and the request's tokens wherever they appear
    in them.

    The record is changed in place, so that every handler after this one sees
    the masked record too; the request itself is left untouched. The
    formatted traceback of an exception isn't changed.

    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask tokens in ``record``; never drop it."""
        request = getattr(record, "request", None)
        secrets: list[str] = []
        if isinstance(request, HttpRequest):
            secrets = _request_secrets(request)
            record.request = redact_request(request)
        if isinstance(record.msg, str):
            record.msg = _scrub_text(record.msg, secrets)
        if isinstance(record.args, Mapping):
            record.args = {
                key: _scrub_arg(value, secrets) for key, value in record.args.items()
            }
        elif isinstance(record.args, tuple):
            record.args = tuple(_scrub_arg(arg, secrets) for arg in record.args)
        # An argument of another type may still show a token once formatted.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A broken format string: logging reports it when formatting.
            return True
        safe = _scrub_text(message, secrets)
        if safe != message:
            record.msg, record.args = safe, ()
        return True


def _scrub_arg(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, bytes):
        return _scrub_bytes(value, secrets)
    if isinstance(value, HttpRequest):
        return redact_request(value)
    return value

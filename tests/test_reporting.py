"""
Tokens stay out of Django's error pages, error emails and request logs.

Each test sends a real token to a view that fails, through each way a token
arrives (query string, POST data, ``Authorization`` header, ``Referer``),
and looks for the token in what Django produces: the debug page, the admin
email, log lines. Each also checks that Django's defaults do leak it, so that
the test can fail.

"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.config
import re
import sys
import unittest
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import django
from django.conf import settings
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.test import (
    Client,
    RequestFactory,
    SimpleTestCase,
    TestCase,
    override_settings,
)
from django.test.client import MULTIPART_CONTENT
from django.urls import path
from django.utils.log import AdminEmailHandler, configure_logging
from django.views import debug

from sesame_db.reporting import (
    SUBSTITUTE,
    RedactTokenFilter,
    SafeExceptionReporterFilter,
    redact_request,
)
from sesame_db.utils import get_token
from tests.mixins import CreateUserMixin

try:
    import rest_framework
except ImportError:  # pragma: no cover
    rest_framework = None

# Django 6.0 takes addresses and deprecates (name, address) pairs.
ADMINS = (
    ["admin@example.com"]
    if django.VERSION >= (6, 0)
    else [("Admin", "admin@example.com")]
)
REPORTER = "sesame_db.reporting.ExceptionReporter"
FILTER = "sesame_db.reporting.SafeExceptionReporterFilter"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def boom(request):
    # Where a view keeps the token, the traceback shows it.
    token = (  # noqa: F841
        request.GET.get("sesame")
        or request.POST.get("sesame")
        or request.headers.get("Authorization")
    )
    raise RuntimeError("boom")


async def aboom(request):
    token = request.GET.get("sesame")  # noqa: F841
    raise RuntimeError("boom")


def forbidden(request):
    raise PermissionDenied


def ok(request):
    return HttpResponse("ok")


urlpatterns = [
    path("boom/", boom),
    path("aboom/", aboom),
    path("forbidden/", forbidden),
    path("ok/", ok),
]

if rest_framework is not None:
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.views import APIView

    from sesame_db.contrib.rest_framework import SesameTokenAuthentication

    class APIBoom(APIView):  # type: ignore[misc]
        authentication_classes = [SesameTokenAuthentication]
        permission_classes = [IsAuthenticated]

        def get(self, request):
            raise RuntimeError("boom")

    urlpatterns.append(path("api/boom/", APIBoom.as_view()))


@contextlib.contextmanager
def reporting(reporter=None, reporter_filter=None):
    """Set the exception reporter and filter; Django caches the filter."""
    overrides = {}
    if reporter is not None:
        overrides["DEFAULT_EXCEPTION_REPORTER"] = reporter
    if reporter_filter is not None:
        overrides["DEFAULT_EXCEPTION_REPORTER_FILTER"] = reporter_filter
    debug.get_default_exception_reporter_filter.cache_clear()  # type: ignore[attr-defined]
    try:
        with override_settings(**overrides):
            yield
    finally:
        debug.get_default_exception_reporter_filter.cache_clear()  # type: ignore[attr-defined]


@contextlib.contextmanager
def handler_on(logger_name, handler):
    """Attach ``handler`` alone to a logger, hiding Django's default handlers."""
    logger = logging.getLogger(logger_name)
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


class LeakMixin(CreateUserMixin):
    def assertLeaks(self, token, text):
        # Short messages: a report is thousands of lines long.
        self.assertTrue(token in text, "the token isn't in the text")

    def assertNoLeak(self, token, text):
        where = text.find(token)
        self.assertEqual(
            where, -1, f"the token leaks: {text[where - 200 : where + 50]!r}"
        )


class TokensMixin(LeakMixin):
    # Each way a request carries a token: the keyword arguments of the test
    # client, for the token.
    WAYS = {
        "query": lambda token: {"path": f"/boom/?sesame={token}&page=2"},
        "post": lambda token: {
            "method": "post",
            "path": "/boom/",
            "data": {"sesame": token, "page": "2"},
        },
        "header": lambda token: {
            "path": "/boom/",
            "headers": {"Authorization": f"Sesame {token}"},
        },
        "referer": lambda token: {
            "path": "/boom/",
            "headers": {"Referer": f"https://testserver/page/?sesame={token}"},
        },
    }

    def tokens(self):
        # A stateless and a stored token; a real token of each format.
        return {
            "stateless": get_token(self.user),
            "stored": get_token(self.user, store=True),
        }

    def cases(self):
        for kind, token in self.tokens().items():
            for way, make in self.WAYS.items():
                yield kind, way, token, make(token)

    def request_500(self, path, method="get", **kwargs):
        client = Client(raise_request_exception=False)
        response = getattr(client, method)(path, **kwargs)
        self.assertEqual(response.status_code, 500)
        return response


@override_settings(ROOT_URLCONF=__name__, DEBUG=True)
class DebugPageTests(TokensMixin, TestCase):
    """The technical 500 page that DEBUG shows."""

    def test_html(self):
        for kind, way, token, request in self.cases():
            with self.subTest(kind=kind, way=way):
                with reporting(REPORTER, FILTER):
                    html = self.request_500(**request).content.decode()
                self.assertNoLeak(token, html)
                self.assertIn(SUBSTITUTE, html)
                self.assertIn("RuntimeError", html)
                # The rest of the request is still there.
                if way in ("query", "post"):
                    self.assertIn("page", html)
                with reporting():
                    html = self.request_500(**request).content.decode()
                self.assertLeaks(token, html)

    def test_text(self):
        for kind, way, token, request in self.cases():
            with self.subTest(kind=kind, way=way):
                request["headers"] = {
                    **request.get("headers", {}),
                    "Accept": "text/plain",
                }
                with reporting(REPORTER, FILTER):
                    response = self.request_500(**request)
                self.assertEqual(response["Content-Type"], "text/plain; charset=utf-8")
                text = response.content.decode()
                self.assertNoLeak(token, text)
                self.assertIn("Request URL: http://testserver/boom/", text)
                with reporting():
                    text = self.request_500(**request).content.decode()
                if way == "header":
                    # Django masks the Authorization header by itself, and
                    # the text report doesn't show local variables.
                    self.assertIn(f"HTTP_AUTHORIZATION = '{SUBSTITUTE}'", text)
                    self.assertNoLeak(token, text)
                else:
                    self.assertLeaks(token, text)

    def test_request_url(self):
        token = get_token(self.user)
        with reporting(REPORTER, FILTER):
            text = self.request_500(
                f"/boom/?sesame={token}&page=2", headers={"Accept": "text/plain"}
            ).content.decode()
        self.assertIn(
            f"Request URL: http://testserver/boom/?sesame={SUBSTITUTE}&page=2", text
        )
        self.assertIn(f"QUERY_STRING = 'sesame={SUBSTITUTE}&page=2'", text)
        self.assertIn(f"sesame = '{SUBSTITUTE}'", text)

    def test_reporter_alone(self):
        # The reporter masks the URL, GET, POST, META, and as a last resort
        # any occurrence of the token, with Django's filter.
        for kind, way, token, request in self.cases():
            with self.subTest(kind=kind, way=way), reporting(REPORTER):
                html = self.request_500(**request).content.decode()
                self.assertNoLeak(token, html)

    def test_filter_alone(self):
        # The filter masks META, POST and the traceback; the URL and GET,
        # which don't go through it, need the reporter.
        token = get_token(self.user)
        with reporting(reporter_filter=FILTER):
            html = self.request_500(f"/boom/?sesame={token}").content.decode()
        # The local variable "token" of the view, and the request.
        self.assertIn(f"<pre>&#x27;{SUBSTITUTE}&#x27;</pre>", html)
        self.assertIn(
            f"<pre>&lt;WSGIRequest: GET &#x27;/boom/?sesame={SUBSTITUTE}&#x27;&gt;</pre>",
            html,
        )
        self.assertIn(f"<pre>&#x27;sesame={SUBSTITUTE}&#x27;</pre>", html)
        # The URL, twice, and the GET table.
        self.assertEqual(html.count(token), 3)
        self.assertIn(f"<td>http://testserver/boom/?sesame={token}</td>", html)

    def test_async_view(self):
        token = get_token(self.user)

        async def request():
            from django.test import AsyncClient

            client = AsyncClient(raise_request_exception=False)
            return await client.get(f"/aboom/?sesame={token}")

        from asgiref.sync import async_to_sync

        with reporting(REPORTER, FILTER):
            response = async_to_sync(request)()
        self.assertEqual(response.status_code, 500)
        self.assertNoLeak(token, response.content.decode())
        with reporting():
            response = async_to_sync(request)()
        self.assertLeaks(token, response.content.decode())

    @override_settings(SESAME_TOKEN_NAME="link")
    def test_token_name(self):
        token = get_token(self.user)
        with reporting(REPORTER, FILTER):
            html = self.request_500(f"/boom/?link={token}").content.decode()
        self.assertNoLeak(token, html)

    def test_short_values(self):
        # A value too short to be replaced in free text is still masked where
        # it is the token parameter.
        with reporting(REPORTER, FILTER):
            text = self.request_500(
                "/boom/?sesame=abc", headers={"Accept": "text/plain"}
            ).content.decode()
        self.assertNotIn("sesame=abc", text)
        self.assertNotIn("'abc'", text)

    @unittest.skipIf(rest_framework is None, "requires Django REST framework")
    def test_rest_framework(self):
        for kind, token in self.tokens().items():
            for headers, url in [
                ({"Authorization": f"Sesame {token}"}, "/api/boom/"),
                ({}, f"/api/boom/?sesame={token}"),
            ]:
                with self.subTest(kind=kind, url=url):
                    with reporting(REPORTER, FILTER):
                        html = self.request_500(url, headers=headers).content.decode()
                    self.assertNoLeak(token, html)
                    # The view ran: the token authenticated the request.
                    self.assertIn("APIBoom", html)
                    if not headers:
                        # Django masks the Authorization header by itself.
                        with reporting():
                            html = self.request_500(
                                url, headers=headers
                            ).content.decode()
                        self.assertLeaks(token, html)


@override_settings(
    ROOT_URLCONF=__name__,
    DEBUG=False,
    ADMINS=ADMINS,
)
class AdminEmailTests(TokensMixin, TestCase):
    """The emails of AdminEmailHandler, with its text and HTML reports."""

    def emails(self, request, *, safe):
        mail.outbox = []
        with reporting(*((REPORTER, FILTER) if safe else ())):
            # The handler reads DEFAULT_EXCEPTION_REPORTER when it's created.
            handler = AdminEmailHandler(include_html=True)
            handler.setLevel(logging.ERROR)
            with handler_on("django.request", handler):
                self.request_500(**request)
        self.assertEqual(len(mail.outbox), 1)
        (email,) = mail.outbox
        assert isinstance(email, mail.EmailMultiAlternatives)
        return email

    def test_email(self):
        for kind, way, token, request in self.cases():
            with self.subTest(kind=kind, way=way):
                email = self.emails(request, safe=True)
                (html, _), *_ = email.alternatives
                self.assertIn("RuntimeError", email.body)
                for part in (email.subject, email.body, html):
                    self.assertNoLeak(token, part)
                email = self.emails(request, safe=False)
                self.assertLeaks(token, email.body + email.alternatives[0][0])

    def test_email_with_redacting_filter(self):
        # The logging filter hands the handler a masked copy of the request,
        # which Django's reporter then shows.
        token = get_token(self.user)
        mail.outbox = []
        with reporting():
            handler = AdminEmailHandler(include_html=True)
            handler.setLevel(logging.ERROR)
            handler.addFilter(RedactTokenFilter())
            with handler_on("django.request", handler):
                self.request_500(f"/boom/?sesame={token}")
        (email,) = mail.outbox
        assert isinstance(email, mail.EmailMultiAlternatives)
        self.assertIn(f"sesame = '{SUBSTITUTE}'", email.body)
        self.assertIn(f"http://testserver/boom/?sesame={SUBSTITUTE}", email.body)
        self.assertNoLeak(token, email.body)
        # The local variables of the traceback, in the HTML report, still
        # hold the token: only the reporter's settings mask those.
        self.assertLeaks(token, email.alternatives[0][0])


FORMAT = "%(levelname)s %(message)s request=%(request)s %(request)r args=%(args)s"


@override_settings(ROOT_URLCONF=__name__)
class LogTests(TokensMixin, TestCase):
    """Log lines of a formatter that shows the request and the arguments."""

    def log(self, request, *, redact, logger="django.request", status=500):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(FORMAT))
        if redact:
            handler.addFilter(RedactTokenFilter())
        with handler_on(logger, handler):
            client = Client(raise_request_exception=False)
            method = request.pop("method", "get")
            response = getattr(client, method)(**request)
        self.assertEqual(response.status_code, status)
        return stream.getvalue()

    def test_request_logger(self):
        for kind, way, token, request in self.cases():
            with self.subTest(kind=kind, way=way):
                output = self.log(dict(request), redact=True)
                self.assertIn("ERROR Internal Server Error: /boom/", output)
                self.assertNoLeak(token, output)
                if way == "query":
                    self.assertIn(
                        f"<WSGIRequest: GET '/boom/?sesame={SUBSTITUTE}&page=2'>",
                        output,
                    )
                    output = self.log(dict(request), redact=False)
                    self.assertLeaks(token, output)

    def test_forbidden(self):
        # Django logs 4xx responses with the path, without the query string:
        # only the request attached to the record carries the token.
        token = get_token(self.user)
        request = {"path": f"/forbidden/?sesame={token}"}
        output = self.log(dict(request), redact=False, status=403)
        line = output.splitlines()[0]
        message = line.split(" request=")[0]
        self.assertEqual(message, "WARNING Forbidden (Permission denied): /forbidden/")
        self.assertLeaks(token, line)
        output = self.log(dict(request), redact=True, status=403)
        self.assertNoLeak(token, output)
        self.assertIn("WARNING Forbidden (Permission denied): /forbidden/", output)

    def test_message_and_args(self):
        # A request line as runserver logs it on django.server, and the
        # request itself as an argument.
        token = get_token(self.user)
        request = RequestFactory().get(f"/page/?sesame={token}")
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(RedactTokenFilter())
        with handler_on("django.server", handler):
            logger = logging.getLogger("django.server")
            logger.info('"%s" %s %s', f"GET /page/?sesame={token} HTTP/1.1", 200, 2)
            logger.info("%(line)s", {"line": f"/page/?x=1&sesame={token}"})
            logger.info("Request %r", request, extra={"request": request})
            logger.info(f"Formatted /page/?sesame={token}")
        output = stream.getvalue()
        self.assertNoLeak(token, output)
        self.assertEqual(
            output.splitlines(),
            [
                f'"GET /page/?sesame={SUBSTITUTE} HTTP/1.1" 200 2',
                f"/page/?x=1&sesame={SUBSTITUTE}",
                f"Request <WSGIRequest: GET '/page/?sesame={SUBSTITUTE}'>",
                f"Formatted /page/?sesame={SUBSTITUTE}",
            ],
        )

    def test_other_args_unchanged(self):
        record = logging.LogRecord(
            "x", logging.INFO, __file__, 1, "%d %s %r", (1, "a", None), None
        )
        self.assertTrue(RedactTokenFilter().filter(record))
        self.assertEqual(record.getMessage(), "1 a None")
        self.assertEqual(record.args, (1, "a", None))


class RedactRequestTests(LeakMixin, TestCase):
    def test_copy(self):
        token = get_token(self.user)
        request = RequestFactory().get(
            f"/page/?sesame={token}&page=2",
            headers={"Authorization": f"Sesame {token}"},
        )
        safe = redact_request(request)
        self.assertEqual(safe.GET.getlist("sesame"), [SUBSTITUTE])
        self.assertEqual(safe.GET["page"], "2")
        self.assertFalse(safe.GET._mutable)
        self.assertEqual(safe.get_full_path(), f"/page/?sesame={SUBSTITUTE}&page=2")
        self.assertEqual(
            safe.build_absolute_uri(),
            f"http://testserver/page/?sesame={SUBSTITUTE}&page=2",
        )
        self.assertEqual(safe.META["HTTP_AUTHORIZATION"], f"Sesame {SUBSTITUTE}")
        self.assertEqual(safe.headers["Authorization"], f"Sesame {SUBSTITUTE}")
        self.assertNoLeak(token, repr(safe))
        # The request is untouched.
        self.assertEqual(request.GET["sesame"], token)
        self.assertEqual(request.get_full_path(), f"/page/?sesame={token}&page=2")
        self.assertEqual(request.META["HTTP_AUTHORIZATION"], f"Sesame {token}")

    def test_body_is_not_read(self):
        token = get_token(self.user)
        for content_type in (MULTIPART_CONTENT, "application/x-www-form-urlencoded"):
            with self.subTest(content_type=content_type):
                fields = {"sesame": token, "page": "2"}
                data = (
                    fields if content_type == MULTIPART_CONTENT else urlencode(fields)
                )
                request = RequestFactory().post(
                    "/page/", data, content_type=content_type
                )
                safe = redact_request(request)
                self.assertEqual(dict(safe.POST), {})
                # The view can still read its body.
                self.assertEqual(request.POST["sesame"], token)
                safe = redact_request(request)
                self.assertEqual(safe.POST["sesame"], SUBSTITUTE)
                self.assertEqual(safe.POST["page"], "2")
                if content_type != MULTIPART_CONTENT:
                    # The body was read to parse POST.
                    self.assertNoLeak(token, safe.body.decode())
                    self.assertLeaks(token, request.body.decode())

    def test_asgi_scope(self):
        from django.core.handlers.asgi import ASGIRequest

        token = get_token(self.user)
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/page/",
            "query_string": f"sesame={token}".encode(),
            "headers": [(b"authorization", f"Sesame {token}".encode())],
        }
        request = ASGIRequest(scope, io.BytesIO())
        safe = redact_request(request)
        self.assertNoLeak(token, repr(safe))
        self.assertNoLeak(token, repr(safe.scope))  # type: ignore[attr-defined]
        self.assertLeaks(token, repr(request.scope))

    def test_filter_without_request(self):
        # Reports without a request, e.g. from a management command.
        reporter_filter = SafeExceptionReporterFilter()
        self.assertEqual(reporter_filter.get_safe_request_meta(None), {})
        self.assertEqual(reporter_filter.get_post_parameters(None), {})
        self.assertEqual(reporter_filter.cleanse_special_types(None, "x"), "x")


class SettingsSnippetTests(LeakMixin, TestCase):
    """The settings of docs/security.rst work as they are."""

    def snippet(self):
        text = (DOCS / "security.rst").read_text()
        heading = "\nKeeping tokens out of error reports\n"
        section = text[text.index(heading) :]
        match = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
        assert match is not None
        code = "\n".join(line[4:] for line in match[1].splitlines())
        namespace: dict[str, Any] = {}
        exec(code, namespace)
        return namespace

    def test_snippet(self):
        namespace = self.snippet()
        self.assertEqual(namespace["DEFAULT_EXCEPTION_REPORTER"], REPORTER)
        self.assertEqual(namespace["DEFAULT_EXCEPTION_REPORTER_FILTER"], FILTER)
        token = get_token(self.user)
        stderr = io.StringIO()
        self.addCleanup(configure_logging, settings.LOGGING_CONFIG, settings.LOGGING)
        with contextlib.redirect_stderr(stderr), override_settings(DEBUG=True):
            # StreamHandler binds sys.stderr when it's created.
            logging.config.dictConfig(namespace["LOGGING"])
            request = RequestFactory().get(f"/page/?sesame={token}")
            logging.getLogger("django.server").info(
                '"%s" %s %s',
                f"GET /page/?sesame={token} HTTP/1.1",
                200,
                2,
                extra={"request": request},
            )
            logging.getLogger("django.request").warning(
                "Forbidden: %s", "/page/", extra={"request": request}
            )
        output = stderr.getvalue()
        self.assertIn(f"GET /page/?sesame={SUBSTITUTE} HTTP/1.1", output)
        self.assertIn("Forbidden: /page/", output)
        self.assertNoLeak(token, output)


class ImportTests(SimpleTestCase):
    def test_import_without_app(self):
        # The module works without sesame_db in INSTALLED_APPS.
        import subprocess

        code = (
            "import django; from django.conf import settings; "
            "settings.configure(INSTALLED_APPS=[], SECRET_KEY='x'); django.setup(); "
            "from django.test import RequestFactory; "
            "from sesame_db.reporting import redact_request; "
            "r = redact_request(RequestFactory().get('/?sesame=abcdefghij')); "
            "assert 'abcdefghij' not in repr(r), repr(r)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)

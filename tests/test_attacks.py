"""
The same attacks, through every entry point: docs/security.rst, "Attacks, entry point by entry point".

Each test runs a table of attacks against the decorator (sync and async),
``LoginView``, ``TokenAuthenticationMixin``, Django REST framework and the
middleware, with and without the middleware in front of the others. Each
row first shows that the attack fails, then that the honest path through the
same entry point works, so that a row can't pass by testing nothing.

"""

from __future__ import annotations

import html
import io
import re
from urllib.parse import urljoin, urlsplit

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY
from django.test import Client, TestCase, override_settings
from django.utils.http import url_has_allowed_host_and_scheme

from sesame_db.models import TokenEvent
from sesame_db.utils import get_token, issue_token

from .mixins import CreateUserMixin, tamper

SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESAME = "sesame_db.middleware.AuthenticationMiddleware"
# No CsrfViewMiddleware: the entry points must check CSRF themselves.
WITHOUT_MIDDLEWARE = [SESSION, AUTH]
WITH_MIDDLEWARE = [SESSION, AUTH, SESAME]

VIEWS = ["decorator", "adecorator", "login", "mixin", "drf"]

# What a mail scanner, a link preview or a cross-site page can send.
SCANNER_METHODS = ["HEAD", "GET", "OPTIONS", "TRACE"]


def entry_points(variant):
    """Yield (name, middleware, URL) for the entry points of ``variant``."""
    for view in VIEWS:
        for middleware in [WITHOUT_MIDDLEWARE, WITH_MIDDLEWARE]:
            name = f"{variant}/{view}" + (
                " behind the middleware" * (middleware is WITH_MIDDLEWARE)
            )
            yield name, middleware, f"/{variant}/{view}/"
    if variant == "default":
        # A view that doesn't check tokens: only the middleware does.
        yield "middleware", WITH_MIDDLEWARE, "/plain/"


def confirmation_form(response):
    """Return the action and the CSRF token of a confirmation page."""
    content = response.content.decode()
    action = re.search(r'<form method="post" action="([^"]*)"', content)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]*)"', content)
    assert action is not None and csrf is not None, content
    return html.unescape(action.group(1)), csrf.group(1)


@override_settings(ROOT_URLCONF="tests.attack_urls")
class ScannerSafetyTests(CreateUserMixin, TestCase):
    """Links that need confirmation are used only by a POST that passes the CSRF check."""

    def issue(self):
        token, record = issue_token(self.user, max_uses=1)
        return token, record

    def assertUnused(self, record, client):
        record.refresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertIsNone(client.session.get(SESSION_KEY))

    def assertUsed(self, record):
        record.refresh_from_db()
        self.assertEqual(record.use_count, 1)

    def check_entry_points(self, variant):
        for name, middleware, url in entry_points(variant):
            with self.subTest(entry_point=name), self.settings(MIDDLEWARE=middleware):
                self.check_scanners(name, url)
                self.check_cross_site_post(name, url)
                self.check_confirmation(name, url)

    def check_scanners(self, name, url):
        for method in SCANNER_METHODS:
            with self.subTest(method=method):
                token, record = self.issue()
                client = Client(enforce_csrf_checks=True)
                response = client.generic(method, f"{url}?sesame={token}")
                self.assertLess(response.status_code, 500)
                self.assertUnused(record, client)
                if "drf" in name:
                    self.assertEqual(response.status_code, 401)
                elif method == "GET":
                    self.assertContains(response, '<form method="post"')
                    self.assertEqual(response["Referrer-Policy"], "strict-origin")

    def check_cross_site_post(self, name, url):
        if "drf" in name:
            # No session: a token in a cross-site request authenticates that
            # request only, as its holder, who could send it themselves.
            return
        token, record = self.issue()
        client = Client(enforce_csrf_checks=True)
        # The victim's browser has the CSRF cookie, but the attacking page
        # can't read it to put it in the form.
        client.get(f"{url}?sesame={token}")
        response = client.post(
            f"{url}?sesame={token}", HTTP_ORIGIN="https://evil.example"
        )
        self.assertEqual(response.status_code, 403)
        self.assertUnused(record, client)

    def check_confirmation(self, name, url):
        # The honest path: the page's form, posted with its CSRF token.
        token, record = self.issue()
        client = Client(enforce_csrf_checks=True)
        if "drf" in name:
            response = client.post(f"{url}?sesame={token}")
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.json(), "john POST")
            self.assertUsed(record)
            return
        action, csrf = confirmation_form(client.get(f"{url}?sesame={token}"))
        self.assertEqual(action, f"{url}?sesame={token}")
        response = client.post(action, {"csrfmiddlewaretoken": csrf})
        self.assertUsed(record)
        if "login" in name:
            self.assertRedirects(response, "/done/", fetch_redirect_response=False)
            self.assertEqual(client.session[SESSION_KEY], str(self.user.pk))
        elif name == "middleware":
            self.assertRedirects(
                response, url, status_code=303, fetch_redirect_response=False
            )
            self.assertEqual(client.session[SESSION_KEY], str(self.user.pk))
            self.assertEqual(client.get(url).content, b"john GET")
        else:
            self.assertEqual(response.content, b"john POST")

    @override_settings(SESAME_CONFIRM=True)
    def test_confirm_setting(self):
        self.check_entry_points("default")

    @override_settings(SESAME_CONFIRM=False)
    def test_confirm_option(self):
        self.check_entry_points("explicit")

    @override_settings(SESAME_CONFIRM=False, MIDDLEWARE=WITH_MIDDLEWARE)
    def test_middleware_without_confirmation_uses_links_on_get(self):
        # What confirmation prevents: the middleware uses the link at once.
        token, record = self.issue()
        response = self.client.get(f"/plain/?sesame={token}")
        self.assertRedirects(response, "/plain/", fetch_redirect_response=False)
        self.assertUsed(record)


# Paths as a server hands them to Django, percent-decoded; gunicorn doesn't
# collapse leading slashes, unlike runserver and Django's test client.
HOSTILE_PATHS = [
    "//evil.example/",
    "///evil.example/",
    "//evil.example//..",
    "//evil.example",
    "/\\evil.example/",
    "/\\/evil.example/",
    "/\t/evil.example/",
    "/%2F/evil.example/",
    "/./evil.example/",
]


@override_settings(ROOT_URLCONF="tests.attack_urls", MIDDLEWARE=WITH_MIDDLEWARE)
class OpenRedirectTests(CreateUserMixin, TestCase):
    """No URL built from the request's path leaves the site."""

    def assertStaysOnSite(self, url, path):
        self.assertTrue(
            url_has_allowed_host_and_scheme(url, allowed_hosts={"testserver"}), url
        )
        # What browsers do: backslashes are slashes; tabs and newlines vanish.
        browser = re.sub(r"[\t\r\n]", "", url).replace("\\", "/")
        self.assertFalse(browser.startswith("//"), url)
        self.assertEqual(
            urlsplit(urljoin("https://testserver/a/b", browser)).netloc, "testserver"
        )
        # And it's still the same resource: Django decodes it back to path.
        self.assertEqual(
            urlsplit(url)
            .path.replace("%2F", "/")
            .replace("%5C", "\\")
            .replace("%09", "\t")
            .replace("%25", "%"),
            path,
        )

    def request(self, client, method, path, token, data=b""):
        return client.request(
            REQUEST_METHOD=method,
            PATH_INFO=path,
            QUERY_STRING=f"a=1&sesame={token}",
            **(
                {
                    "CONTENT_TYPE": "application/x-www-form-urlencoded",
                    "CONTENT_LENGTH": str(len(data)),
                    "wsgi.input": io.BytesIO(data),
                }
                if data
                else {}
            ),
        )

    @override_settings(SESAME_CONFIRM=False)
    def test_redirect_after_login(self):
        for path in HOSTILE_PATHS:
            with self.subTest(path=path):
                client = Client()
                response = self.request(client, "GET", path, get_token(self.user))
                self.assertEqual(response.status_code, 302)
                self.assertStaysOnSite(response["Location"], path)
                self.assertTrue(response["Location"].endswith("?a=1"))
                self.assertEqual(client.session[SESSION_KEY], str(self.user.pk))

    @override_settings(SESAME_CONFIRM=True)
    def test_confirmation_page_and_redirect(self):
        for path in HOSTILE_PATHS:
            with self.subTest(path=path):
                client = Client(enforce_csrf_checks=True)
                token = get_token(self.user)
                response = self.request(client, "GET", path, token)
                action, csrf = confirmation_form(response)
                self.assertStaysOnSite(action, path)
                response = self.request(
                    client,
                    "POST",
                    path,
                    token,
                    data=f"csrfmiddlewaretoken={csrf}".encode(),
                )
                self.assertEqual(response.status_code, 303)
                self.assertStaysOnSite(response["Location"], path)
                self.assertEqual(client.session[SESSION_KEY], str(self.user.pk))

    @override_settings(SESAME_CONFIRM=False)
    async def test_redirect_after_login_async(self):
        for path in HOSTILE_PATHS:
            with self.subTest(path=path):
                token = await sync_to_async(get_token)(self.user)
                response = await self.async_client.request(
                    method="GET",
                    path=path,
                    query_string=f"a=1&sesame={token}",
                )
                self.assertEqual(response.status_code, 302)
                self.assertStaysOnSite(response["Location"], path)


class ChannelsScannerTests(CreateUserMixin, TestCase):
    """A scanner speaks HTTP: SesameAuthMiddleware only reads WebSocket handshakes."""

    async def test_http_request_does_not_use_link(self):
        from channels.testing import HttpCommunicator

        from sesame_db.contrib.channels import SesameAuthMiddleware

        seen = []

        async def app(scope, receive, send):
            seen.append(scope.get("user"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        token, record = await sync_to_async(issue_token)(self.user, max_uses=1)
        for method in SCANNER_METHODS:
            with self.subTest(method=method):
                communicator = HttpCommunicator(
                    SesameAuthMiddleware(app), method, f"/ws/?sesame={token}"
                )
                response = await communicator.get_response()
                self.assertEqual(response["status"], 200)
        await record.arefresh_from_db()
        self.assertEqual(record.use_count, 0)
        self.assertEqual(seen, [None] * len(SCANNER_METHODS))


# Entry points without confirmation, and what each answers to a bad token.
REFUSALS = {
    "/default/decorator/": 403,
    "/default/adecorator/": 403,
    "/default/login/": 403,
    "/default/mixin/": 403,
    "/default/permanent/": 403,
    "/default/drf/": 401,
    # The middleware ignores a bad token: the view runs anonymously.
    "/plain/": 200,
}


def bad_tokens(user):
    stored, _ = issue_token(user)
    stateless = get_token(user)
    return {
        "forged stored": tamper(stored),
        "truncated stored": stored[:-3],
        "forged stateless": tamper(stateless),
        "truncated stateless": stateless[:-3],
        "oversized": "~" + "A" * 10_000,
        "non-ASCII": "~" + "é" * 36,
        "NUL": stored[:10] + "\x00" + stored[11:],
        "empty": "",
    }


@override_settings(
    ROOT_URLCONF="tests.attack_urls",
    MIDDLEWARE=WITH_MIDDLEWARE,
    SESAME_CONFIRM=False,
)
class BadTokenTests(CreateUserMixin, TestCase):
    """Bad tokens are refused by every entry point: never a 500, never a user."""

    def assertRefused(self, response, url):
        self.assertEqual(response.status_code, REFUSALS[url])
        if response.status_code == 200:
            self.assertEqual(response.content, b"anonymous GET")
        # Not self.client.session, which would create a session.
        self.assertIsNone(response.wsgi_request.session.get(SESSION_KEY))

    def test_malformed_and_forged(self):
        for name, token in bad_tokens(self.user).items():
            for url in REFUSALS:
                with self.subTest(token=name, url=url):
                    # The MAC of a stored token is checked before any query;
                    # a stateless token's covers the user's password hash,
                    # so the user is loaded first, as in django-sesame.
                    queries = 1 if name == "forged stateless" else 0
                    with self.assertNumQueries(queries):
                        response = self.client.get(url, {"sesame": token})
                    self.assertRefused(response, url)

    def test_replay_of_used_and_revoked_links(self):
        for url in REFUSALS:
            with self.subTest(url=url):
                used, used_record = issue_token(self.user, max_uses=1)
                revoked, revoked_record = issue_token(self.user)
                revoked_record.revoke()
                self.client.get(url, {"sesame": used})
                self.client.logout()
                used_record.refresh_from_db()
                self.assertEqual(used_record.use_count, 1)
                for token, record, reason in [
                    (used, used_record, "used_up"),
                    (revoked, revoked_record, "revoked"),
                ]:
                    self.assertRefused(self.client.get(url, {"sesame": token}), url)
                    self.assertTrue(
                        TokenEvent.objects.filter(
                            token=record, kind="rejected", reason=reason
                        ).exists()
                    )
                used_record.refresh_from_db()
                self.assertEqual(used_record.use_count, 1)

    def test_session_key_rotates_at_login(self):
        # Session fixation: a session planted before login isn't the
        # session of the logged-in user.
        for url in ["/default/login/", "/default/permanent/", "/plain/"]:
            with self.subTest(url=url):
                self.client.logout()
                session = self.client.session
                session["planted"] = True
                session.save()
                planted = session.session_key
                # The client sends the planted session's cookie.
                self.assertEqual(self.client.cookies["sessionid"].value, planted)
                self.client.get(url, {"sesame": get_token(self.user)})
                self.assertEqual(self.client.session[SESSION_KEY], str(self.user.pk))
                self.assertNotEqual(self.client.session.session_key, planted)


@override_settings(
    ROOT_URLCONF="tests.attack_urls",
    MIDDLEWARE=WITH_MIDDLEWARE,
    SESAME_CONFIRM=False,
)
class MiddlewareInFrontTests(CreateUserMixin, TestCase):
    """The middleware leaves a token to the view that checks it: one use, by the view."""

    def test_view_uses_the_token_once(self):
        answers = {
            "/default/decorator/": (200, b"john GET"),
            "/default/adecorator/": (200, b"john GET"),
            "/default/mixin/": (200, b"john GET"),
            "/default/permanent/": (200, b"john GET"),
            "/default/drf/": (200, b'"john GET"'),
            # LoginView's redirect, not the middleware's.
            "/default/login/": (302, b""),
        }
        for url, (status, content) in answers.items():
            with self.subTest(url=url):
                token, record = issue_token(self.user, max_uses=2)
                response = self.client.get(url, {"sesame": token})
                self.assertEqual(response.status_code, status)
                self.assertEqual(response.content, content)
                if status == 302:
                    self.assertEqual(response["Location"], "/done/")
                record.refresh_from_db()
                self.assertEqual(record.use_count, 1)

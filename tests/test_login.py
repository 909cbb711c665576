"""
Login by email, through Django's test client and mail outbox: sesame_db.urls.

Each path of the flow: the request of a link, the email, the link's
confirmation and use, the binding to the browser, the code, throttling,
enumeration, sign-up. Walked against docs/security.rst's threat list.

"""

from __future__ import annotations

import datetime
import re
import socket
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

import django
import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core import mail, signing
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import (
    Client,
    TestCase,
    TransactionTestCase,
    modify_settings,
    override_settings,
)
from django.urls import reverse

from sesame_db import utils
from sesame_db.exceptions import Reason
from sesame_db.login import browser, flow
from sesame_db.models import IssuedToken, TokenEvent

from .mixins import CreateUserMixin
from .redis import Unavailable, cache_settings, start_server

REQUEST = "/auth/login/request/"
LOGIN = "/auth/login/"
CODE = "/auth/login/code/"

link_re = re.compile(r"(http://testserver/auth/login/\?\S+)")
code_re = re.compile(r"code in the browser where you asked for the link: (\d+)")

sent_to_hook: list[dict[str, str]] = []


def send_to_hook(**kwargs):
    sent_to_hook.append(kwargs)


def create_account(*, email, request):
    User = get_user_model()
    return User.objects.create_user(email.split("@")[0], email=email)


class LoginTestCase(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        cache.clear()
        self.addCleanup(cache.clear)
        self.client = Client(enforce_csrf_checks=False)

    def request_link(self, email="john@example.com", client=None, **data):
        client = client or self.client
        headers = {
            k: data.pop(k) for k in list(data) if k.startswith("HTTP_") or k == "secure"
        }
        with self.captureOnCommitCallbacks(execute=True):
            response = client.post(REQUEST, {"email": email, **data}, **headers)
        return response

    def last_email(self):
        message = mail.outbox[-1]
        body = str(message.body)
        [link] = link_re.findall(body)
        match = code_re.search(body)
        return (
            message,
            link.replace("http://testserver", ""),
            (match.group(1) if match else None),
        )

    def record(self):
        return IssuedToken.objects.filter(scope=flow.SCOPE).latest("created")

    def assertLoggedIn(self, client, user=None):
        self.assertEqual(
            str(client.session.get(SESSION_KEY)), str((user or self.user).pk)
        )

    def assertNotLoggedIn(self, client):
        self.assertNotIn(SESSION_KEY, client.session)

    def events(self, record=None, **kwargs):
        events = TokenEvent.objects.filter(scope=flow.SCOPE, **kwargs)
        if record is not None:
            events = events.filter(token=record)
        return list(events.order_by("pk").values_list("kind", "reason", "detail"))


class RequestTests(LoginTestCase):
    def test_form(self):
        response = self.client.get(REQUEST)
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/login/request.html")
        self.assertContains(response, 'name="email"')
        self.assertContains(response, "csrfmiddlewaretoken")
        self.assertEqual(reverse("sesame_db:login-request"), REQUEST)
        self.assertEqual(reverse("sesame_db:login"), LOGIN)
        self.assertEqual(reverse("sesame_db:login-code"), CODE)

    def test_known_address_gets_a_link(self):
        response = self.request_link()
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/login/sent.html")
        self.assertEqual(len(mail.outbox), 1)
        message, link, code = self.last_email()
        self.assertEqual(message.to, ["john@example.com"])
        self.assertEqual(message.subject, "Your login link")
        [(html, mimetype)] = message.alternatives
        self.assertEqual(mimetype, "text/html")
        self.assertIn(link.replace("&", "&amp;"), html)
        self.assertIn(code, html)
        self.assertEqual(len(code), 6)
        record = self.record()
        self.assertEqual(record.user, self.user)
        self.assertEqual(record.max_uses, 1)
        self.assertAlmostEqual(
            (record.expires_at - record.created).total_seconds(), 600, delta=1
        )
        self.assertEqual(
            self.events(record),
            [("issued", "", flow.LABEL), ("issued", "", "login: email sent")],
        )
        cookie = response.cookies[browser.COOKIE_NAME]
        self.assertTrue(cookie["httponly"])
        self.assertEqual(cookie["samesite"], "Lax")
        self.assertEqual(cookie["max-age"], 600)

    def test_cookie_is_secure_like_the_session_cookie(self):
        # Behind a proxy that terminates TLS without SECURE_PROXY_SSL_HEADER,
        # requests look like HTTP; SESSION_COOKIE_SECURE says the site isn't.
        response = self.request_link()
        self.assertFalse(response.cookies[browser.COOKIE_NAME]["secure"])
        with override_settings(SESSION_COOKIE_SECURE=True):
            response = self.request_link(client=Client())
        self.assertTrue(response.cookies[browser.COOKIE_NAME]["secure"])
        response = self.request_link(client=Client(), secure=True)
        self.assertTrue(response.cookies[browser.COOKIE_NAME]["secure"])

    def test_address_ignores_case(self):
        self.request_link("John@EXAMPLE.com")
        # Sent to the stored address, as Django's password reset does.
        self.assertEqual(mail.outbox[0].to, ["john@example.com"])
        self.assertEqual(self.record().user, self.user)

    def test_email_is_sent_after_commit(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            self.client.post(REQUEST, {"email": "john@example.com"})
        self.assertEqual(mail.outbox, [])
        for callback in callbacks:
            callback()
        self.assertEqual(len(mail.outbox), 1)

    def test_failed_sending_answers_the_same(self):
        with (
            override_settings(SESAME_LOGIN_SEND_EMAIL="tests.test_login.no_such"),
            self.assertLogs("sesame_db", "ERROR"),
        ):
            response = self.request_link()
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/login/sent.html")

    def test_no_email_server_is_explained_in_the_log(self):
        # A new project sends with SMTP on localhost:25; here, a port where
        # nothing listens.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        smtp = "django.core.mail.backends.smtp.EmailBackend"
        if django.VERSION >= (6, 1):
            email_settings = override_settings(
                MAILERS={
                    "default": {
                        "BACKEND": smtp,
                        "OPTIONS": {"host": "127.0.0.1", "port": port},
                    }
                }
            )
        else:
            email_settings = override_settings(
                EMAIL_BACKEND=smtp, EMAIL_HOST="127.0.0.1", EMAIL_PORT=port
            )
        with email_settings, self.assertLogs("sesame_db", "ERROR") as logs:
            response = self.request_link()
        self.assertEqual(response.status_code, 200)
        self.assertIn("the email couldn't be sent", logs.output[0])
        self.assertIn("MAILERS", logs.output[0])
        self.assertIn("ConnectionRefusedError", logs.output[0])
        self.assertNotIn("sesame=", "\n".join(logs.output))
        self.assertEqual(self.events(detail="login: email sent"), [])

    def test_lookalike_address_gets_no_link(self):
        # CVE-2019-19844 in Django's password reset: "ı".upper() == "I", so
        # a case-insensitive lookup may match jim@gmail.com for an address
        # that someone else owns. The link goes to the stored address only,
        # and only for the same address up to case.
        jim = self.create_user("jim", email="jim@gmail.com")
        self.assertTrue(
            get_user_model().objects.filter(email__iexact="jim@gmaıl.com").exists()
            or connection.vendor != "postgresql"
        )
        for typed in ["jim@gmaıl.com", "JIM@GMAıL.COM"]:
            with self.subTest(typed=typed):
                response = self.request_link(typed, client=Client())
                self.assertEqual(response.status_code, 200)
        self.assertEqual([m.to for m in mail.outbox], [])
        self.assertFalse(IssuedToken.objects.filter(user=jim).exists())
        # The same address in other case gets the link, sent where stored.
        self.request_link("JIM@gmail.COM", client=Client())
        self.assertEqual([m.to for m in mail.outbox], [["jim@gmail.com"]])

    def test_invalid_address(self):
        response = self.client.post(REQUEST, {"email": "not an address"})
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/login/request.html")
        self.assertContains(response, "Enter a valid email address.")
        self.assertEqual(mail.outbox, [])


class EnumerationTests(LoginTestCase):
    """The same answer for known, unknown and inactive addresses."""

    def answer(self, email):
        client = Client()
        response = self.request_link(email, client=client)
        body = response.content.decode().replace(email, "ADDRESS")
        body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", body)
        return (
            response.status_code,
            [t.name for t in response.templates],
            sorted(response.cookies),
            sorted(k for k in response.headers if k.lower() != "content-length"),
            body,
        )

    def test_unknown_and_inactive_addresses_answer_alike(self):
        self.create_user("inactive", email="inactive@example.com", is_active=False)
        known = self.answer("john@example.com")
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(self.answer("nobody@example.com"), known)
        self.assertEqual(self.answer("inactive@example.com"), known)
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(IssuedToken.objects.count(), 1)

    def test_cookie_says_nothing_about_the_address(self):
        known = self.request_link("john@example.com", client=Client())
        unknown = self.request_link("nobody@example.com", client=Client())
        self.assertEqual(
            len(known.cookies[browser.COOKIE_NAME].value),
            len(unknown.cookies[browser.COOKIE_NAME].value),
        )

    def test_two_accounts_with_one_address_get_nothing(self):
        self.create_user("twin", email="john@example.com")
        response = self.request_link()
        self.assertEqual(response.status_code, 200)
        self.assertEqual(mail.outbox, [])

    def code_page_answers(self, email, wrong):
        client = Client()
        self.request_link(email, client=client)
        self.assertNotIn(wrong, [self.last_email()[2] for _ in mail.outbox[-1:]])
        answers = []
        for _ in range(flow.WRONG_CODES + 1):
            response = client.post(CODE, {"code": wrong})
            body = response.content.decode()
            body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", body)
            answers.append((response.status_code, body.replace(wrong, "CODE")))
        return answers

    def test_code_page_answers_alike(self):
        # Someone who asks for a link to an address in their own browser,
        # then types codes: the page mustn't tell whether a link was sent.
        self.create_user("inactive", email="inactive@example.com", is_active=False)
        known = self.code_page_answers("john@example.com", "000000")
        self.assertEqual(len(mail.outbox), 1)
        unknown = self.code_page_answers("nobody@example.com", "000000")
        inactive = self.code_page_answers("inactive@example.com", "000000")
        self.assertIn("This code is wrong", known[0][1])
        self.assertIn("No code works in this browser now", known[-1][1])
        self.assertEqual(unknown, known)
        self.assertEqual(inactive, known)
        # Audited alike, five wrong codes each; the decoys' with no link.
        wrong_codes = TokenEvent.objects.filter(detail="login: wrong code")
        self.assertEqual(wrong_codes.filter(token__isnull=False).count(), 5)
        self.assertEqual(wrong_codes.filter(token__isnull=True).count(), 10)


class LinkTests(LoginTestCase):
    def test_confirm_then_log_in(self):
        self.request_link()
        _, link, _ = self.last_email()
        response = self.client.get(link)
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/login/confirm.html")
        self.assertEqual(response["Referrer-Policy"], "strict-origin")
        self.assertIn("no-store", response["Cache-Control"])
        self.assertEqual(self.record().use_count, 0)
        self.assertNotLoggedIn(self.client)
        response = self.client.post(link)
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertLoggedIn(self.client)
        record = self.record()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(self.events(record, kind="used"), [("used", "", "")])

    def test_session_key_rotates(self):
        self.request_link()
        _, link, _ = self.last_email()
        before = self.client.session.session_key
        self.client.post(link)
        self.assertLoggedIn(self.client)
        self.assertNotEqual(self.client.session.session_key, before)

    def test_scanners_dont_use_the_link(self):
        self.request_link()
        _, link, _ = self.last_email()
        for method in ["head", "options", "get"]:
            getattr(Client(), method)(link)
            getattr(self.client, method)(link)
        self.assertEqual(self.record().use_count, 0)

    def test_replay_is_refused(self):
        self.request_link()
        _, link, _ = self.last_email()
        self.client.post(link)
        client = Client()
        client.cookies = self.client.cookies
        response = self.client.post(link)
        self.assertEqual(response.status_code, 403)
        self.assertTemplateUsed(response, "sesame_db/login/failed.html")
        self.assertEqual(
            self.events(self.record(), kind="rejected"),
            [("rejected", Reason.USED_UP, "")],
        )

    def test_audit_trail_of_the_tutorial(self):
        """docs/tutorial.rst shows these events of a link used, then replayed."""
        self.request_link()
        _, link, _ = self.last_email()
        self.client.post(link)
        self.client.post(link)
        issued = IssuedToken.objects.filter(scope="sesame_db:login").earliest("created")
        self.assertEqual((issued.status, issued.use_count), ("used_up", 1))
        self.assertEqual(
            [
                (e.kind, e.reason, e.detail)
                for e in issued.events.order_by("created_at", "pk")
            ],
            [
                ("issued", "", "login: requested by email"),
                ("issued", "", "login: email sent"),
                ("used", "", ""),
                ("rejected", "used_up", ""),
            ],
        )

    def test_cross_site_post_is_refused(self):
        client = Client(enforce_csrf_checks=True)
        with self.captureOnCommitCallbacks(execute=True):
            page = client.get(REQUEST)
            csrf = page.context["csrf_token"]
            client.post(
                REQUEST, {"email": "john@example.com", "csrfmiddlewaretoken": csrf}
            )
        _, link, _ = self.last_email()
        response = client.post(link)  # No CSRF token: another site's form.
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.record().use_count, 0)
        self.assertNotLoggedIn(client)

    def test_cross_site_request_is_refused(self):
        client = Client(enforce_csrf_checks=True)
        response = client.post(REQUEST, {"email": "john@example.com"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(mail.outbox, [])

    def test_next(self):
        for next_url, expected in [
            ("/welcome/", "/welcome/"),
            ("//evil.example/", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil.example/", "/"),
            ("///evil.example/", "/"),
        ]:
            with self.subTest(next=next_url):
                cache.clear()  # The throttle.
                client = Client()
                self.request_link(client=client, next=next_url)
                _, link, _ = self.last_email()
                response = client.post(link)
                self.assertEqual(response.status_code, 302)
                self.assertEqual(response["Location"], expected)
                # Tampering with the link's next doesn't help either.
                self.assertNotIn("evil", response["Location"])

    def test_next_of_the_form_page(self):
        response = self.client.get(REQUEST + "?next=/welcome/")
        self.assertContains(response, 'value="/welcome/"')
        response = self.client.get(REQUEST + "?next=https://evil.example/")
        self.assertNotContains(response, "evil")

    def test_forged_tokens(self):
        self.request_link()
        _, link, _ = self.last_email()
        token = parse_qs(urlsplit(link).query)["sesame"][0]
        for forged in [
            token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
            token[:10],
            "~" + "A" * 5000,
            "é~\x00",
            "",
        ]:
            with self.subTest(forged=forged):
                url = f"{LOGIN}?{urlencode({'sesame': forged, 'browser': 'x'})}"
                for method in ["get", "post"]:
                    response = getattr(self.client, method)(url)
                    self.assertLess(response.status_code, 500)
                    if method == "post":
                        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.record().use_count, 0)
        self.assertEqual(self.client.get(LOGIN).status_code, 403)

    def test_revoked_link_is_refused_and_audited(self):
        self.request_link()
        _, link, _ = self.last_email()
        self.record().revoke()
        response = self.client.post(link)
        self.assertEqual(response.status_code, 403)
        self.assertIn(("rejected", Reason.REVOKED, ""), self.events(self.record()))

    def test_expired_link_is_refused(self):
        self.request_link()
        _, link, _ = self.last_email()
        IssuedToken.objects.update(
            expires_at=self.record().created - datetime.timedelta(seconds=1)
        )
        response = self.client.post(link)
        self.assertEqual(response.status_code, 403)
        self.assertNotLoggedIn(self.client)

    def test_stateless_token_of_the_login_scope_is_refused(self):
        token = utils.get_token(self.user, flow.SCOPE, store=False)
        response = self.client.post(LOGIN, {"sesame": token})
        self.assertEqual(response.status_code, 403)
        self.assertNotLoggedIn(self.client)

    @override_settings(SESAME_LOGIN_BASE_URL="https://www.example.com/")
    def test_base_url(self):
        self.request_link()
        self.assertIn(
            "https://www.example.com/auth/login/?sesame=", mail.outbox[0].body
        )
        self.assertIn("https://www.example.com/auth/login/code/", mail.outbox[0].body)

    @override_settings(ALLOWED_HOSTS=["*"])
    def test_host_header_without_base_url(self):
        # What docs/login.rst warns about: with ALLOWED_HOSTS = ["*"], the
        # Host header of the request, which the requester chooses, makes
        # the link of someone else's email; SESAME_LOGIN_BASE_URL fixes it.
        self.request_link(HTTP_HOST="evil.example")
        self.assertIn("http://evil.example/auth/login/?sesame=", mail.outbox[0].body)
        with override_settings(SESAME_LOGIN_BASE_URL="https://www.example.com"):
            self.request_link(HTTP_HOST="evil.example")
        self.assertNotIn("evil.example", mail.outbox[1].body)

    @override_settings(SESAME_LOGIN_SEND_EMAIL="tests.test_login.send_to_hook")
    def test_send_email_hook(self):
        sent_to_hook.clear()
        self.request_link()
        self.assertEqual(mail.outbox, [])
        [kwargs] = sent_to_hook
        self.assertEqual(sorted(kwargs), ["html", "subject", "text", "to"])
        self.assertEqual(kwargs["to"], "john@example.com")
        self.assertIn("/auth/login/?sesame=", kwargs["text"])
        self.assertIn(("issued", "", "login: email sent"), self.events(self.record()))


class EarlierLinksTests(LoginTestCase):
    def test_new_request_revokes_earlier_links(self):
        self.request_link()
        _, first, _ = self.last_email()
        self.request_link()
        _, second, _ = self.last_email()
        self.assertEqual(len(mail.outbox), 2)
        records = IssuedToken.objects.order_by("pk")
        self.assertEqual(
            [r.status for r in records],
            [IssuedToken.Status.REVOKED, IssuedToken.Status.ACTIVE],
        )
        self.assertEqual(records[0].revoke_reason, "login: a new link was requested")
        self.assertEqual(self.client.post(first).status_code, 403)
        self.assertEqual(self.client.post(second).status_code, 302)

    @override_settings(SESAME_LOGIN_MAX_VALID_LINKS=2)
    def test_max_valid_links(self):
        for _ in range(3):
            self.request_link()
        self.assertEqual(
            [r.status for r in IssuedToken.objects.order_by("pk")],
            [
                IssuedToken.Status.REVOKED,
                IssuedToken.Status.ACTIVE,
                IssuedToken.Status.ACTIVE,
            ],
        )

    def test_other_peoples_links_stay(self):
        other = self.create_user("jane", email="jane@example.com")
        utils.issue_token(other, flow.SCOPE)
        utils.issue_token(self.user, "other-scope")
        self.request_link()
        self.request_link()
        self.assertEqual(IssuedToken.objects.revoked().count(), 1)


class ThrottleTests(LoginTestCase):
    def test_per_address(self):
        for _ in range(3):
            self.request_link()
        self.assertEqual(len(mail.outbox), 3)
        for _ in range(2):
            response = self.request_link()
            self.assertEqual(response.status_code, 200)
            self.assertTemplateUsed(response, "sesame_db/login/sent.html")
        self.assertEqual(len(mail.outbox), 3)
        self.assertEqual(IssuedToken.objects.count(), 3)
        # Audited once per window.
        self.assertEqual(
            self.events(kind="rejected"),
            [("rejected", Reason.RATE_LIMITED, "login: request throttled per address")],
        )
        self.assertEqual(TokenEvent.objects.get(kind="rejected").user_id, self.user.pk)
        # Another address from the same client isn't limited yet.
        self.create_user("jane", email="jane@example.com")
        self.request_link("jane@example.com")
        self.assertEqual(len(mail.outbox), 4)

    def test_per_address_whatever_the_spelling(self):
        # Spellings that reach the same account share a count: case, and
        # the characters that Unicode folds, such as the long s "ſ", which
        # PostgreSQL's UPPER() makes "S".
        self.create_user("sam", email="sam@site.com")
        for typed in ["sam@site.com", "SAM@SITE.COM", "sam@ſite.com", "sam@ſitE.com"]:
            self.request_link(typed, client=Client())
        self.assertLessEqual(len(mail.outbox), 3)
        self.assertEqual(
            self.events(kind="rejected"),
            [("rejected", Reason.RATE_LIMITED, "login: request throttled per address")],
        )

    @override_settings(SESAME_LOGIN_THROTTLE={"address": 3, "client": 5, "period": 60})
    def test_per_client(self):
        for number in range(5):
            self.request_link(f"nobody{number}@example.com")
        self.request_link()
        self.assertEqual(mail.outbox, [])
        self.assertEqual(
            self.events(kind="rejected"),
            [("rejected", Reason.RATE_LIMITED, "login: request throttled per client")],
        )
        # Another client isn't limited.
        self.request_link(client=Client(REMOTE_ADDR="192.0.2.7"))
        self.assertEqual(len(mail.outbox), 1)

    @override_settings(SESAME_LOGIN_THROTTLE={"address": 3, "client": 2, "period": 60})
    def test_spoofed_forwarded_for_is_the_same_client(self):
        for number in range(3):
            self.request_link(
                f"nobody{number}@example.com",
                HTTP_X_FORWARDED_FOR=f"198.51.100.{number}",
            )
        self.assertEqual(
            self.events(kind="rejected"),
            [("rejected", Reason.RATE_LIMITED, "login: request throttled per client")],
        )

    @override_settings(SESAME_LOGIN_THROTTLE=None)
    def test_off(self):
        for _ in range(6):
            self.request_link()
        self.assertEqual(len(mail.outbox), 6)


class BrowserBindingTests(LoginTestCase):
    def test_other_browser_is_refused_and_the_link_still_works(self):
        self.request_link()
        _, link, _ = self.last_email()
        other = Client()
        for method in ["get", "post"]:
            response = getattr(other, method)(link)
            self.assertEqual(response.status_code, 403)
            self.assertTemplateUsed(response, "sesame_db/login/other_browser.html")
            self.assertContains(response, "code", status_code=403)
        self.assertNotLoggedIn(other)
        record = self.record()
        self.assertEqual(record.use_count, 0)
        # Audited once per client and window, with its own detail.
        self.assertEqual(
            self.events(record, kind="rejected"),
            [("rejected", "other_browser", "login: opened in another browser")],
        )
        self.assertEqual(TokenEvent.objects.get(kind="rejected").user_id, self.user.pk)
        response = self.client.post(link)
        self.assertEqual(response.status_code, 302)
        self.assertLoggedIn(self.client)

    def test_tag_of_another_link_or_browser_is_refused(self):
        self.request_link()
        _, link, _ = self.last_email()
        other = Client()
        self.request_link("john@example.com", client=other)
        # The other browser's cookie with this link's tag.
        response = other.post(link)
        self.assertEqual(response.status_code, 403)
        # This browser, the link without its tag or with a made-up one.
        query = parse_qs(urlsplit(link).query)
        for tag in ["", "0" * 32, query["browser"][0][:-1] + "x"]:
            response = self.client.post(
                LOGIN, {"sesame": query["sesame"][0], "browser": tag}
            )
            self.assertEqual(response.status_code, 403)

    def test_forged_cookie_is_refused(self):
        self.request_link()
        _, link, _ = self.last_email()
        other = Client()
        other.cookies[browser.COOKIE_NAME] = "forged"
        self.assertEqual(other.post(link).status_code, 403)

    @override_settings(SESAME_LOGIN_BIND_BROWSER=False)
    def test_off(self):
        self.request_link()
        _, link, _ = self.last_email()
        self.assertNotIn("browser=", link)
        other = Client()
        self.assertEqual(other.post(link).status_code, 302)
        self.assertLoggedIn(other)


class CodeTests(LoginTestCase):
    def test_code_logs_in_and_uses_the_link(self):
        self.request_link(next="/welcome/")
        _, link, code = self.last_email()
        response = self.client.get(CODE)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'autocomplete="one-time-code"')
        response = self.client.post(CODE, {"code": f"{code[:3]} {code[3:]}"})
        self.assertRedirects(response, "/welcome/", fetch_redirect_response=False)
        self.assertLoggedIn(self.client)
        record = self.record()
        self.assertEqual(record.use_count, 1)
        self.assertEqual(self.events(record, kind="used"), [("used", "", "")])
        # The link is the same single use: refused as used, in the browser
        # that asked (the test client's logout() would drop the binding's
        # cookie, and the link would be refused for that).
        self.client.cookies.pop(settings.SESSION_COOKIE_NAME)
        response = self.client.post(link)
        self.assertEqual(response.status_code, 403)
        self.assertTemplateUsed(response, "sesame_db/login/failed.html")
        self.assertEqual(
            self.events(record, kind="rejected"),
            [("rejected", Reason.USED_UP, "")],
        )

    def test_session_key_rotates(self):
        self.request_link()
        _, _, code = self.last_email()
        before = self.client.session.session_key
        self.client.post(CODE, {"code": code})
        self.assertLoggedIn(self.client)
        self.assertNotEqual(self.client.session.session_key, before)

    def test_code_after_the_link_is_refused(self):
        self.request_link()
        _, link, code = self.last_email()
        self.client.post(link)
        self.assertLoggedIn(self.client)
        # In the same browser: the test client's logout() would drop the
        # binding's cookie, and the code would be refused for that.
        del self.client.cookies[settings.SESSION_COOKIE_NAME]
        response = self.client.post(CODE, {"code": code})
        self.assertNotLoggedIn(self.client)
        self.assertIn(response.status_code, (200, 403))
        self.assertEqual(self.record().use_count, 1)

    def test_code_works_only_in_the_requesting_browser(self):
        self.request_link()
        _, _, code = self.last_email()
        other = Client()
        response = other.post(CODE, {"code": code})
        self.assertEqual(response.status_code, 200)
        self.assertNotLoggedIn(other)
        # Even with a link of its own.
        self.request_link(client=other)
        self.assertNotLoggedIn(other)
        self.assertEqual(IssuedToken.objects.order_by("pk")[0].use_count, 0)

    def test_five_wrong_codes_kill_the_link(self):
        self.request_link()
        _, link, code = self.last_email()
        wrong = str((int(code) + 1) % 10**6).zfill(6)
        for _ in range(flow.WRONG_CODES):
            response = self.client.post(CODE, {"code": wrong})
            self.assertEqual(response.status_code, 200)
            self.assertNotLoggedIn(self.client)
        self.assertContains(response, "No code works in this browser now")
        record = self.record()
        self.assertEqual(record.status, IssuedToken.Status.REVOKED)
        self.assertEqual(record.revoke_reason, "login: too many wrong codes")
        self.assertEqual(
            self.events(record, kind="rejected"),
            [("rejected", Reason.BAD_SIGNATURE, "login: wrong code")] * 5,
        )
        # The right code is refused now, and so is the link.
        response = self.client.post(CODE, {"code": code})
        self.assertNotLoggedIn(self.client)
        self.assertEqual(self.client.post(link).status_code, 403)

    def test_wrong_tries_survive_a_new_cookie(self):
        self.request_link()
        _, _, code = self.last_email()
        wrong = str((int(code) + 1) % 10**6).zfill(6)
        for _ in range(flow.WRONG_CODES - 1):
            self.client.post(CODE, {"code": wrong})
        self.client.cookies.pop(browser.COOKIE_NAME)
        self.client.post(CODE, {"code": wrong})
        self.assertEqual(self.record().status, IssuedToken.Status.ACTIVE)

    def test_malformed_codes(self):
        self.request_link()
        for value in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "\x00" * 6]:
            with self.subTest(value=value):
                response = self.client.post(CODE, {"code": value})
                self.assertEqual(response.status_code, 200)
                self.assertNotLoggedIn(self.client)
        self.assertEqual(self.events(self.record(), kind="rejected"), [])

    def test_codes_differ_per_link_and_browser(self):
        self.assertNotEqual(browser.code(1, "a"), browser.code(2, "a"))
        self.assertNotEqual(browser.code(1, "a"), browser.code(1, "b"))

    @override_settings(SESAME_LOGIN_CODE=False)
    def test_off(self):
        self.request_link()
        message, _, code = self.last_email()
        self.assertIsNone(code)
        self.assertNotIn("code", message.alternatives[0][0].split("<body")[1])

    def test_off_refuses_codes(self):
        self.request_link()
        cookie = self.client.cookies[browser.COOKIE_NAME].value
        nonce = signing.loads(cookie, salt=browser._SALT)
        code = browser.code(self.record().pk, nonce)
        with override_settings(SESAME_LOGIN_CODE=False):
            self.assertEqual(self.client.get(CODE).status_code, 404)
            response = self.client.post(CODE, {"code": code})
        self.assertEqual(response.status_code, 404)
        self.assertNotLoggedIn(self.client)
        self.assertEqual(self.record().use_count, 0)

    @override_settings(SESAME_LOGIN_CODE_LENGTH=8)
    def test_length(self):
        self.request_link()
        _, _, code = self.last_email()
        self.assertEqual(len(code), 8)
        self.client.post(CODE, {"code": code})
        self.assertLoggedIn(self.client)


@modify_settings(
    MIDDLEWARE={
        "remove": [
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ]
    }
)
class WithoutSessionsTests(LoginTestCase):
    """Without the session middleware, a clear error rather than an AttributeError."""

    def test_request(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, "Login by email requires django.contrib.sessions"
        ):
            self.client.post(REQUEST, {"email": "john@example.com"})
        self.assertEqual(IssuedToken.objects.count(), 0)

    def test_code(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, "Login by email requires django.contrib.sessions"
        ):
            self.client.post(CODE, {"code": "123456"})


@override_settings(SESAME_LOGIN_SIGNUP="tests.test_login.create_account")
class SignupTests(LoginTestCase):
    def test_signup(self):
        self.request_link("new@example.com")
        message, link, code = self.last_email()
        self.assertEqual(message.subject, "Create your account")
        self.assertIn("signup=", link)
        self.assertIsNone(code)
        response = self.client.get(link)
        self.assertContains(response, "Create my account")
        self.assertFalse(
            get_user_model().objects.filter(email="new@example.com").exists()
        )
        response = self.client.post(link)
        self.assertEqual(response.status_code, 302)
        user = get_user_model().objects.get(email="new@example.com")
        self.assertLoggedIn(self.client, user)
        self.assertEqual(IssuedToken.objects.get(user=user).use_count, 1)
        # Replay, in the same browser (the test client's logout() would drop
        # the binding's cookie, and the link would be refused for that).
        self.assertEqual(self.client.post(link).status_code, 403)
        self.assertEqual(
            get_user_model().objects.filter(email="new@example.com").count(), 1
        )

    def test_signup_link_works_once_even_if_the_account_is_not_seen(self):
        # As with a read replica that lags: the account isn't there yet.
        self.request_link("new@example.com")
        _, link, _ = self.last_email()
        self.assertEqual(self.client.post(link).status_code, 302)
        get_user_model().objects.filter(email="new@example.com").delete()
        # Not logout(): the test client's drops every cookie, the binding's too.
        self.assertEqual(self.client.post(link).status_code, 403)
        self.assertFalse(
            get_user_model().objects.filter(email="new@example.com").exists()
        )

    def test_signup_in_another_browser(self):
        self.request_link("new@example.com")
        _, link, _ = self.last_email()
        self.assertEqual(Client().post(link).status_code, 403)
        self.assertFalse(
            get_user_model().objects.filter(email="new@example.com").exists()
        )

    def test_forged_signup(self):
        response = self.client.post(LOGIN + "?signup=forged")
        self.assertEqual(response.status_code, 403)

    def test_known_address_gets_a_login_link(self):
        self.request_link()
        self.assertEqual(self.last_email()[0].subject, "Your login link")


class SignupOffTests(LoginTestCase):
    def test_unknown_address_gets_nothing(self):
        self.request_link("new@example.com")
        self.assertEqual(mail.outbox, [])

    def test_signup_link_is_refused(self):
        with override_settings(SESAME_LOGIN_SIGNUP="tests.test_login.create_account"):
            self.request_link("new@example.com")
            _, link, _ = self.last_email()
        self.assertEqual(self.client.post(link).status_code, 403)


class FrenchTests(LoginTestCase):
    def test_pages_and_email_in_french(self):
        with override_settings(LANGUAGE_CODE="fr"):
            response = self.client.get(REQUEST)
            self.assertContains(response, "M’envoyer un lien")
            response = self.request_link()
            self.assertContains(response, "Consultez vos e-mails")
            self.assertEqual(mail.outbox[0].subject, "Votre lien de connexion")
            self.assertIn("pendant 10 minutes", mail.outbox[0].body)


@pytest.mark.postgresql
class ConcurrentLinkAndCodeTests(TransactionTestCase):
    """The link and its code, used at once from many requests of the right browser: one login."""

    THREADS = 16

    def setUp(self):
        cache.clear()
        self.addCleanup(cache.clear)
        get_user_model().objects.create_user("john", "john@example.com")

    def test_exactly_one_use(self):
        client = Client()
        client.post(REQUEST, {"email": "john@example.com"})  # Autocommit: sent.
        body = str(mail.outbox[-1].body)
        link = link_re.findall(body)[0].replace("http://testserver", "")
        code = code_re.findall(body)[0]
        barrier = threading.Barrier(self.THREADS)
        statuses: list[int] = []
        errors: list[BaseException] = []

        def use(index):
            browser_client = Client()
            browser_client.cookies = client.cookies
            try:
                barrier.wait(timeout=30)
                if index % 2:
                    response = browser_client.post(link)
                else:
                    response = browser_client.post(CODE, {"code": code})
                statuses.append(response.status_code)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=use, args=(index,)) for index in range(self.THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(statuses.count(302), 1, statuses)
        record = IssuedToken.objects.get(scope=flow.SCOPE)
        self.assertEqual(record.use_count, 1)
        self.assertEqual(
            TokenEvent.objects.filter(token=record, kind="used").count(), 1
        )


@pytest.mark.postgresql
class ConcurrentWrongCodesTests(TransactionTestCase):
    """Wrong codes typed at once from many requests of the requesting browser: five are checked, no more."""

    THREADS = 16

    def setUp(self):
        # A cache on the network, as in production: between reading a count
        # and adding to it, other requests run.
        try:
            server = start_server()
        except Unavailable as exc:  # pragma: no cover - depends on the machine
            self.skipTest(str(exc))
        self.addCleanup(server.destroy)
        redis_cache = override_settings(CACHES={"default": cache_settings(server)})
        redis_cache.enable()
        self.addCleanup(redis_cache.disable)
        get_user_model().objects.create_user("john", "john@example.com")

    def test_at_most_five_guesses(self):
        client = Client()
        client.post(REQUEST, {"email": "john@example.com"})  # Autocommit: sent.
        code = code_re.findall(str(mail.outbox[-1].body))[0]
        guesses = [
            str((int(code) + 1 + index) % 10**6).zfill(6)
            for index in range(self.THREADS)
        ]
        barrier = threading.Barrier(self.THREADS)
        errors: list[BaseException] = []

        def guess(index):
            browser_client = Client()
            browser_client.cookies = client.cookies
            try:
                barrier.wait(timeout=30)
                browser_client.post(CODE, {"code": guesses[index]})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=guess, args=(index,))
            for index in range(self.THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        record = IssuedToken.objects.get(scope=flow.SCOPE)
        self.assertEqual(record.status, IssuedToken.Status.REVOKED)
        # Each guess that was compared with the code is audited: no more
        # than five, whatever the timing.
        self.assertEqual(
            TokenEvent.objects.filter(
                token=record, kind="rejected", detail="login: wrong code"
            ).count(),
            flow.WRONG_CODES,
        )


@pytest.mark.postgresql
@override_settings(SESAME_LOGIN_SIGNUP="tests.test_login.create_account")
class ConcurrentSignupTests(TransactionTestCase):
    """A sign-up link confirmed at once by many requests (a double click): one account, no error."""

    THREADS = 8

    def setUp(self):
        cache.clear()
        self.addCleanup(cache.clear)

    def test_one_account(self):
        client = Client()
        client.post(REQUEST, {"email": "new@example.com"})  # Autocommit: sent.
        link = link_re.findall(str(mail.outbox[-1].body))[0]
        link = link.replace("http://testserver", "")
        barrier = threading.Barrier(self.THREADS)
        statuses: list[int] = []
        errors: list[BaseException] = []

        def confirm():
            browser_client = Client(raise_request_exception=False)
            browser_client.cookies = client.cookies
            try:
                barrier.wait(timeout=30)
                statuses.append(browser_client.post(link).status_code)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=confirm) for _ in range(self.THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(
            get_user_model().objects.filter(email="new@example.com").count(), 1
        )
        self.assertEqual(sorted(statuses), [302] + [403] * (self.THREADS - 1))

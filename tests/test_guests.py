"""
Guest links: stored links without a user, shared with a recipient.

Every entry point proves that a guest link never logs anyone in and works
only in its scope; the store's features (expiry, use limits, revocation,
audit, signals, bulk issuance) work for them as for user links.

"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

import time_machine
from asgiref.sync import async_to_sync
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory, TestCase, override_settings
from django.views.generic import View

from sesame_db import browsers
from sesame_db.decorators import authenticate
from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.signals import token_used
from sesame_db.utils import (
    acheck_link,
    check_link,
    check_user,
    get_guest_query_string,
    get_guest_token,
    get_query_string,
    get_user,
    issue_guest_token,
    issue_guest_tokens,
    issue_token,
)
from sesame_db.views import TokenAuthenticationMixin

from .mixins import AsyncNumQueriesMixin, CreateUserMixin, capture_login_failed


@authenticate(scope="report:{pk}", guests=True)
def budget_view(request, pk):
    return HttpResponse(request.sesame_link.recipient)


@authenticate(scope="report:{pk}")
def member_budget_view(request, pk):
    return HttpResponse("unreachable")  # pragma: no cover


START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
GUEST = "guest@example.com"


class GuestTestCase(CreateUserMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.token, self.link = issue_guest_token(
            GUEST, "report:1", issued_by=self.user, label="Q3 report"
        )

    def url(self, path, token=None):
        return f"{path}?{urlencode({'sesame': token or self.token})}"

    def events(self, link=None):
        return list(
            TokenEvent.objects.filter(token=link or self.link)
            .order_by("pk")
            .values_list("kind", "reason", "recipient")
        )

    def assertRefused(self, response, reason, link=None):
        self.assertEqual(response.status_code, 403)
        self.assertIn(
            (TokenEvent.Kind.REJECTED, reason, GUEST), self.events(link or self.link)
        )


class IssueGuestLinkTests(GuestTestCase):
    def test_link_has_recipient_no_user_and_scope(self):
        self.link.refresh_from_db()
        self.assertIsNone(self.link.user)
        self.assertTrue(self.link.is_guest)
        self.assertEqual(self.link.recipient, GUEST)
        self.assertEqual(self.link.scope, "report:1")
        self.assertEqual(self.link.issued_by, self.user)
        self.assertEqual(self.link.label, "Q3 report")
        self.assertFalse(self.link.bind_to_browser)
        self.assertEqual(str(self.link), f"Link #{self.link.pk} for {GUEST} (report:1)")
        self.assertEqual(self.events(), [(TokenEvent.Kind.ISSUED, "", GUEST)])

    def test_query_string(self):
        qs = get_guest_query_string("bob@example.com", "report:1", max_uses=2)
        self.assertTrue(qs.startswith("?sesame=~"))
        link = IssuedToken.objects.get(recipient="bob@example.com")
        self.assertEqual(link.max_uses, 2)

    def test_get_guest_token(self):
        token = get_guest_token("Bob", "report:1", max_age=60)
        self.assertTrue(token.startswith("~"))
        link = IssuedToken.objects.get(recipient="Bob")
        self.assertIsNotNone(link.expires_at)

    def test_scope_and_recipient_are_required(self):
        with self.assertRaisesMessage(ValueError, "a guest link requires a scope"):
            get_guest_token(GUEST, "")
        for recipient in ["", "   "]:
            with self.assertRaisesMessage(
                ValueError, "a guest link requires a recipient"
            ):
                get_guest_token(recipient, "report:1")
        with self.assertRaisesMessage(ValueError, "at most 254 characters"):
            get_guest_token("x" * 255, "report:1")
        with self.assertRaises(TypeError):
            get_guest_token(None, "report:1")  # type: ignore[arg-type]
        # One recipient where a list is expected: not a link per character.
        with self.assertRaisesMessage(TypeError, "not a string"):
            issue_guest_tokens("bob@example.com", "report:1")
        self.assertEqual(IssuedToken.objects.exclude(pk=self.link.pk).count(), 0)

    def test_bulk_500_recipients(self):
        recipients = [f"guest{i}@example.com" for i in range(500)]
        # One INSERT of the links and one of their "issued" events: one
        # round trip each for 500 recipients, on PostgreSQL (no parameter
        # limit) and on SQLite where Django reads the connection's limit
        # (32,766 by default since SQLite 3.32), as in test_store.py.
        queries = 1 + 1
        # Django 5.2 assumes SQLite's historical limit of 999 parameters:
        # batches of 62 links (16 columns) and 76 events
        # (13 columns), ceil(500 / 62) + ceil(500 / 76) statements.
        limit = connection.features.max_query_params
        if limit is not None and limit < 16 * 500:
            self.assertEqual(limit, 999, "another limit needs another count")
            queries = 9 + 7
        with self.assertNumQueries(queries):
            issued = issue_guest_tokens(recipients, "report:1", issued_by=self.user)
        self.assertEqual([link.recipient for _, link in issued], recipients)
        self.assertEqual(IssuedToken.objects.shared_by(self.user).count(), 500 + 1)
        self.assertEqual(
            TokenEvent.objects.filter(
                kind=TokenEvent.Kind.ISSUED, recipient="guest499@example.com"
            ).count(),
            1,
        )


@override_settings(ROOT_URLCONF="tests.guest_urls")
class DecoratorTests(AsyncNumQueriesMixin, GuestTestCase):
    # A guest link, with the audit trail:
    # 1. SELECT the link, LEFT JOIN its (missing) user, and the sharer.
    # 2. UPDATE the use count WHERE the link is still usable.
    # 3. INSERT the "used" event; on PostgreSQL, 2. and 3. are one statement.
    NUM_QUERIES = 3 if connection.vendor == "sqlite" else 2

    def test_guest_link_lets_the_request_through_without_login(self):
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.content.decode(),
            f"report 1 user=anonymous recipient={GUEST} by=john",
        )
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 1)
        event = TokenEvent.objects.get(token=self.link, kind=TokenEvent.Kind.USED)
        self.assertEqual(event.recipient, GUEST)
        self.assertIsNone(event.user_id)
        self.assertEqual(event.ip, "127.0.0.1")
        self.assertEqual(event.path, "/shared/1/")

    def test_query_budget(self):
        request = RequestFactory().get(self.url("/shared/1/"))
        request.user = AnonymousUser()
        with self.assertNumQueries(self.NUM_QUERIES):
            response = budget_view(request, pk=1)
        self.assertEqual(response.status_code, 200)

    def test_query_budget_refused(self):
        # Refused without guests=True: 1. SELECT the link; 2. INSERT the
        # "rejected" event, its user and recipient from subqueries.
        request = RequestFactory().get(self.url("/shared/1/"))
        request.user = AnonymousUser()
        with self.assertNumQueries(2), self.assertRaises(PermissionDenied):
            member_budget_view(request, pk=1)

    def test_logged_in_visitor_stays_themselves(self):
        other = self.create_user("jane", email="jane@example.com")
        self.client.force_login(other)
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertIn("user=jane", response.content.decode())
        self.assertEqual(self.client.session[SESSION_KEY], str(other.pk))

    def test_only_in_its_scope(self):
        response = self.client.get(self.url("/shared/2/"))
        self.assertEqual(response.status_code, 403)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)
        self.assertRefused(response, Reason.WRONG_SCOPE)

    def test_refused_without_guests(self):
        response = self.client.get(self.url("/member/1/"))
        self.assertRefused(response, Reason.GUEST_LINK)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)
        self.assertNotIn(SESSION_KEY, self.client.session)

    def test_permanent_never_logs_a_guest_in(self):
        response = self.client.get(self.url("/permanent/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertIn("user=anonymous", response.content.decode())
        self.assertNotIn(SESSION_KEY, self.client.session)

    def test_no_login_failed_signal_for_a_guest(self):
        with capture_login_failed() as failures:
            response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(failures, [])

    def test_user_link_still_logs_in_and_sets_sesame_link(self):
        token, link = issue_token(self.user, "report:1")
        response = self.client.get(self.url("/shared/1/", token))
        self.assertEqual(
            response.content.decode(),
            "report 1 user=john recipient=user link by=-",
        )
        response = self.client.get(self.url("/member/1/", token))
        self.assertEqual(response.status_code, 200)
        self.assertIn("user=john", response.content.decode())

    def test_stateless_token_has_no_sesame_link(self):
        qs = get_query_string(self.user, "report:1", store=False)
        response = self.client.get(f"/shared/1/{qs}")
        self.assertEqual(
            response.content.decode(), "report 1 user=john recipient=- by=-"
        )

    def test_guests_require_a_scope(self):
        with self.assertRaisesMessage(
            ImproperlyConfigured, "authenticate(guests=True) requires a scope"
        ):
            authenticate(guests=True)

    def test_confirm(self):
        # A mail scanner's GET gets the confirmation page; the use waits.
        response = self.client.get(self.url("/confirmed/1/"))
        self.assertEqual(response.status_code, 200)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)
        response = self.client.post(self.url("/confirmed/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertIn(f"recipient={GUEST}", response.content.decode())
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 1)

    async def test_async_view(self):
        response = await self.async_client.get(self.url("/ashared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.content.decode(), f"report 1 user=anonymous recipient={GUEST}"
        )
        response = await self.async_client.get(self.url("/ashared/2/"))
        self.assertEqual(response.status_code, 403)

    def test_class_based_views(self):
        response = self.client.get(self.url("/cbv/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertIn(f"user=anonymous recipient={GUEST}", response.content.decode())
        response = self.client.get(self.url("/cbv/shared/2/"))
        self.assertEqual(response.status_code, 403)
        response = self.client.get(self.url("/cbv/member/1/"))
        self.assertRefused(response, Reason.GUEST_LINK)
        self.assertNotIn(SESSION_KEY, self.client.session)

    def test_login_view_refuses(self):
        response = self.client.get(self.url("/login/"))
        self.assertRefused(response, Reason.GUEST_LINK)
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)

    @override_settings(
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "sesame_db.middleware.AuthenticationMiddleware",
        ]
    )
    def test_middleware_refuses(self):
        # The middleware checks unscoped tokens: a guest link, always
        # scoped, is refused by its scope tag, with no SELECT: 1. INSERT
        # the "rejected" event.
        with self.assertNumQueries(1):
            response = self.client.get(self.url("/plain/"))
        self.assertEqual(response.content.decode(), "anonymous")
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.assertIn(
            (TokenEvent.Kind.REJECTED, Reason.WRONG_SCOPE, GUEST), self.events()
        )

    @override_settings(
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "sesame_db.middleware.AuthenticationMiddleware",
        ]
    )
    def test_middleware_leaves_guest_views_their_tokens(self):
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.assertIn("user=anonymous", response.content.decode())
        self.assertEqual(
            [kind for kind, _, _ in self.events()],
            [TokenEvent.Kind.ISSUED, TokenEvent.Kind.USED],
        )

    def test_get_user_refuses(self):
        self.assertIsNone(get_user(self.token, "report:1"))
        self.assertIsNone(get_user(self.token))
        with self.assertRaises(InvalidToken) as cm:
            check_user(self.token, "report:1")
        self.assertEqual(cm.exception.reason, Reason.GUEST_LINK)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)


@override_settings(
    ROOT_URLCONF="tests.guest_urls",
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "sesame_db.middleware.AuthenticationMiddleware",
    ],
)
class LoggedInVisitorTests(GuestTestCase):
    """A guest link opened by a logged-in visitor, at every HTTP entry point, behind the middleware: the session keeps its key and its user."""

    # Path, status, and the audit event: "used", or the reason of the refusal.
    CASES = [
        ("/shared/1/", 200, TokenEvent.Kind.USED),
        ("/ashared/1/", 200, TokenEvent.Kind.USED),
        ("/cbv/shared/1/", 200, TokenEvent.Kind.USED),
        ("/permanent/1/", 200, TokenEvent.Kind.USED),
        ("/shared/2/", 403, Reason.WRONG_SCOPE),
        ("/member/1/", 403, Reason.GUEST_LINK),
        ("/cbv/member/1/", 403, Reason.GUEST_LINK),
        ("/login/", 403, Reason.GUEST_LINK),
        # The middleware checks the token itself on other URLs.
        ("/plain/", 200, Reason.WRONG_SCOPE),
    ]

    def test_session_is_untouched(self):
        visitor = self.create_user("jane", email="jane@example.com")
        for path, status, outcome in self.CASES:
            with self.subTest(path=path):
                token, link = issue_guest_token(GUEST, "report:1")
                self.client.force_login(visitor)
                key = self.client.session.session_key
                response = self.client.get(self.url(path, token))
                self.assertEqual(response.status_code, status)
                if status == 200:
                    self.assertIn("jane", response.content.decode())
                self.assertEqual(self.client.session.session_key, key)
                self.assertEqual(self.client.session[SESSION_KEY], str(visitor.pk))
                kind, reason, recipient = self.events(link)[-1]
                self.assertEqual(recipient, GUEST)
                if outcome == TokenEvent.Kind.USED:
                    self.assertEqual((kind, reason), (outcome, ""))
                else:
                    self.assertEqual(
                        (kind, reason), (TokenEvent.Kind.REJECTED, outcome)
                    )


class CheckLinkTests(GuestTestCase):
    def test_check_link(self):
        with self.assertRaises(InvalidToken) as cm:
            check_link(self.token, "report:1")
        self.assertEqual(cm.exception.reason, Reason.GUEST_LINK)
        user, link = check_link(self.token, "report:1", guests=True)
        self.assertIsNone(user)
        self.assertEqual(link, self.link)
        request = RequestFactory().get("/")
        self.assertEqual(check_link(request, "report:1", guests=True), (None, None))

    async def test_acheck_link(self):
        with self.assertRaises(InvalidToken) as cm:
            await acheck_link(self.token, "report:1")
        self.assertEqual(cm.exception.reason, Reason.GUEST_LINK)
        user, link = await acheck_link(self.token, "report:1", guests=True)
        self.assertIsNone(user)
        assert link is not None
        self.assertEqual(link.pk, self.link.pk)
        self.assertEqual(link.recipient, GUEST)
        with self.assertRaises(InvalidToken) as cm:
            await acheck_link(self.token, "report:2", guests=True)
        self.assertEqual(cm.exception.reason, Reason.WRONG_SCOPE)

    def test_async_gives_the_same_answers(self):
        # Each case twice, on one link per path: the first use, then a
        # second one (used up, or from another browser, or accepted again).
        from asgiref.sync import async_to_sync

        def outcome(check, token, scope, guests):
            request = RequestFactory().get("/")
            try:
                user, link = check(request, scope, guests=guests, token=token)
            except InvalidToken as exc:
                return exc.reason
            self.assertIs(getattr(request, "sesame_link", None), link)
            return (user, link.pk)

        paths = {"sync": check_link, "async": async_to_sync(acheck_link)}
        seen = set()
        for guests in [False, True]:
            # Without a scope, guests=True is refused: see below.
            for scope in ["report:1", "report:2", ""][: 2 + (not guests)]:
                cases: list[dict[str, Any]] = [
                    {},
                    {"bind_to_browser": True},
                    {"max_uses": 1},
                ]
                for options in cases:
                    answers = {}
                    for name, check in paths.items():
                        token, link = issue_guest_token(GUEST, "report:1", **options)
                        results = [outcome(check, token, scope, guests) for _ in "12"]
                        # The link's own pk differs: compare what it says.
                        answers[name] = [
                            r if isinstance(r, str) else (r[0], r[1] == link.pk)
                            for r in results
                        ]
                        answers[name + " events"] = list(
                            TokenEvent.objects.filter(token=link)
                            .order_by("pk")
                            .values_list("kind", "reason", "recipient")
                        )
                    with self.subTest(guests=guests, scope=scope, options=options):
                        self.assertEqual(answers["sync"], answers["async"])
                        self.assertEqual(
                            answers["sync events"], answers["async events"]
                        )
                    seen.update(answers["sync"])
        # Every outcome came up.
        self.assertEqual(
            seen,
            {
                (None, True),
                Reason.GUEST_LINK,
                Reason.WRONG_SCOPE,
                Reason.OTHER_BROWSER,
                Reason.USED_UP,
            },
        )

    def test_signal(self):
        received = []

        def receiver(sender, user, token, scope, **kwargs):
            received.append((user, token.pk, scope))

        token_used.connect(receiver)
        self.addCleanup(token_used.disconnect, receiver)
        with self.captureOnCommitCallbacks(execute=True):
            check_link(self.token, "report:1", guests=True)
        self.assertEqual(received, [(None, self.link.pk, "report:1")])


class StoreTests(GuestTestCase):
    def use(self, token=None):
        try:
            return check_link(token or self.token, "report:1", guests=True)[1]
        except InvalidToken as exc:
            return exc.reason

    def test_max_uses(self):
        token, link = issue_guest_token(GUEST, "report:1", max_uses=2)
        self.assertEqual(self.use(token), link)
        self.assertEqual(self.use(token), link)
        self.assertEqual(self.use(token), Reason.USED_UP)
        link.refresh_from_db()
        self.assertEqual(link.use_count, 2)

    def test_expiry(self):
        with time_machine.travel(START, tick=False):
            token, link = issue_guest_token(GUEST, "report:1", max_age=60)
        with time_machine.travel(START + datetime.timedelta(seconds=59), tick=False):
            self.assertEqual(self.use(token), link)
        with time_machine.travel(START + datetime.timedelta(seconds=61), tick=False):
            self.assertEqual(self.use(token), Reason.EXPIRED)

    def test_revoke_shared_by_and_shared_with(self):
        _, other = issue_guest_token(
            "other@example.com", "report:1", issued_by=self.user
        )
        user_link_token, user_link = issue_token(self.user, "report:1")
        self.assertEqual(
            set(IssuedToken.objects.shared_with("GUEST@example.com ")), {self.link}
        )
        self.assertEqual(
            set(IssuedToken.objects.shared_by(self.user)), {self.link, other}
        )
        self.assertEqual(set(IssuedToken.objects.guests()), {self.link, other})
        self.assertEqual(set(IssuedToken.objects.users()), {user_link})
        self.assertEqual(IssuedToken.objects.shared_with(GUEST).revoke(by=self.user), 1)
        self.assertEqual(self.use(), Reason.REVOKED)
        self.assertEqual(
            self.events()[-2:],
            [
                (TokenEvent.Kind.REVOKED, "", GUEST),
                (TokenEvent.Kind.REJECTED, Reason.REVOKED, GUEST),
            ],
        )
        self.assertEqual(IssuedToken.objects.shared_by(self.user).revoke(), 1)
        # The user's own link isn't a shared one.
        self.assertIsNotNone(get_user(user_link_token, "report:1"))
        self.assertEqual(
            set(TokenEvent.objects.for_recipient(GUEST).values_list("kind", flat=True)),
            {"issued", "revoked", "rejected"},
        )

    def test_deleting_the_sharer_keeps_the_link(self):
        # issued_by is SET_NULL: the guest link outlives its sharer.
        self.user.delete()
        self.assertIsInstance(self.use(), IssuedToken)

    def test_database_requires_user_or_recipient(self):
        from django.db import IntegrityError, transaction

        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.create(scope="report:1")
        with self.assertRaises(IntegrityError), transaction.atomic():
            IssuedToken.objects.create(recipient=GUEST, scope="")

    def test_purge(self):
        from django.core.management import call_command

        with time_machine.travel(START, tick=False):
            token, link = issue_guest_token(GUEST, "report:1", max_age=60)
        with time_machine.travel(START + datetime.timedelta(days=400), tick=False):
            call_command("sesame_db_purge", verbosity=0)
        self.assertFalse(IssuedToken.objects.filter(pk=link.pk).exists())
        self.assertTrue(IssuedToken.objects.filter(pk=self.link.pk).exists())


@override_settings(ROOT_URLCONF="tests.guest_urls")
class BrowserBindingTests(GuestTestCase):
    def setUp(self):
        super().setUp()
        self.token, self.link = issue_guest_token(
            GUEST, "report:1", bind_to_browser=True
        )

    def test_first_browser_gets_a_cookie_others_are_refused(self):
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        cookie = response.cookies[browsers.cookie_name(self.link.pk)]
        self.assertTrue(cookie["httponly"])
        self.assertEqual(cookie["samesite"], "Lax")
        self.assertTrue(cookie["max-age"])
        # The same browser, again: the cookie goes with the request.
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 200)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 2)
        # Another browser: refused, audited, and no use is counted.
        other = self.client_class()
        response = other.get(self.url("/shared/1/"))
        self.assertRefused(response, Reason.OTHER_BROWSER)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 2)

    def test_binding_and_max_uses(self):
        # The use limit holds for the first browser, and the other browsers
        # never count a use: first, other, first, then used up everywhere.
        token, link = issue_guest_token(
            GUEST, "report:1", bind_to_browser=True, max_uses=2
        )
        other = self.client_class()
        url = self.url("/shared/1/", token)
        self.assertEqual(self.client.get(url).status_code, 200)
        self.assertRefused(other.get(url), Reason.OTHER_BROWSER, link)
        self.assertEqual(self.client.get(url).status_code, 200)
        self.assertRefused(self.client.get(url), Reason.USED_UP, link)
        self.assertEqual(other.get(url).status_code, 403)
        link.refresh_from_db()
        self.assertEqual(link.use_count, 2)
        self.assertEqual(
            [kind for kind, _, _ in self.events(link)].count(TokenEvent.Kind.USED), 2
        )

    def test_view_that_raises_on_the_first_open(self):
        # docs/guests.rst: the use is counted, the error page carries no
        # cookie, and the link is refused everywhere from then on.
        response = self.client.get(self.url("/missing/1/"))
        self.assertEqual(response.status_code, 404)
        self.assertNotIn(browsers.cookie_name(self.link.pk), response.cookies)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 1)
        self.assertRefused(
            self.client.get(self.url("/shared/1/")), Reason.OTHER_BROWSER
        )

    def bound_cookie(self, pk, when):
        # What the first use of link pk at ``when`` set, through the API.
        response = HttpResponse()
        link = IssuedToken(pk=pk, expires_at=None)
        with time_machine.travel(when, tick=False):
            browsers.set_cookie(response, RequestFactory().get("/"), link)
        return f"{browsers.cookie_name(pk)}={response.cookies[browsers.cookie_name(pk)].value}"

    def deleted(self, response):
        return [
            name for name, cookie in response.cookies.items() if cookie["max-age"] == 0
        ]

    def test_a_browser_stays_bound_to_max_bound_links(self):
        # Bindings to as many other links as the bound, made in decreasing
        # order of id, then link 20000: binding one more drops the one bound
        # first, 10038, rather than the lowest id.
        start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            days=30
        )
        pks = [20_000, *range(10_000, 10_000 + browsers.MAX_BOUND - 1)]
        cookies = [
            self.bound_cookie(pk, start + datetime.timedelta(hours=index))
            for index, pk in enumerate(reversed(pks))
        ]
        genuine = dict(cookie.split("=", 1) for cookie in cookies)
        # Forged cookies, names that only look like a link's, and another
        # name for link 10000 with its genuine value don't count.
        cookies += [f"{browsers.cookie_name(pk)}={pk}:forged" for pk in range(1, 100)]
        cookies += [
            "sesame_db_link_\u00b2=x",
            "sesame_db_link_" + "9" * 5000 + "=x",
            "sesame_db_link_010000=" + genuine[browsers.cookie_name(10_000)],
        ]
        response = self.client.get(
            self.url("/shared/1/"), HTTP_COOKIE="; ".join(cookies)
        )
        self.assertEqual(response.status_code, 200)
        self.assertIn(browsers.cookie_name(self.link.pk), response.cookies)
        self.assertNotEqual(
            response.cookies[browsers.cookie_name(self.link.pk)]["max-age"], 0
        )
        first = browsers.cookie_name(pks[-1])
        self.assertEqual(self.deleted(response), [first])
        # Fewer: none is dropped.
        token, link = issue_guest_token(GUEST, "report:1", bind_to_browser=True)
        rest = [cookie for cookie in cookies if not cookie.startswith(first + "=")]
        response = self.client.get(
            self.url("/shared/1/", token), HTTP_COOKIE="; ".join(rest)
        )
        self.assertIn(browsers.cookie_name(link.pk), response.cookies)
        self.assertEqual(self.deleted(response), [])

    def test_forged_cookie_is_refused(self):
        self.client.get(self.url("/shared/1/"))
        other = self.client_class()
        other.cookies[browsers.cookie_name(self.link.pk)] = f"{self.link.pk}:forged"
        response = other.get(self.url("/shared/1/"))
        self.assertRefused(response, Reason.OTHER_BROWSER)

    def test_cookie_of_another_link_is_refused(self):
        _, second = issue_guest_token(GUEST, "report:1", bind_to_browser=True)
        response = self.client.get(self.url("/shared/1/"))
        value = response.cookies[browsers.cookie_name(self.link.pk)].value
        other = self.client_class()
        # The cookie of the first link, under the second link's name.
        other.cookies[browsers.cookie_name(second.pk)] = value
        self.assertFalse(
            browsers.is_bound_here(
                RequestFactory(
                    HTTP_COOKIE=f"{browsers.cookie_name(second.pk)}={value}"
                ).get("/"),
                second.pk,
            )
        )

    def test_secure_cookie_over_https(self):
        response = self.client.get(self.url("/shared/1/"), secure=True)
        cookie = response.cookies[browsers.cookie_name(self.link.pk)]
        self.assertTrue(cookie["secure"])

    def test_unbound_links_set_no_cookie(self):
        token, link = issue_guest_token(GUEST, "report:1")
        response = self.client.get(self.url("/shared/1/", token))
        self.assertNotIn(browsers.cookie_name(link.pk), response.cookies)


@override_settings(
    ROOT_URLCONF="tests.guest_urls",
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "sesame-db-guest-rate-limit-tests",
        }
    },
    SESAME_RATE_LIMIT={"failures": 3, "period": 60},
)
class RateLimitTests(GuestTestCase):
    def test_failed_attempts_are_limited(self):
        # A guest link tried where guests aren't allowed, or in the wrong
        # scope, counts as a failure of the client, like any rejection.
        for path in ["/member/1/", "/shared/2/", "/member/1/"]:
            self.assertEqual(self.client.get(self.url(path)).status_code, 403)
        response = self.client.get(self.url("/shared/1/"))
        self.assertEqual(response.status_code, 429)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)
        self.assertIn(
            (TokenEvent.Kind.REJECTED, Reason.RATE_LIMITED, GUEST), self.events()
        )

    def test_other_browsers_cannot_lock_out_the_first(self):
        # Whoever holds a forwarded bound link can't use it, and mustn't
        # be able to lock its first browser out by failing on purpose: the
        # link's counter limits them, not the browser with the cookie.
        from django.core.cache import cache

        for path in ["/shared/1/", "/ashared/1/", "/cbv/shared/1/"]:
            with self.subTest(path=path):
                cache.clear()
                token, link = issue_guest_token(GUEST, "report:1", bind_to_browser=True)
                url = self.url(path, token)
                first, other = self.client_class(), self.client_class()
                self.assertEqual(
                    first.get(url, REMOTE_ADDR="192.0.2.1").status_code, 200
                )
                statuses = [
                    other.get(url, REMOTE_ADDR=f"198.51.100.{index}").status_code
                    for index in range(1, 6)
                ]
                self.assertEqual(statuses, [403, 403, 403, 429, 429])
                self.assertEqual(
                    first.get(url, REMOTE_ADDR="192.0.2.1").status_code, 200
                )
                link.refresh_from_db()
                self.assertEqual(link.use_count, 2)


@override_settings(ROOT_URLCONF="tests.guest_urls")
class ThreatTests(GuestTestCase):
    """The lines of THREATS.md for the entry points that accept guest links."""

    def test_forged_tokens_cost_no_query(self):
        forged = (
            self.token[:20] + ("A" if self.token[20] != "A" else "B") + self.token[21:]
        )
        for token in [
            forged,
            self.token[:-1],
            self.token + "A" * 5000,
            self.token[:-1] + "é",
            self.token[:-1] + "\x00",
            "~",
        ]:
            with self.subTest(token=token[:40]), self.assertNumQueries(0):
                response = self.client.get(self.url("/shared/1/", token))
                self.assertEqual(response.status_code, 403)

    def test_revocation_between_select_and_update(self):
        from unittest import mock

        from sesame_db import store

        consume = store._consume

        def revoke_then_consume(record, *args, **kwargs):
            IssuedToken.objects.filter(pk=record.pk).revoke()
            return consume(record, *args, **kwargs)

        with mock.patch.object(store, "_consume", revoke_then_consume):
            response = self.client.get(self.url("/shared/1/"))
        self.assertRefused(response, Reason.REVOKED)
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)

    def test_token_never_logged_nor_in_signals(self):
        from sesame_db.signals import token_rejected

        seen = []

        def receiver(request=None, **kwargs):
            # The request is the caller's: its URL holds the token.
            seen.append(repr(kwargs))

        token_used.connect(receiver)
        token_rejected.connect(receiver)
        self.addCleanup(token_used.disconnect, receiver)
        self.addCleanup(token_rejected.disconnect, receiver)
        with (
            self.assertLogs("sesame_db", "DEBUG") as logs,
            self.captureOnCommitCallbacks(execute=True),
        ):
            self.client.get(self.url("/shared/1/"))
            self.client.get(self.url("/member/1/"))
        output = "\n".join(logs.output + seen)
        self.assertIn(f"Valid guest link {self.link.pk}", output)
        self.assertNotIn(self.token, output)
        self.assertNotIn(self.token[1:], output)
        self.assertNotIn(GUEST, "\n".join(logs.output))


@override_settings(ROOT_URLCONF="tests.guest_urls")
class PhantomAccountTests(CreateUserMixin, TestCase):
    """The other pattern of docs/guests.rst: a phantom account with an unusable password."""

    def test_phantom_account(self):
        User = get_user_model()
        kwargs = {}
        if User._meta.pk.get_internal_type() == "CharField":
            kwargs["id"] = "user-guest-bob"
        guest = User.objects.create_user("guest-bob", "bob@example.com", **kwargs)
        self.assertFalse(guest.has_usable_password())
        qs = get_query_string(guest, "report:1", store=True, max_uses=20)
        # An ordinary scoped view: the phantom account is the user there...
        response = self.client.get(f"/member/1/{qs}")
        self.assertEqual(response.status_code, 200)
        self.assertIn("user=guest-bob recipient=user link", response.content.decode())
        # ...without a session, and only in its scope.
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.assertEqual(self.client.get(f"/member/2/{qs}").status_code, 403)
        # It can't log in with a password.
        self.assertFalse(self.client.login(username="guest-bob", password=""))


class HostileRecipientTests(CreateUserMixin, TestCase):
    """A recipient is an email address or a name: control characters are refused before any query, on every database and at every way of issuing."""

    RECIPIENTS = [
        "bob\x00@example.com",  # PostgreSQL's text refuses NUL: a DataError
        "bob@example.com\r\nINFO forged log line",
        "bob\n@example.com",
        "\x1b[31mbob@example.com",  # a terminal escape
        "bob\x7f@example.com",
        "bob\x85@example.com",  # NEL, a C1 control character
    ]

    def issue_with_api(self, recipient):
        with self.assertRaisesMessage(ValueError, "control characters"):
            get_guest_token(recipient, "report:1")
        with self.assertRaisesMessage(ValueError, "control characters"):
            issue_guest_tokens(["alice@example.com", recipient], "report:1")

    def issue_with_command(self, recipient):
        from django.core.management import CommandError, call_command

        with self.assertRaisesMessage(CommandError, "control characters"):
            call_command(
                "sesame_db_issue", guest=recipient, scope="report:1", verbosity=0
            )

    def issue_with_admin_form(self, recipient):
        from django.contrib import admin

        from sesame_db.admin.forms import IssueLinkForm

        request = RequestFactory().post("/")
        request.user = self.user
        form = IssueLinkForm(
            {"recipient": recipient, "scope": "report:1", "target": "/"},
            request=request,
            admin_site=admin.site,
        )
        self.assertFalse(form.is_valid())
        self.assertIn("recipient", form.errors)

    def test_control_characters_are_refused(self):
        for issue in [
            self.issue_with_api,
            self.issue_with_command,
            self.issue_with_admin_form,
        ]:
            for recipient in self.RECIPIENTS:
                with self.subTest(issue=issue.__name__, recipient=recipient):
                    issue(recipient)
        self.assertFalse(IssuedToken.objects.exists())

    def test_names_and_addresses_are_accepted(self):
        for recipient in ["Zoë Ångström", "bob+reports@example.com", "李雷", "O'Brien"]:
            with self.subTest(recipient=recipient):
                token, link = issue_guest_token(recipient, "report:1")
                link.refresh_from_db()
                self.assertEqual(link.recipient, recipient)


class GuestsRequireAScopeTests(GuestTestCase):
    """Every entry point that accepts guest links requires a scope: guest links always have one."""

    def test_at_each_check(self):
        class UnscopedView(TokenAuthenticationMixin, View):
            guests = True

            def get(self, request):
                return HttpResponse("reached")

        class FormattedToNothing(UnscopedView):
            scope = "{kind}"

        events = self.events()
        factory = RequestFactory()
        request = factory.get(self.url("/"))
        entries = [
            ("check_link", lambda token: check_link(token, guests=True)),
            (
                "check_link",
                lambda token: check_link(request, "", guests=True, token=token),
            ),
            (
                "acheck_link",
                lambda token: async_to_sync(acheck_link)(token, guests=True),
            ),
            (
                "UnscopedView",
                lambda token: UnscopedView.as_view()(factory.get(self.url("/", token))),
            ),
            (
                "FormattedToNothing",
                lambda token: FormattedToNothing.as_view()(
                    factory.get(self.url("/", token)), kind=""
                ),
            ),
        ]
        for name, call in entries:
            # With the guest link, and without a token.
            for token in [self.token, None]:
                with (
                    self.subTest(name, token=token),
                    # Outside assertRaises, which swallows the exception:
                    # assertNumQueries doesn't count when one goes through.
                    self.assertNumQueries(0),
                    self.assertRaisesMessage(
                        ImproperlyConfigured,
                        f"{name}(guests=True) requires a scope: guest links always have one",
                    ),
                ):
                    call(token)
        # Nothing was used or recorded.
        self.link.refresh_from_db()
        self.assertEqual(self.link.use_count, 0)
        self.assertEqual(self.events(), events)

"""Tests of :mod:`sesame_db.admin.forms`, through the pages that show them: issuing and shortening."""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sesame_db.admin import (
    IssuedTokenAdmin,
    IssuedTokenChangeForm,
)
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import get_user
from tests import admin_site
from tests.admin.base import (
    CHANGE,
    CHANGELIST,
    HOUR,
    ISSUE,
    AdminTestCase,
    url,
)


class ShortenExpiryTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)
        self.expires_at = (timezone.now() + 2 * HOUR).replace(microsecond=123456)
        self.token, self.record = self.issue()
        self.set_state(self.record, expires_at=self.expires_at)

    def post(self, when, record=None):
        record = record or self.record
        data: dict[str, Any] = {"expires_at_0": "", "expires_at_1": ""}
        if when is not None:
            data = {
                "expires_at_0": when.strftime("%Y-%m-%d"),
                "expires_at_1": when.strftime("%H:%M:%S"),
            }
        return self.client.post(url(CHANGE, record.pk), data)

    def test_field_and_help_text(self):
        response = self.client.get(url(CHANGE, self.record.pk))
        self.assertContains(response, 'name="expires_at_0"')
        self.assertContains(response, "Shorten the expiry")
        self.assertContains(response, "can’t be extended")
        # Nothing else is editable.
        form = response.context["adminform"].form
        self.assertEqual(list(form.fields), ["expires_at"])

    def test_shorten(self):
        earlier = timezone.now() + HOUR
        response = self.post(earlier)
        self.assertRedirects(response, url(CHANGELIST))
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, earlier.replace(microsecond=0))
        self.assertEqual(get_user(self.token), self.user)
        change = LogEntry.objects.get()
        self.assertEqual(change.user, self.superuser)
        self.assertEqual(
            change.object_repr,
            f"Link #{self.record.pk} for {self.user.get_username()}"
            + (f" ({self.record.scope})" if self.record.scope else ""),
        )
        self.assertIn("Expires at", change.change_message)

    def test_shorten_to_the_past_ends_the_link(self):
        response = self.post(timezone.now() - HOUR)
        self.assertEqual(response.status_code, 302)
        self.record.refresh_from_db()
        self.assertEqual(self.record.status, IssuedToken.Status.EXPIRED)
        self.assertIsNone(get_user(self.token))

    def test_extend_is_refused(self):
        response = self.post(self.expires_at + HOUR)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "The expiry can only be shortened")
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_removing_the_expiry_is_refused(self):
        response = self.post(None)
        self.assertContains(response, "The expiry can only be shortened")
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_resubmitting_unchanged(self):
        # The form shows whole seconds.
        response = self.post(self.expires_at)
        self.assertEqual(response.status_code, 302)
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, self.expires_at)

    def test_link_without_expiry(self):
        _, record = self.issue()
        self.assertIsNone(record.expires_at)
        later = timezone.now() + 1000 * HOUR
        self.assertEqual(self.post(later, record).status_code, 302)
        record.refresh_from_db()
        self.assertEqual(record.expires_at, later.replace(microsecond=0))

    def test_link_without_expiry_stays_without(self):
        _, record = self.issue()
        self.assertEqual(self.post(None, record).status_code, 302)
        record.refresh_from_db()
        self.assertIsNone(record.expires_at)

    def test_revoke_permission_shortens(self):
        self.login(self.revoker)
        self.assertEqual(self.post(timezone.now() + HOUR).status_code, 302)
        self.record.refresh_from_db()
        self.assertLess(self.record.expires_at, self.expires_at)

    def test_inactive_links_are_read_only(self):
        now = timezone.now()
        states: list[dict[str, Any]] = [
            {"revoked_at": now},
            {"expires_at": now - HOUR},
            {"max_uses": 1, "use_count": 1},
        ]
        for fields in states:
            with self.subTest(fields=fields):
                _, record = self.issue()
                self.set_state(record, **fields)
                response = self.client.get(url(CHANGE, record.pk))
                self.assertNotContains(response, 'name="expires_at_0"')
                self.assertNotContains(response, 'name="_save"')

    def test_conditional_update_never_extends(self):
        # The row was shortened by someone else after this form loaded it.
        model_admin = IssuedTokenAdmin(IssuedToken, admin_site.site)
        stale = IssuedToken.objects.get(pk=self.record.pk)
        sooner = timezone.now() + 10 * datetime.timedelta(minutes=1)
        self.set_state(self.record, expires_at=sooner, use_count=1)
        form = IssuedTokenChangeForm(
            {"expires_at": timezone.now() + HOUR}, instance=stale
        )
        self.assertTrue(form.is_valid(), form.errors)
        request = RequestFactory().post("/")
        request.session = self.client.session
        storage = FallbackStorage(request)
        setattr(request, "_messages", storage)  # noqa: B010 - as MessageMiddleware does
        model_admin.save_model(request, form.instance, form, change=True)
        self.record.refresh_from_db()
        self.assertEqual(self.record.expires_at, sooner)
        # Nor does it overwrite the use counted meanwhile.
        self.assertEqual(self.record.use_count, 1)
        self.assertEqual(
            [str(m) for m in storage],
            ["The expiry wasn't changed: it was already earlier."],
        )


class IssueViewTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.login(self.superuser)

    def post(self, **data):
        data.setdefault("user", self.user.pk)
        data.setdefault("target", "/")
        return self.client.post(url(ISSUE), data)

    def issued_link(self, response):
        match = re.search(
            r'<input type="text" readonly id="issued-link"[^>]* value="([^"]*)"',
            response.content.decode(),
        )
        self.assertIsNotNone(match, "no issued link on the page")
        assert match is not None
        return match.group(1).replace("&amp;", "&")

    def token_of(self, link):
        return parse_qs(urlsplit(link).query)["sesame"][0]

    def test_url(self):
        self.assertEqual(url(ISSUE), "/admin/sesame_db/issuedtoken/issue/")

    @override_settings(SESAME_ADMIN_SCOPES=["login", "report:q3"])
    def test_form(self):
        response = self.client.get(url(ISSUE))
        for name in ["user", "scope", "expires_in", "max_uses", "label", "target"]:
            self.assertContains(response, f'name="{name}"')
        self.assertContains(response, '<input type="submit" value="Issue link"')
        self.assertContains(response, 'list="sesame-db-scopes"')
        self.assertContains(response, '<option value="report:q3"></option>', html=True)
        self.assertContains(response, 'name="target" value="/"')
        # The user is picked by id, with a lookup link to the user admin.
        self.assertContains(response, 'class="vForeignKeyRawIdAdminField"')
        self.assertContains(response, reverse("admin:auth_user_changelist"))
        self.assertIsNone(response.context["form"]["expires_in"].initial)

    @override_settings(SESAME_MAX_AGE=3600)
    def test_expires_in_defaults_to_max_age(self):
        response = self.client.get(url(ISSUE))
        self.assertContains(response, 'name="expires_in" value="60"')

    def test_initial_values_from_query_string(self):
        response = self.client.get(url(ISSUE) + f"?user={self.user.pk}&scope=s&label=L")
        self.assertContains(response, f'name="user" value="{self.user.pk}"')
        self.assertContains(response, 'name="scope" value="s"')

    def test_issue(self):
        before = timezone.now()
        response = self.post(
            scope="report:q3",
            expires_in="90",
            max_uses="3",
            label="Q3 report for the board",
            target="/report/3/?tab=summary#top",
        )
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "sesame_db/admin/issued.html")
        link = self.issued_link(response)
        parts = urlsplit(link)
        self.assertEqual(
            (parts.scheme, parts.netloc, parts.path),
            ("http", "testserver", "/report/3/"),
        )
        self.assertEqual(parts.fragment, "top")
        self.assertEqual(parse_qs(parts.query)["tab"], ["summary"])
        token = self.token_of(link)
        record = IssuedToken.objects.get()
        self.assertEqual(record.issued_by, self.superuser)
        self.assertEqual(record.user, self.user)
        self.assertEqual(record.scope, "report:q3")
        self.assertEqual(record.label, "Q3 report for the board")
        self.assertEqual(record.max_uses, 3)
        assert record.expires_at is not None
        self.assertAlmostEqual(
            record.expires_at,
            before + datetime.timedelta(minutes=90),
            delta=datetime.timedelta(seconds=10),
        )
        event = TokenEvent.objects.get(token=record)
        self.assertEqual(
            (event.kind, event.actor, event.path),
            ("issued", self.superuser, url(ISSUE)),
        )
        self.assertContains(response, f'href="{url(CHANGE, record.pk)}"')
        # The link works.
        request = RequestFactory().get(parts.path, {"sesame": token})
        self.assertEqual(get_user(request, "report:q3"), self.user)
        self.assertIsNone(get_user(token))

    def test_link_shown_once_and_not_cached(self):
        response = self.post()
        link = self.issued_link(response)
        token = self.token_of(link)
        content = response.content.decode()
        self.assertEqual(content.count(token), 1)
        self.assertEqual(content.count('id="issued-link"'), 1)
        self.assertIn("no-store", response["Cache-Control"])
        self.assertContains(response, ">Copy</button>")
        self.assertContains(response, "sesame_db/admin/copy_link.js")
        self.assertTrue(link.startswith("http://testserver/?sesame=~"))

    def test_default_target_and_expiry(self):
        response = self.post(target="")
        self.assertContains(response, "This field is required")
        response = self.post()
        self.assertTrue(
            self.issued_link(response).startswith("http://testserver/?sesame=")
        )
        self.assertIsNone(IssuedToken.objects.get().expires_at)

    @override_settings(SESAME_MAX_AGE=600)
    def test_empty_expiry_uses_max_age(self):
        before = timezone.now()
        self.post(expires_in="")
        expires_at = IssuedToken.objects.get().expires_at
        assert expires_at is not None
        self.assertAlmostEqual(
            expires_at,
            before + datetime.timedelta(seconds=600),
            delta=datetime.timedelta(seconds=10),
        )

    @override_settings(SESAME_TOKEN_NAME="login")
    def test_token_name(self):
        link = self.issued_link(self.post(target="/r/?a=1"))
        self.assertRegex(link, r"^http://testserver/r/\?a=1&login=~")

    def test_same_host_absolute_target(self):
        link = self.issued_link(self.post(target="http://testserver/r/"))
        self.assertTrue(link.startswith("http://testserver/r/?sesame="))

    def test_external_targets_are_refused(self):
        for target in [
            "https://evil.example/",
            "//evil.example/path",
            "http://testserver.evil.example/",
            "javascript:alert(1)",
            "/\\evil.example",
            "relative/path",
            "ftp://testserver/",
        ]:
            with self.subTest(target=target):
                response = self.post(target=target)
                self.assertEqual(response.status_code, 200)
                self.assertContains(response, "Enter a path on this site")
                self.assertNotContains(response, 'id="issued-link"')
        self.assertFalse(IssuedToken.objects.exists())

    def test_target_with_token_parameter_is_refused(self):
        response = self.post(target="/?sesame=x")
        self.assertContains(response, "Remove the sesame parameter")
        self.assertFalse(IssuedToken.objects.exists())

    def test_invalid_values(self):
        for data, error in [
            ({"user": "999999"}, "Select a valid choice"),
            ({"user": "abc"}, "Select a valid choice"),
            ({"max_uses": "0"}, "greater than or equal to 1"),
            ({"expires_in": "0"}, "greater than or equal to 1"),
            ({"expires_in": "99999999"}, "less than or equal to"),
            ({"scope": "x" * 256}, "at most 255 characters"),
        ]:
            with self.subTest(data=data):
                response = self.post(**data)
                self.assertContains(response, error)
        self.assertFalse(IssuedToken.objects.exists())

    def test_inactive_user_is_refused(self):
        self.user.is_active = False
        self.user.save()
        response = self.post()
        self.assertContains(response, "This user is inactive")
        self.assertFalse(IssuedToken.objects.exists())

    def dump_database(self):
        """Every value of every row of every table, sessions decoded."""
        chunks = []
        for model in apps.get_models(include_auto_created=True):
            for row in model._base_manager.values_list():
                chunks.append(repr(row))
        for session in Session.objects.all():
            chunks.append(repr(session.get_decoded()))
        return "\n".join(chunks)

    def test_token_is_neither_stored_nor_logged(self):
        records = []

        class Handler(logging.Handler):
            def emit(self, record):
                records.append(self.format(record))

        handler = Handler(level=logging.DEBUG)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        loggers = [logging.getLogger(name) for name in ("django", "sesame_db")]
        old_levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
        try:
            with CaptureQueriesContext(connection) as queries:
                response = self.post(scope="s", label="L", target="/r/")
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            for logger, level in zip(loggers, old_levels, strict=True):
                logger.setLevel(level)
        token = self.token_of(self.issued_link(response))
        # Queries were logged: the capture works.
        self.assertTrue(any("INSERT" in line for line in records))
        forms = [token, token[1:], token[-16:]]
        for secret in forms:
            self.assertFalse([line for line in records if secret in line])
            self.assertFalse(
                [q["sql"] for q in queries.captured_queries if secret in q["sql"]]
            )
            self.assertNotIn(secret, self.dump_database())
            for morsel in response.cookies.values():
                self.assertNotIn(secret, morsel.value)
        # The admin's history records the link, not its token.
        entry = LogEntry.objects.get()
        record = IssuedToken.objects.get()
        self.assertEqual(entry.object_id, str(record.pk))
        # Named so that a person recognizes it.
        self.assertEqual(entry.object_repr, f"Link #{record.pk} for john (s)")

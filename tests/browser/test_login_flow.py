"""
Login by email in headless Chromium: request a link, open it from the email, confirm, land logged in.

The confirmation page's ``Referrer-Policy`` matters here: with
``no-referrer``, Chromium sends ``Origin: null`` with the form's POST, and
Django's CSRF check refuses every confirmation. Fixtures are in
``conftest.py``.

"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from sesame_db.login import flow
from sesame_db.models import IssuedToken

pytestmark = pytest.mark.browser

link_re = re.compile(r"(http://\S+/auth/login/\?\S+)")
code_re = re.compile(r"where you asked for the link: (\d+)")


@pytest.fixture(autouse=True)
def empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def ask_for_a_link(page, expect, email):
    page.goto("/auth/login/request/")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()


def test_request_open_confirm_and_refuse_elsewhere(new_page, expect, live_server):
    alice = get_user_model().objects.create_user("alice", "alice@example.com")
    page = new_page()
    ask_for_a_link(page, expect, "alice@example.com")
    [message] = mail.outbox
    [link] = link_re.findall(str(message.body))

    # The link opens a confirmation page: nothing is used yet.
    response = page.goto(link)
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    record = IssuedToken.objects.get(scope=flow.SCOPE)
    assert record.use_count == 0

    # Confirming logs in and redirects to LOGIN_REDIRECT_URL.
    with page.expect_response(lambda r: r.request.method == "POST") as post:
        page.get_by_role("button", name="Log in").click()
    # The POST passed Django's CSRF check with the origin that Chromium sent.
    assert post.value.status == 302
    assert response.headers["referrer-policy"] == "strict-origin"
    expect(page.locator("#user")).to_have_text("alice")
    record.refresh_from_db()
    assert record.use_count == 1

    # The same link in a second browser: refused, with the page that says so.
    other = new_page()
    response = other.goto(link)
    assert response is not None and response.status == 403
    expect(
        other.get_by_role("heading", name="Open the link in the same browser")
    ).to_be_visible()
    other.goto("/")
    expect(other.locator("#user")).to_have_text("nobody")
    assert alice.pk == record.user_id


def test_link_opened_elsewhere_still_works_in_the_right_browser(
    new_page, expect, live_server
):
    get_user_model().objects.create_user("bob", "bob@example.com")
    page = new_page()
    ask_for_a_link(page, expect, "bob@example.com")
    [link] = link_re.findall(str(mail.outbox[-1].body))

    # Opened first in another browser, e.g. a phone: not used.
    other = new_page()
    response = other.goto(link)
    assert response is not None and response.status == 403
    assert IssuedToken.objects.get(scope=flow.SCOPE).use_count == 0

    # The code of the email, typed in the browser that asked.
    [code] = code_re.findall(str(mail.outbox[-1].body))
    page.goto("/auth/login/code/")
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user")).to_have_text("bob")
    assert IssuedToken.objects.get(scope=flow.SCOPE).use_count == 1


def test_confirmation_page_of_any_link_passes_the_csrf_check(
    new_page, expect, live_server
):
    """sesame_db/confirm.html, for @authenticate(confirm=True): the same bug, fixed there too."""
    from sesame_db import utils

    carol = get_user_model().objects.create_user("carol", "carol@example.com")
    token, _ = utils.issue_token(carol)
    page = new_page()
    page.goto(f"/confirmed/?sesame={token}")
    with page.expect_response(lambda r: r.request.method == "POST") as post:
        page.get_by_role("button", name="Continue").click()
    assert post.value.status == 200
    expect(page.locator("body")).to_have_text("hello carol (POST)")

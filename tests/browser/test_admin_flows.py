"""
End-to-end tests of the admin of issued links, in headless Chromium.

Staff issue a link, its recipient opens it in another browser, staff revoke
it, and the link's audit trail shows what happened. Fixtures are in
``conftest.py``.

"""

from __future__ import annotations

import datetime
import re
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.contrib.auth import get_user_model

from sesame_db import store
from sesame_db.models import IssuedToken

pytestmark = pytest.mark.browser

LINKS = "/admin/sesame_db/issuedtoken/"
# Issue, view and revoke links, and read their audit trail.
STAFF_PERMISSIONS = [
    "sesame_db.add_issuedtoken",
    "sesame_db.view_issuedtoken",
    "sesame_db.revoke_issuedtoken",
    "sesame_db.view_tokenevent",
]
VIEW_PERMISSIONS = ["sesame_db.view_issuedtoken", "sesame_db.view_tokenevent"]


def change_url(record):
    return f"{LINKS}{record.pk}/change/"


def revoke_url(record):
    return f"{LINKS}{record.pk}/revoke/"


def with_path(url, path):
    return urlunsplit(urlsplit(url)._replace(path=path))


def revoke_button(page):
    """The "Revoke" link or button of a change page."""
    return page.get_by_role("link", name="Revoke", exact=True).or_(
        page.get_by_role("button", name="Revoke", exact=True)
    )


def make_user(username):
    return get_user_model().objects.create_user(username, f"{username}@example.com")


def test_issue_open_revoke_and_audit(
    new_page, expect, log_in, make_staff, screenshot, live_server
):
    staff = make_staff("staff", *STAFF_PERMISSIONS)
    alice = make_user("alice")
    bob = make_user("bob")
    # Earlier links, so that the list isn't empty.
    store.issue(bob, "report:7", label="Q2 report", max_uses=1)
    store.issue(alice, "", label="Login link", max_age=3600)

    staff_page = new_page()
    log_in(staff_page, "staff")

    # 1. Staff issue a link for one report from the list of links.
    staff_page.goto(LINKS)
    screenshot(staff_page, "changelist.png")
    staff_page.locator(".object-tools").get_by_role("link", name="Issue a link").click()
    expect(staff_page).to_have_url(re.compile(f"{LINKS}issue/$"))
    form = staff_page.locator("#content form")
    form.locator("[name=user]").fill(str(alice.pk))
    form.locator("[name=scope]").fill("report:42")
    form.locator("[name=target]").fill("/report/42/")
    form.locator("[name=max_uses]").fill("3")
    form.locator("[name=label]").fill("Q3 report")
    screenshot(staff_page, "issue.png")
    form.get_by_role("button", name="Issue link").click()

    issued = staff_page.locator("#issued-link")
    expect(issued).to_have_value(re.compile(r"^http://"))
    url = issued.input_value()
    assert url.startswith(f"{live_server.url}/report/42/?")
    record = IssuedToken.objects.get(label="Q3 report")
    assert (record.user, record.scope, record.max_uses, record.issued_by) == (
        alice,
        "report:42",
        3,
        staff,
    )
    assert record.expires_at is None
    expect(staff_page.get_by_role("button", name="Copy")).to_be_visible()
    screenshot(staff_page, "issued.png")

    # 2. The recipient, in another browser without a session, opens the
    # report, and only that report.
    recipient = new_page()
    response = recipient.goto(url)
    assert response is not None and response.status == 200
    expect(recipient.locator("body")).to_have_text("report 42 for alice")
    response = recipient.goto(with_path(url, "/report/43/"))
    assert response is not None and response.status == 403

    # 3. Staff revoke it from its change page, with a reason.
    staff_page.locator(f'a[href="{change_url(record)}"]').first.click()
    expect(staff_page).to_have_url(re.compile(f"{change_url(record)}$"))
    screenshot(staff_page, "change.png")
    revoke_button(staff_page).click()
    expect(staff_page).to_have_url(re.compile(f"{revoke_url(record)}$"))
    staff_page.locator("textarea[name=reason]").fill("sent to the wrong person")
    screenshot(staff_page, "revoke.png")
    staff_page.get_by_role("button", name="Revoke", exact=True).click()
    expect(staff_page).to_have_url(re.compile(f"{change_url(record)}$"))
    record.refresh_from_db()
    assert record.status == IssuedToken.Status.REVOKED
    assert (record.revoked_by, record.revoke_reason) == (
        staff,
        "sent to the wrong person",
    )
    # A revoked link can't be revoked again.
    expect(revoke_button(staff_page)).to_have_count(0)

    # 4. The link no longer opens the report.
    response = recipient.goto(url)
    assert response is not None and response.status == 403

    # 5. The link's audit trail, newest first.
    staff_page.reload()
    events = staff_page.locator("#link-events tbody tr")
    expect(events).to_have_count(5)
    rejected_revoked, revoked, rejected_scope, used, issued_event = (
        events.nth(index) for index in range(5)
    )
    expect(rejected_revoked).to_contain_text("rejected")
    expect(rejected_revoked).to_contain_text("revoked")
    expect(rejected_revoked).to_contain_text("127.0.0.1")
    expect(revoked).to_contain_text("revoked")
    expect(revoked).to_contain_text("staff")
    expect(revoked).to_contain_text("sent to the wrong person")
    expect(rejected_scope).to_contain_text("rejected")
    expect(rejected_scope).to_contain_text("wrong scope")
    expect(used).to_contain_text("used")
    expect(used).to_contain_text("127.0.0.1")
    expect(issued_event).to_contain_text("issued")
    expect(issued_event).to_contain_text("staff")
    staff_page.locator("#link-events").scroll_into_view_if_needed()
    screenshot(staff_page, "events.png")


def test_copy_button_copies_the_link_with_its_expiry(
    new_page, expect, log_in, make_staff, live_server
):
    make_staff("staff", *STAFF_PERMISSIONS)
    alice = make_user("alice")
    page = new_page()
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_server.url
    )
    log_in(page, "staff")
    page.goto(f"{LINKS}issue/")
    page.locator("[name=user]").fill(str(alice.pk))
    page.locator("[name=scope]").fill("report:42")
    page.locator("[name=target]").fill("/report/42/")
    page.locator("[name=expires_in]").fill("60")
    page.get_by_role("button", name="Issue link").click()
    url = page.locator("#issued-link").input_value()
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == url
    record = IssuedToken.objects.get()
    assert record.expires_at == record.created + datetime.timedelta(minutes=60)


def test_revoke_selected_links(new_page, expect, log_in, make_staff):
    staff = make_staff("staff", *STAFF_PERMISSIONS)
    alice = make_user("alice")
    token, first = store.issue(alice, "report:1", label="first")
    _, second = store.issue(alice, "report:2", label="second")
    _, kept = store.issue(alice, "report:3", label="kept")

    page = new_page()
    log_in(page, "staff")
    page.goto(LINKS)
    for record in (first, second):
        page.locator(f"input.action-select[value='{record.pk}']").check()
    page.locator("select[name=action]").select_option(label="Revoke selected links")
    # The button says "Go" before Django 6.0 and "Run" since.
    page.locator("#changelist-form").get_by_role(
        "button", name=re.compile(r"^(Go|Run)$")
    ).click()
    expect(page.locator("textarea[name=reason]")).to_be_visible()
    page.locator("textarea[name=reason]").fill("project cancelled")
    page.get_by_role("button", name="Revoke", exact=True).click()
    expect(page.locator("textarea[name=reason]")).to_have_count(0)

    for record in (first, second, kept):
        record.refresh_from_db()
    assert [record.status for record in (first, second, kept)] == [
        IssuedToken.Status.REVOKED,
        IssuedToken.Status.REVOKED,
        IssuedToken.Status.ACTIVE,
    ]
    assert {(r.revoked_by, r.revoke_reason) for r in (first, second)} == {
        (staff, "project cancelled")
    }
    response = new_page().goto(f"/report/1/?sesame={token}")
    assert response is not None and response.status == 403


def test_view_only_staff_cannot_revoke(new_page, expect, log_in, make_staff):
    make_staff("auditor", *VIEW_PERMISSIONS)
    alice = make_user("alice")
    token, record = store.issue(alice, "report:42", label="Q3 report")

    page = new_page()
    log_in(page, "auditor")
    # The list of links, without a revoke action.
    page.goto(LINKS)
    expect(page.locator(f'a[href="{change_url(record)}"]').first).to_be_visible()
    expect(
        page.locator("select[name=action] option").filter(has_text="Revoke")
    ).to_have_count(0)
    # The change page, without a revoke button.
    page.goto(change_url(record))
    expect(page.locator("#content")).to_be_visible()
    expect(revoke_button(page)).to_have_count(0)
    # The revocation page is forbidden, for a GET and for a valid POST.
    response = page.goto(revoke_url(record))
    assert response is not None and response.status == 403
    [csrf_token] = [
        cookie["value"]
        for cookie in page.context.cookies()
        if cookie["name"] == "csrftoken"
    ]
    response = page.request.post(
        revoke_url(record),
        form={"csrfmiddlewaretoken": csrf_token, "reason": "not allowed"},
    )
    assert response.status == 403
    record.refresh_from_db()
    assert record.status == IssuedToken.Status.ACTIVE
    # And the link still works.
    response = new_page().goto(f"/report/42/?sesame={token}")
    assert response is not None and response.status == 200

"""
The list of issued links fits a 1280 px wide window, in headless Chromium.

With the admin's navigation sidebar open, as for a new user, and realistic
rows: long usernames, scopes and labels, expiring and used links, and an
issuer on each.

"""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from sesame_db import store
from sesame_db.models import IssuedToken

from .conftest import CHROMIUM_ARGS, PASSWORD, TIMEOUT, VIEWPORT, artifacts_dir

pytestmark = pytest.mark.browser

LINKS = "/admin/sesame_db/issuedtoken/"


def fill_links():
    User = get_user_model()
    staff = User.objects.create_superuser(
        "support.staff.member", "support@example.com", PASSWORD
    )
    names = ["alexandra.konstantinopoulou", "bob", "jean-christophe.de-la-fontaine"]
    users = [User.objects.create_user(name, f"{name}@example.com") for name in names]
    now = timezone.now()
    for i in range(30):
        user = users[i % len(users)]
        _, record = store.issue(
            user,
            f"reports.quarterlyreport:{1000 + i}" if i % 3 else "",
            label=f"Quarterly report for the board of directors, draft {i}"
            if i % 2
            else "Login link",
            max_age=datetime.timedelta(days=7) if i % 4 else None,
            max_uses=20 if i % 5 else None,
            issued_by=staff,
        )
        if i % 3 == 1:
            IssuedToken.objects.filter(pk=record.pk).update(
                use_count=3, last_used_at=now
            )
    # Guest links, whose cell names the recipient and the sharer.
    store.issue_guests(
        [f"{name}@example.com" for name in names],
        "reports.quarterlyreport:1000",
        label="Quarterly report for the board of directors, shared",
        issued_by=staff,
    )
    return staff


@pytest.fixture
def sidebar_page(browser, live_server):
    """A page in a context with the navigation sidebar in its default state: open."""
    context = browser.new_context(
        base_url=live_server.url, viewport=VIEWPORT, locale="en-US"
    )
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.parametrize("sidebar", [True, False], ids=["sidebar", "no-sidebar"])
def test_changelist_fits_1280_px(sidebar_page, expect, sidebar):
    assert VIEWPORT["width"] == 1280
    assert "--window-size=1280,900" in CHROMIUM_ARGS
    staff = fill_links()
    page = sidebar_page
    if not sidebar:
        page.context.add_init_script(
            "localStorage.setItem('django.admin.navSidebarIsOpen', 'false')"
        )
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(staff.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text(staff.get_username())
    page.goto(LINKS)
    expect(page.locator("#result_list tbody tr")).to_have_count(33)
    page.wait_for_load_state()
    expect(page.locator("#nav-sidebar")).to_be_visible(visible=sidebar)
    layout = page.evaluate(
        """() => {
            const root = document.documentElement;
            const results = document.querySelector('#changelist .results');
            // The lines of a header label: the distinct tops of its text's boxes.
            const lines = (el) => {
                const tops = new Set();
                const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
                while (walker.nextNode()) {
                    if (!walker.currentNode.textContent.trim()) continue;
                    const range = document.createRange();
                    range.selectNodeContents(walker.currentNode);
                    for (const rect of range.getClientRects()) tops.add(Math.round(rect.top));
                }
                return tops.size;
            };
            return {
                scrollWidth: root.scrollWidth,
                clientWidth: root.clientWidth,
                resultsScrollWidth: results.scrollWidth,
                resultsClientWidth: results.clientWidth,
                headers: [...document.querySelectorAll('#result_list thead th')]
                    .filter((th) => th.innerText.trim())
                    .map((th) => ({label: th.innerText.trim(), lines: lines(th)})),
            };
        }"""
    )
    # For the CI artifacts only: the documentation shows the list in
    # test_admin_flows.py.
    path = (
        artifacts_dir()
        / f"changelist-1280-{'sidebar' if sidebar else 'no-sidebar'}.png"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path)
    # No horizontal scrollbar: neither the page's nor the list's own.
    assert layout["scrollWidth"] <= layout["clientWidth"], layout
    assert layout["resultsScrollWidth"] <= layout["resultsClientWidth"], layout
    # Every column is there, and no header label wraps over more than two lines.
    assert [h["label"] for h in layout["headers"]] == [
        "USER OR GUEST",
        "SCOPE AND LABEL",
        "STATUS",
        "USES",
        "EXPIRES AT",
        "CREATED",
    ], layout["headers"]
    wrapped = [h for h in layout["headers"] if h["lines"] > 2]
    assert not wrapped, layout["headers"]

"""
Fixtures of the end-to-end tests of the admin: a live server and headless Chromium.

The tests drive Debian's Chromium (``/usr/bin/chromium``, or ``SESAME_CHROMIUM``)
with Playwright; Playwright's own browser download isn't used. Without Chromium
or Playwright every test here skips with the reason, which fails in CI.

Screenshots go to ``SESAME_ARTIFACTS`` (default: ``artifacts/screenshots``), with
one of the page each failing test left open. Set ``SESAME_DOCS_SCREENSHOTS=1``
to refresh the documentation's copies in ``docs/_static/admin/`` as well: each
run changes their bytes (times, ports, tokens), so they aren't rewritten
unless asked.

"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings as django_settings
from django.test.utils import override_settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = REPO / "docs" / "_static" / "admin"
CHROMIUM = os.environ.get("SESAME_CHROMIUM", "/usr/bin/chromium")
# From "Headless Chromium for admin end-to-end tests" in the shared recipes:
# root needs --no-sandbox, and without the networking flags Chromium keeps
# trying hosts that CI machines refuse.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# Milliseconds; Playwright's default of 30 s only delays the report of a failure.
TIMEOUT = 10_000
PASSWORD = "letmein"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: an end-to-end test in headless Chromium"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_test_failed = report.failed


def artifacts_dir() -> Path:
    return Path(
        os.environ.get("SESAME_ARTIFACTS") or REPO / "artifacts" / "screenshots"
    )


@pytest.fixture(scope="session")
def live_server(django_db_setup, request):
    """
    Override pytest-django's live server to serve static files from every app.

    pytest-django serves them through the staticfiles finders only when
    ``django.contrib.staticfiles`` is installed, which the test settings
    don't need; the finders work without it, as in
    :class:`~django.contrib.staticfiles.testing.StaticLiveServerTestCase`.
    Depending on ``django_db_setup`` makes the server stop before the test
    database is destroyed.

    """
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from pytest_django.live_server_helper import LiveServer

    addr = (
        request.config.getvalue("liveserver")
        or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS")
        or "localhost"
    )
    server = LiveServer(addr, start=False)
    server.thread.static_handler = StaticFilesHandler
    # The handler reads STATIC_URL when the thread starts.
    with override_settings(STATIC_URL=static_url()):
        server.start()
    yield server
    server.stop()


def static_url() -> str:
    return django_settings.STATIC_URL or "/static/"


@pytest.fixture(autouse=True)
def browser_settings(settings):
    settings.ROOT_URLCONF = "tests.browser.urls"
    settings.STATIC_URL = static_url()
    settings.SESAME_STORE = True


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """
    Start headless Chromium for the tests of this package, then stop it.

    Playwright's synchronous API keeps an event loop running in the main
    thread while it's started. Django then refuses database queries unless
    ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set, and ``async_to_sync`` refuses to
    run, so both last only as long as the browser tests: the rest of the
    suite runs its async tests and keeps Django's safety check.

    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium package, or set SESAME_CHROMIUM"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright isn't installed: pip install playwright",
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            try:
                yield browser
            finally:
                browser.close()


@pytest.fixture
def expect(browser):
    """Playwright's ``expect``, imported once the ``browser`` fixture found Playwright."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    return expect


@pytest.fixture
def new_page(browser: Browser, live_server, request) -> Iterator[Callable[[], Page]]:
    """
    Return a function that opens a page in a new browser context.

    Each context has its own cookies: one per person in a test. When the
    test fails, each page is saved as a screenshot, for the CI artifacts.

    """
    pages: list[Page] = []

    def new_page() -> Page:
        context = browser.new_context(
            base_url=live_server.url, viewport=VIEWPORT, locale="en-US"
        )
        context.set_default_timeout(TIMEOUT)
        # Close the admin's navigation sidebar: the screenshots then show
        # every column of the list of links.
        context.add_init_script(
            "localStorage.setItem('django.admin.navSidebarIsOpen', 'false')"
        )
        page = context.new_page()
        pages.append(page)
        return page

    yield new_page
    failed = getattr(request.node, "browser_test_failed", False)
    for index, page in enumerate(pages):
        if failed and not page.is_closed():
            path = artifacts_dir() / f"failed-{request.node.name}-{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=path)
        page.context.close()


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """
    Return a function that saves a screenshot of a page's viewport as ``name``.

    The documentation's copy is refreshed too when ``SESAME_DOCS_SCREENSHOTS``
    is set.

    """

    def screenshot(page: Page, name: str) -> Path:
        path = artifacts_dir() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Assertions pass as soon as the HTML is there; wait for styles and scripts.
        page.wait_for_load_state()
        page.screenshot(path=path)
        if os.environ.get("SESAME_DOCS_SCREENSHOTS"):
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / name)
        return path

    return screenshot


@pytest.fixture
def make_staff(django_user_model) -> Callable[..., Any]:
    """Return a function that creates a staff user with the given permissions, as ``app_label.codename``."""
    from django.contrib.auth.models import Permission

    def make_staff(username: str, *permissions: str) -> Any:
        user = django_user_model.objects.create_user(
            username, f"{username}@example.com", PASSWORD, is_staff=True
        )
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label=app_label, codename=codename
                )
            )
        return user

    return make_staff


@pytest.fixture
def log_in(expect) -> Callable[[Page, str], None]:
    """Return a function that logs a user in through the admin's login form."""

    def log_in(page: Page, username: str) -> None:
        page.goto("/admin/login/?next=/admin/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#user-tools")).to_contain_text(username)

    return log_in

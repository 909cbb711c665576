"""
Smoke test of the demo site: start it as ``make demo`` does, follow its links.

The demo runs in a subprocess, on its own SQLite database in a temporary
directory and a free loopback port, with Django's development server; the
test talks to it over HTTP with :mod:`urllib`, as a browser would.

"""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "demo" / "manage.py"
URL_RE = re.compile(r"http://\S+")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.lines = lines

    @property
    def links(self) -> list[str]:
        """The URLs that the demo printed, before runserver's banner."""
        urls: list[str] = []
        for line in self.lines:
            if line.startswith("Or request a link"):
                return [*urls, *URL_RE.findall(line)]
            urls += URL_RE.findall(line)
        raise AssertionError("".join(self.lines))


@pytest.fixture
def demo(tmp_path) -> Iterator[Demo]:
    port = free_port()
    env = {
        **os.environ,
        "DEMO_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ["DJANGO_SETTINGS_MODULE", "DEMO_PGHOST", "DEMO_URLCONF"]:
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), "rundemo", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert process.stdout is not None
        # The links come first, then runserver's banner.
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Quit the server"):
                break
        else:
            pytest.fail("the demo stopped:\n" + "".join(lines))
        # Wait until the server answers.
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield Demo(process, lines)
    finally:
        if process.poll() is None:
            process.terminate()
        # Read what's left and close the pipes.
        process.communicate(timeout=10)


def browser() -> urllib.request.OpenerDirector:
    """An HTTP client with its own cookies, like a browser."""
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def get(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str, str]:
    """GET ``url``, following redirects; return the status, the final URL and the page."""
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, url, error.read().decode()


def log_in_to_the_admin(opener, base, username, password):
    _, _, page = get(opener, f"{base}/admin/login/")
    [csrf] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    data = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf,
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=data, headers={"Referer": f"{base}/admin/login/"}
    )
    with opener.open(request, timeout=10) as response:
        assert response.url == f"{base}/admin/", response.url


def test_demo_leads_with_stored_links_that_the_admin_lists(demo):
    output = "".join(demo.lines)
    login, share, admin, stateless, request_link = demo.links
    base = admin.split("/admin/")[0]
    # The stored links come first, then the admin and the staff login.
    assert output.index(login) < output.index(admin) < output.index(stateless)
    assert "/login/?sesame=~" in login
    assert "/reports/1/?sesame=~" in share
    assert "staff / staff" in output

    # The login link logs demo in and lands on the home page.
    visitor = browser()
    status, url, page = get(visitor, login)
    assert (status, url) == (200, f"{base}/")
    assert "demo" in page
    # The share link opens report 1.
    status, _, page = get(browser(), share)
    assert status == 200
    assert "Q3 sales" in page
    # The stateless link works too.
    assert get(browser(), stateless)[:2] == (200, f"{base}/")
    assert get(browser(), request_link)[0] == 200

    # Staff see both stored links in the admin, each used once.
    staff = browser()
    log_in_to_the_admin(staff, base, "staff", "staff")
    status, _, page = get(staff, admin)
    assert status == 200
    assert "Demo login link" in page
    assert "Share of Q3 sales" in page
    assert page.count("1 / ∞") == 1  # the login link
    assert page.count("1 / 5") == 1  # the share link


def test_refused_link_is_one_line_in_the_console(demo):
    login, share, *_ = demo.links
    # The share link opens report 1 only.
    status, _, _ = get(browser(), share.replace("/reports/1/", "/reports/2/"))
    assert status == 403
    # A tampered token.
    status, _, _ = get(browser(), share[:-1] + ("A" if share[-1] != "A" else "B"))
    assert status == 403
    # Stop the server to read everything it logged.
    demo.process.terminate()
    _, stderr = demo.process.communicate(timeout=10)
    assert "Traceback" not in stderr
    assert stderr.count("Forbidden (Permission denied): /reports/2/") == 1
    assert stderr.count("Forbidden (Permission denied): /reports/1/") == 1
    assert "used in the wrong scope 'report:2'" in stderr


def test_email_me_a_link_uses_the_login_flow(demo):
    *_, request_link = demo.links
    base = request_link.split("/auth/")[0]
    visitor = browser()
    status, url, page = get(visitor, request_link)
    assert (status, url) == (200, f"{base}/auth/login/request/")
    # In the demo's layout: its navigation, around sesame_db's form.
    assert 'href="/">Home</a>' in page, page
    assert 'name="email"' in page
    [csrf] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "email": "demo@example.com"}
    ).encode()
    request = urllib.request.Request(url, data=data, headers={"Referer": url})
    with visitor.open(request, timeout=10) as response:
        assert "Check your email" in response.read().decode()
    # The console email backend prints the email, with the link and its code.
    demo.process.terminate()
    stdout, _ = demo.process.communicate(timeout=10)
    # The plain-text body comes first, then the HTML one.
    link = re.findall(r"(http://\S+/auth/login/\?sesame=~\S+)", stdout)[0]
    assert "&browser=" in link


def post_form(opener, page_url, page, data, action=None):
    """POST ``data`` with the CSRF token of ``page``, to ``action`` or the page itself."""
    [csrf] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[:1]
    request = urllib.request.Request(
        urllib.parse.urljoin(page_url, action) if action else page_url,
        data=urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, **data}).encode(),
        headers={"Referer": page_url},
    )
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, page_url, error.read().decode()


def test_share_with_a_guest_audit_and_revoke(demo):
    login, *_ = demo.links
    base = login.split("/login/")[0]
    sharer = browser()
    assert get(sharer, login)[0] == 200
    share_page = f"{base}/reports/1/share-with-guest/"
    status, _, page = get(sharer, share_page)
    assert status == 200
    assert "Not shared with any guest yet." in page
    status, _, page = post_form(
        sharer, share_page, page, {"email": "guest@example.com"}
    )
    assert status == 200
    [link] = re.findall(r'id="guest-link" readonly value="([^"]+)"', page)
    link = link.replace("&amp;", "&")
    assert "/reports/1/guest/?sesame=~" in link

    # The guest's view: the report, who shared it, and no one logged in.
    guest = browser()
    status, _, page = get(guest, link)
    assert status == 200
    assert "Q3 sales" in page
    assert "Shared with guest@example.com by demo" in page
    assert "Log in by email" in page  # the navigation of an anonymous visitor
    # Only this report.
    assert get(browser(), link.replace("/reports/1/", "/reports/2/"))[0] == 403
    # Not a login link.
    assert get(browser(), link.replace("/reports/1/guest/", "/login/"))[0] == 403

    # The sharer sees the link and its audit trail.
    status, _, page = get(sharer, share_page)
    assert "guest@example.com" in page
    assert "1 / 10" in page
    assert "used — guest@example.com from 127.0.0.1" in page
    assert "rejected (wrong scope)" in page

    # Revocation: the link stops working at once.
    [action] = re.findall(r'action="(/reports/1/share-with-guest/\d+/revoke/)"', page)
    status, _, page = post_form(sharer, share_page, page, {}, action)
    assert status == 200
    assert "revoked — guest@example.com" in page
    status, _, page = get(guest, link)
    assert status == 403
    # A page that says why, not a bare "403 Forbidden".
    assert "This link doesn't work" in page
    assert "Log in by email" in page  # the demo's navigation
    status, _, page = get(sharer, share_page)
    assert "rejected (revoked) — guest@example.com" in page

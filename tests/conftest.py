from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "postgresql: the test needs PostgreSQL (deselected on other databases)",
    )
    config.addinivalue_line(
        "markers",
        "sqlite: the test needs SQLite (deselected on other databases)",
    )


def pytest_collection_modifyitems(config, items):
    if settings.POSTGRES_UNAVAILABLE:
        skip = pytest.mark.skip(
            reason=f"SESAME_TEST_DB=postgresql but {settings.POSTGRES_UNAVAILABLE}"
        )
        for item in items:
            item.add_marker(skip)
        return
    # Tests of PostgreSQL behaviour run in the PostgreSQL run of the suite,
    # and those of SQLite behaviour in the SQLite run.
    other = "sqlite" if connection.vendor == "postgresql" else "postgresql"
    selected = [item for item in items if item.get_closest_marker(other) is None]
    deselected = [item for item in items if item.get_closest_marker(other) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # In CI, nothing may skip silently: a skip means a missing dependency.
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


@pytest.fixture(autouse=True)
def _clear_caches():
    # Rate limit counters and the collapsing of repeated rejections in the
    # audit trail live in the cache: start each test without them.
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    for alias in settings.CACHES:
        cache = caches[alias]
        if isinstance(cache, LocMemCache):
            cache.clear()

"""Sphinx configuration for django-sesame-db; builds offline, without intersphinx."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import django
import tomllib
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent

# Import sesame_db from the checkout, installed or not.
sys.path.insert(0, str(ROOT))

# autodoc imports sesame_db modules, which need configured settings.
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.admin",
        "sesame_db",
    ],
    SECRET_KEY="docs-secret-key-not-for-production",
    USE_TZ=True,
)
django.setup()

# -- Project information -------------------------------------------------------

with (ROOT / "pyproject.toml").open("rb") as f:
    release = tomllib.load(f)["project"]["version"]
version = ".".join(release.split(".")[:2])

project = "django-sesame-db"
copyright = "The sesame_db developers"
author = "The sesame_db developers"

# -- General configuration -----------------------------------------------------

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"

# -- Options for HTML output ---------------------------------------------------

html_theme = "furo"
html_title = f"{project} {release}"


def setup(app: Any) -> None:
    # A :setting: role for Django settings, as in Django's and django-sesame's
    # docs. Without intersphinx, it renders as a literal when nothing here
    # defines the setting.
    app.add_crossref_type("setting", "setting", indextemplate="pair: %s; setting")

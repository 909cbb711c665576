"""
Keep the documentation in step with the code.

"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.test import SimpleTestCase

from sesame_db.conf import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"

# A setting's directive and the options indented under it.
SETTING_RE = re.compile(
    r"^\.\. data:: SESAME_(?P<name>\w+)\n(?P<options>(?:[ \t]+:\w+:.*\n)*)",
    re.MULTILINE,
)
VALUE_RE = re.compile(r"^[ \t]+:value:[ \t]*(?P<value>.*)$", re.MULTILINE)


def documented_settings(text):
    """Return {name: the text of its :value: option, or None} for each setting documented in ``text``."""
    settings = {}
    for match in SETTING_RE.finditer(text):
        value = VALUE_RE.search(match["options"])
        settings[match["name"]] = None if value is None else value["value"].strip()
    return settings


class SettingsReferenceTests(SimpleTestCase):
    """docs/reference.rst documents every setting with its default value."""

    documented: dict[str, str | None]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.documented = documented_settings((DOCS / "reference.rst").read_text())

    def test_parser(self):
        text = (
            ".. data:: SESAME_A\n    :value: 1\n\n    Text.\n\n"
            '.. data:: SESAME_B\n    :type: int\n    :value: ["x"]\n\n'
            ".. data:: SESAME_C\n\n    :value: not an option\n"
        )
        self.assertEqual(documented_settings(text), {"A": "1", "B": '["x"]', "C": None})

    def test_every_setting_is_documented(self):
        self.assertEqual(sorted(self.documented), sorted(DEFAULTS))

    def test_documented_defaults(self):
        for name, default in DEFAULTS.items():
            with self.subTest(name=name):
                value = self.documented.get(name)
                assert value is not None, f"SESAME_{name} has no :value:"
                self.assertEqual(ast.literal_eval(value), default)

"""
Keep the documentation in step with the code.

"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import textwrap
import types
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.db import models, transaction
from django.test import RequestFactory, SimpleTestCase, TestCase, override_settings
from django.test.utils import isolate_apps

from sesame_db.conf import DEFAULTS
from sesame_db.utils import issue_token

from .mixins import CreateUserMixin

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


# The Python snippets of the documentation.

DIRECTIVE_RE = re.compile(
    r"^(?P<indent>[ \t]*)\.\. code-block:: python\n", re.MULTILINE
)
NOT_EXECUTED_RE = re.compile(r"^[ \t]*\.\. not-executed: (?P<reason>\S.*)$")
# A snippet that starts with "# views.py" belongs to that file of the project.
FILE_RE = re.compile(r"^# (?:(?P<package>\w+)/)?(?P<module>\w+)\.py\n")
# The tutorial's project package, as startproject names it: its modules run as
# "project_<name>" in the throwaway project, so that its urls.py doesn't mix
# with the app's. The app, "myapp", is the throwaway project itself.
PROJECT_PACKAGE = "mysite"
APP_PACKAGE = "myapp"
PROJECT = "tests.docs_project"


def python_snippets(text):
    """
    Yield (line number, code, reason) for each ``.. code-block:: python`` of ``text``.

    ``reason`` is the text of a ``.. not-executed: <reason>`` comment just
    before the directive, or None.

    """
    lines = text.splitlines()
    for match in DIRECTIVE_RE.finditer(text):
        start = text.count("\n", 0, match.start())
        indent = len(match["indent"])
        previous = [line for line in lines[:start] if line.strip()]
        reason = NOT_EXECUTED_RE.match(previous[-1]) if previous else None
        body = []
        for line in lines[start + 1 :]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        yield start + 1, code, reason["reason"] if reason else None


class SnippetParserTests(SimpleTestCase):
    def test_parser(self):
        text = (
            "Text:\n\n.. code-block:: python\n\n    a = 1\n\n    b = 2\n\nMore.\n\n"
            "- item\n\n  .. not-executed: needs a server\n\n"
            "  .. code-block:: python\n\n      c = 3\n"
        )
        self.assertEqual(
            list(python_snippets(text)),
            [(3, "a = 1\n\nb = 2\n", None), (15, "c = 3\n", "needs a server")],
        )


@override_settings(ROOT_URLCONF=f"{PROJECT}.root_urls", SESAME_STORE=False)
class SnippetTests(CreateUserMixin, TestCase):
    """
    Every Python snippet of the documentation runs as written.

    Each one runs on its own, with its imports, in a namespace that holds
    only what the text around it assumes: a ``request``, a ``user``, a
    ``report``, and so on (see :meth:`context`). Snippets that start with a
    file name, such as ``# views.py``, run in that module of a throwaway
    project, ``tests/docs_project``, so that the snippets of one file build
    on each other, as in the tutorial. A snippet that can't run here, such
    as a server's main loop, is preceded by ``.. not-executed: <reason>``.

    """

    username = "alice"

    def setUp(self):
        super().setUp()
        self.partner = self.create_user("acme", email="reports@acme.example")
        _, self.issued = issue_token(self.user, "report:42")

    def context(self):
        Document, Report = self.models.Document, self.models.Report
        user, partner, issued = self.user, self.partner, self.issued
        request = RequestFactory().get("/")
        request.user = user
        return {
            "__name__": "docs_snippet",
            # The page's request, its user, and someone to send a link to.
            "request": request,
            "user": user,
            "recipient": partner,
            "partner": partner,
            # A model of the project, and an instance: "reports.report:42".
            "Report": Report,
            "report": Report(pk=42, title="Q3"),
            "Document": Document,
            # A stored link.
            "issued": issued,
            # Functions and URL patterns of the project, that the text names.
            "notify_security_team": lambda token_id, request: None,
            "send_newsletter": lambda user, token: None,
            "websocket_urlpatterns": [],
        }

    def project_module(self, name, modules):
        """A fresh module ``name`` of the throwaway project, shared by the snippets of one page."""
        if name not in modules:
            module = types.ModuleType(f"{PROJECT}.{name}")
            module.__package__ = PROJECT
            modules[name] = module
            sys.modules[module.__name__] = module
            package = importlib.import_module(PROJECT)
            setattr(package, name, module)
            # The app's modules, as the tutorial imports them: "myapp.urls".
            sys.modules.setdefault(APP_PACKAGE, package)
            sys.modules[f"{APP_PACKAGE}.{name}"] = module
        return modules[name]

    @isolate_apps("tests")
    def test_snippets(self):
        # The project's models, in a registry of their own: no table, and
        # nothing left behind for the other tests (a cascade from the user
        # model would look for their tables).
        class Report(models.Model):
            title = models.CharField(max_length=100)

            class Meta:
                app_label = "tests"

            def __str__(self):
                return self.title

        class Document(models.Model):
            owner = models.ForeignKey(
                settings.AUTH_USER_MODEL, on_delete=models.CASCADE
            )
            title = models.CharField(max_length=100)

            class Meta:
                app_label = "tests"

            def __str__(self):
                return self.title

        self.models = types.ModuleType(f"{PROJECT}.models")
        self.models.__dict__.update(Report=Report, Document=Document)
        sys.modules[self.models.__name__] = self.models
        self.addCleanup(sys.modules.pop, self.models.__name__, None)
        # The admin snippets register a user admin on the default site:
        # restore it for the other tests.
        registry = dict(admin.site._registry)

        def restore():
            admin.site._registry.clear()
            admin.site._registry.update(registry)

        self.addCleanup(restore)
        executed = 0
        for path in sorted(DOCS.glob("*.rst")):
            modules: dict[str, types.ModuleType] = {}
            try:
                snippets = list(python_snippets(path.read_text()))
                # A URLconf is imported after the views it names, and the
                # project's after the app's, which it includes.
                snippets.sort(
                    key=lambda snippet: (
                        bool(re.match(r"# (\w+/)?urls\.py", snippet[1])),
                        snippet[1].startswith(f"# {PROJECT_PACKAGE}/"),
                    )
                )
                for line, code, reason in snippets:
                    with self.subTest(snippet=f"{path.name}:{line}"):
                        if reason is not None:
                            continue
                        match = FILE_RE.match(code)
                        if match and match["module"] != "settings":
                            name = match["module"]
                            if match["package"] == PROJECT_PACKAGE:
                                name = f"project_{name}"
                            namespace = self.project_module(name, modules).__dict__
                            namespace.update(
                                {
                                    k: v
                                    for k, v in self.context().items()
                                    if k not in namespace and k != "__name__"
                                }
                            )
                        else:
                            namespace = self.context()
                        with transaction.atomic():
                            exec(
                                compile(code, f"{path.name}:{line}", "exec"), namespace
                            )
                        executed += 1
            finally:
                for name in modules:
                    sys.modules.pop(f"{PROJECT}.{name}", None)
                    sys.modules.pop(f"{APP_PACKAGE}.{name}", None)
                sys.modules.pop(APP_PACKAGE, None)
        # The snippets were found.
        self.assertGreater(executed, 30)

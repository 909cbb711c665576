"""
Check the package's import graph: no circles, and imports run one way.

The graph is drawn from the source with :mod:`ast`, so it holds every import
of a ``sesame_db`` module: at module level, inside functions (a deferred
import is still an arrow) and under ``if TYPE_CHECKING:`` (a type is a
dependency too, and the issue counts ``store -> models`` among the
circles). ``docs/internals.rst`` draws the layers that :data:`LAYERS` lists.

"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from django.test import SimpleTestCase

import sesame_db

PACKAGE = Path(sesame_db.__file__).resolve().parent

# The layers of docs/internals.rst, from the top: a module may import modules
# of its own layer or of a lower one, never of a higher one. A name ending with
# ".*" stands for the package's submodules too.
LAYERS: list[list[str]] = [
    # Wiring: the app config and the system checks.
    ["apps", "checks"],
    # Entry points.
    [
        "admin.*",
        "contrib.*",
        "decorators",
        "login.*",
        "management.*",
        "middleware",
        "templatetags.*",
        "urls",
        "views",
    ],
    # What the entry points share: the public API, and the outcomes as responses.
    ["confirm", "reporting", "responses", "utils"],
    ["backends"],
    ["verify"],
    ["ratelimit", "store"],
    ["browsers", "clients", "managers", "models", "signals", "sql"],
    ["packers", "tokens", "tokens_store", "tokens_v1", "tokens_v2"],
    # The package's __init__: __version__ only, so it imports nothing.
    ["__init__", "conf", "exceptions"],
]

# The modules that need "sesame_db" in INSTALLED_APPS, as the models, the
# admin and the management commands do (and the migrations). Every other
# module imports without it.
NEEDS_INSTALLED_APP = [
    "sesame_db.admin.*",
    "sesame_db.management.commands.*",
    "sesame_db.migrations.*",
    "sesame_db.models",
]


def module_names() -> list[str]:
    """Return the dotted names of the package's modules, migrations excluded."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def module_path(name: str) -> Path:
    path = PACKAGE.parent.joinpath(*name.split("."))
    package = path / "__init__.py"
    return package if package.exists() else path.with_suffix(".py")


def imports(
    name: str, modules: set[str], source: str | None = None
) -> dict[str, set[str]]:
    """
    Return the ``sesame_db`` modules that module ``name`` imports.

    The result maps each imported module to the names imported from it
    (empty for ``import x``). ``source`` replaces the module's file.

    """
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if source is None:
        source = path.read_text()
    found: dict[str, set[str]] = {}

    def add(module: str, imported: str | None) -> None:
        if module == "sesame_db" or not module.startswith("sesame_db."):
            return
        found.setdefault(module, set())
        if imported is not None:
            found[module].add(imported)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                if submodule in modules:
                    # from sesame_db import store: the module itself.
                    add(submodule, None)
                else:
                    add(module, alias.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source, str(path)))
    return found


def import_graph() -> dict[str, dict[str, set[str]]]:
    """Map each module of the package to what it imports (see :func:`imports`)."""
    names = module_names()
    modules = set(names)
    return {name: imports(name, modules) for name in names}


def matches(name: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return name == pattern[:-2] or name.startswith(pattern[:-1])
    return name == pattern


def layer(name: str) -> int | None:
    short = "__init__" if name == "sesame_db" else name.removeprefix("sesame_db.")
    for index, patterns in enumerate(LAYERS):
        if any(matches(short, pattern) for pattern in patterns):
            return index
    return None


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """
    Return the import circles.

    They're the strongly connected components of more than one module, or of
    one module that imports itself.

    """
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, {})):
            if target not in index:
                connect(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, {}):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


class GraphTests(SimpleTestCase):
    """The helpers find what they must find, so that the checks below can fail."""

    def test_imports_at_every_level(self):
        graph = import_graph()
        # Module level, relative: from .conf import conf.
        self.assertIn("sesame_db.conf", graph["sesame_db.tokens"])
        self.assertEqual(graph["sesame_db.tokens"]["sesame_db.conf"], {"conf"})
        # Every module is found, in subpackages too.
        self.assertIn("sesame_db.contrib.rest_framework", graph)
        self.assertIn("sesame_db.management.commands.sesame_db_purge", graph)
        self.assertNotIn("sesame_db.migrations.0001_initial", graph)

    def test_deferred_and_type_checking_imports(self):
        source = (
            "from typing import TYPE_CHECKING\n"
            "import sesame_db.conf\n"
            "if TYPE_CHECKING:\n"
            "    from sesame_db.models import IssuedToken\n"
            "else:\n"
            "    from . import signals\n"
            "def f():\n"
            "    from ..tokens import create_token\n"
            "    from sesame_db import store\n"
        )
        modules = {*module_names(), "sesame_db.contrib.signals"}
        self.assertEqual(
            imports("sesame_db.contrib.probe", modules, source),
            {
                "sesame_db.conf": set(),
                "sesame_db.models": {"IssuedToken"},
                "sesame_db.contrib.signals": set(),
                "sesame_db.tokens": {"create_token"},
                "sesame_db.store": set(),
            },
        )

    def test_cycles(self):
        graph: dict[str, dict[str, set[str]]]
        graph = {"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {}}
        self.assertEqual(cycles(graph), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": {"a": set()}}), [["a"]])
        self.assertEqual(cycles({"a": {"b": set()}, "b": {}}), [])

    def test_layers(self):
        self.assertEqual(layer("sesame_db.apps"), 0)
        self.assertEqual(layer("sesame_db.admin"), 1)
        self.assertEqual(layer("sesame_db.admin.forms"), 1)
        names = ["sesame_db.utils", "sesame_db.backends", "sesame_db.verify"]
        self.assertEqual([layer(name) for name in names], [2, 3, 4])
        self.assertEqual(layer("sesame_db"), layer("sesame_db.conf"))
        self.assertIsNone(layer("sesame_db.administration"))


class ImportDirectionTests(SimpleTestCase):
    def test_every_module_has_a_layer(self):
        missing = [name for name in module_names() if layer(name) is None]
        self.assertEqual(
            missing, [], "add these modules to LAYERS and to docs/internals.rst"
        )

    def test_no_cycles(self):
        self.assertEqual(cycles(import_graph()), [])

    def test_imports_run_down(self):
        upward = []
        for name, targets in import_graph().items():
            for target in targets:
                source_layer, target_layer = layer(name), layer(target)
                if source_layer is None or target_layer is None:
                    continue  # test_every_module_has_a_layer reports them
                if target_layer < source_layer:
                    upward.append(f"{name} -> {target}")
        self.assertEqual(sorted(upward), [])

    def test_no_private_names_across_modules(self):
        # A helper that two modules share is public within the package, so it
        # has a public name.
        private = [
            f"{name} imports {target}.{imported}"
            for name, targets in import_graph().items()
            for target, imported_names in targets.items()
            for imported in imported_names
            if imported.startswith("_")
        ]
        self.assertEqual(sorted(private), [])


class TargetLayoutTests(SimpleTestCase):
    """The modules that the architecture issue (#12) creates, in their places."""

    def assertModules(self, names):
        present = set(module_names())
        self.assertEqual([name for name in names if name not in present], [])

    def test_verify(self):
        self.assertModules(["sesame_db.verify", "sesame_db.responses"])
        graph = import_graph()
        # The backend is a thin adapter: it reaches the store, the rate limit
        # and the token formats through verify only.
        self.assertIn("sesame_db.verify", graph["sesame_db.backends"])
        below = {
            "sesame_db.ratelimit",
            "sesame_db.store",
            "sesame_db.sql",
            "sesame_db.tokens",
            "sesame_db.tokens_store",
            "sesame_db.tokens_v1",
            "sesame_db.tokens_v2",
        }
        self.assertEqual(set(graph["sesame_db.backends"]) & below, set())

    def test_store(self):
        self.assertModules(["sesame_db.sql", "sesame_db.clients"])
        graph = import_graph()
        self.assertNotIn("sesame_db.store", graph["sesame_db.ratelimit"])
        self.assertIn("sesame_db.clients", graph["sesame_db.ratelimit"])

    def test_admin(self):
        self.assertModules(
            [
                "sesame_db.admin",
                "sesame_db.admin.forms",
                "sesame_db.admin.changelist",
                "sesame_db.admin.links",
                "sesame_db.admin.events",
                "sesame_db.admin.users",
            ]
        )
        self.assertEqual(module_path("sesame_db.admin").name, "__init__.py")


# Imports each module given on the command line, in a project without
# "sesame_db" in INSTALLED_APPS, and prints those that fail as JSON.
NOT_INSTALLED_SCRIPT = """
import importlib, json, sys, traceback
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SECRET_KEY="not installed",
    USE_TZ=True,
)
django.setup()
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def import_without_app(names: list[str]) -> dict[str, str]:
    """Import ``names`` in a fresh interpreter without the app; return the failures' tracebacks."""
    environment = os.environ.copy()
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    # The same copy of the package as this process, installed or not.
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE.parent), *filter(None, [environment.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED_SCRIPT, *names],
        capture_output=True,
        check=True,
        env=environment,
        text=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


class NotInstalledTests(SimpleTestCase):
    """Like ``django.contrib.sessions.base_session``, modules work without the app."""

    def test_models_need_the_app(self):
        # The check below can fail: importing the models does.
        failed = import_without_app(["sesame_db.models"])
        self.assertIn("sesame_db.models", failed)
        self.assertIn("INSTALLED_APPS", failed["sesame_db.models"])

    def test_modules_import_without_the_app(self):
        names = [
            name
            for name in module_names()
            if not any(matches(name, pattern) for pattern in NEEDS_INSTALLED_APP)
        ]
        self.assertIn("sesame_db.tokens", names)
        failed = import_without_app(names)
        self.assertEqual(failed, {}, "\n".join(failed.values()))

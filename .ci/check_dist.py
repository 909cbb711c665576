"""
Check the wheel and the sdist that ``python -m build`` wrote into a directory.

Usage: python .ci/check_dist.py DIST_DIR

Run from the project's root directory (tox's ``package`` environment does). It checks
that ``twine check --strict`` accepts both files; that the wheel contains exactly the
``sesame_db`` package, with the same files as the sdist's, and its metadata; that the
sdist contains every file tracked by git under the directories it ships (the tests,
the docs, the demo...); and that both contain the LICENSE.

To require or forbid another path, add one line to the lists below.

"""

from __future__ import annotations

import configparser
import email
import email.message
import fnmatch
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Paths (or directory prefixes, ending with "/") that the wheel must contain.
WHEEL_REQUIRED = [
    "sesame_db/__init__.py",
    "sesame_db/apps.py",
    "sesame_db/py.typed",
    "sesame_db/migrations/__init__.py",
    "sesame_db/migrations/0001_initial.py",
    "sesame_db/management/__init__.py",
    "sesame_db/management/commands/__init__.py",
    "sesame_db/management/commands/sesame_db_issue.py",
    "sesame_db/management/commands/sesame_db_purge.py",
    "sesame_db/management/commands/sesame_db_revoke.py",
    "sesame_db/migrations/0002_tokenevent_reason_rate_limited.py",
    "sesame_db/contrib/__init__.py",
    "sesame_db/contrib/channels.py",
    "sesame_db/contrib/rest_framework.py",
    "sesame_db/templates/sesame_db/confirm.html",
    "sesame_db/templates/admin/sesame_db/issuedtoken/change_form.html",
    "sesame_db/templates/sesame_db/admin/issued.html",
    "sesame_db/admin/__init__.py",
    "sesame_db/templatetags/sesame_db_admin.py",
    "sesame_db/static/sesame_db/admin/copy_link.js",
    "sesame_db/locale/fr/LC_MESSAGES/django.mo",
]

# Files of the wheel's package that the build may create, so that they aren't in the sdist
# (fnmatch patterns), e.g. compiled message catalogues.
WHEEL_GENERATED = [
    "sesame_db/locale/*.mo",
]

# Paths, relative to the sdist's top directory, that the sdist must contain.
SDIST_REQUIRED = [
    "LICENSE",
    "pyproject.toml",
    "README.md",
    "CONTRIBUTING.md",
    "SECURITY.md",
    "Makefile",
    "tox.ini",
    ".ci/check_dist.py",
    ".ci/run",
    "sesame_db/py.typed",
    "sesame_db/migrations/0001_initial.py",
    "sesame_db/templates/sesame_db/confirm.html",
    "sesame_db/static/sesame_db/admin/copy_link.js",
    "docs/conf.py",
    "docs/index.rst",
    "tests/settings.py",
    "benchmarks/__init__.py",
    "benchmarks/bench.py",
    "benchmarks/load.py",
    "migrations_tests/settings.py",
    "demo/manage.py",
]

# Directories of the repository that the sdist ships whole: every file git tracks there.
SDIST_TREES = [
    ".ci/",
    "benchmarks/",
    "demo/",
    "docs/",
    "migrations_tests/",
    "sesame_db/",
    "tests/",
]

# Path prefixes or fnmatch patterns that must not be in the sdist.
SDIST_FORBIDDEN = [
    ".github/",
    ".tox/",
    ".venv/",
    "docs/_build/",
    "*/__pycache__/*",
    "*.pyc",
    "demo/db.sqlite3",
]

# Metadata fields (name, value) that the wheel's METADATA must contain.
METADATA_REQUIRED = [
    ("License-Expression", "BSD-3-Clause"),
    ("License-File", "LICENSE"),
    ("Project-URL", "Documentation, https://django-sesame-db.readthedocs.io/"),
    ("Project-URL", "Source, https://github.com/sesame-db/django-sesame-db"),
    ("Project-URL", "Issues, https://github.com/sesame-db/django-sesame-db/issues"),
    (
        "Project-URL",
        "Changelog, https://django-sesame-db.readthedocs.io/en/latest/changelog.html",
    ),
]

# A Markdown link or image whose target is relative: it breaks on PyPI's project page.
RELATIVE_LINK_RE = re.compile(r"\]\((?!https?://|#)([^)]*)\)")


def matches(names: list[str], path: str) -> bool:
    if path.endswith("/"):
        return any(name.startswith(path) for name in names)
    if "*" in path:
        return any(fnmatch.fnmatch(name, path) for name in names)
    return path in names


def tested_python_versions() -> set[str]:
    """Return the Python versions of tox.ini's env_list, such as ``{"3.10", "3.11"}``."""
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    versions = set()
    for factor in re.findall(r"\bpy3(\{[\d,]+\}|\d+)", tox["tox"]["env_list"]):
        for minor in factor.strip("{}").split(","):
            versions.add(f"3.{minor}")
    return versions


def tracked_files(trees: list[str]) -> list[str] | None:
    """Return the files that git tracks in ``trees``, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--", *trees],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in result.stdout.decode().split("\0") if name]


def check_twine(paths: list[Path]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
    )
    print(result.stdout, end="")
    if result.returncode != 0:
        return [f"twine check --strict failed:\n{result.stdout}{result.stderr}"]
    return []


def check_metadata(wheel_name: str, metadata: email.message.Message) -> list[str]:
    problems = []
    for field, value in METADATA_REQUIRED:
        if value not in (metadata.get_all(field) or []):
            problems.append(f"{wheel_name} metadata lacks {field}: {value}")
    classifiers = metadata.get_all("Classifier") or []
    declared = {
        classifier.rpartition(" :: ")[2]
        for classifier in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    }
    tested = tested_python_versions()
    if declared != tested:
        problems.append(
            f"{wheel_name} declares Python {sorted(declared)} in its classifiers, "
            f"tox.ini tests {sorted(tested)}"
        )
    for target in RELATIVE_LINK_RE.findall(metadata.get_payload()):
        problems.append(
            f"{wheel_name} description links to {target!r}, which breaks on PyPI"
        )
    return problems


def check(dist_dir: Path) -> list[str]:
    wheels = sorted(dist_dir.glob("*.whl"))
    sdists = sorted(dist_dir.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [
            f"expected one wheel and one sdist in {dist_dir}, found {wheels + sdists}"
        ]
    wheel_name, sdist_name = wheels[0].name, sdists[0].name
    problems = check_twine([wheels[0], sdists[0]])

    with tarfile.open(sdists[0]) as sdist:
        # Drop the top directory, "django_sesame_db-<version>/"; keep files only.
        sdist_names = [member.name.partition("/")[2] for member in sdist.getmembers()]
        sdist_files = [
            member.name.partition("/")[2]
            for member in sdist.getmembers()
            if member.isfile()
        ]
    print(f"{sdist_name}: {len(sdist_files)} files")
    for path in SDIST_REQUIRED:
        if not matches(sdist_files, path):
            problems.append(f"{sdist_name} lacks {path}")
    for path in SDIST_FORBIDDEN:
        if matches(sdist_names, path):
            problems.append(f"{sdist_name} contains {path}")
    tracked = tracked_files(SDIST_TREES)
    if tracked is None:
        print("not a git checkout: skipped the comparison with the tracked files")
    else:
        for path in sorted(set(tracked) - set(sdist_files)):
            problems.append(f"{sdist_name} lacks {path}, tracked by git")

    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel_files = [name for name in wheel.namelist() if not name.endswith("/")]
        [dist_info] = {
            name.partition("/")[0]
            for name in wheel_files
            if name.partition("/")[0].endswith(".dist-info")
        }
        metadata = email.message_from_bytes(wheel.read(f"{dist_info}/METADATA"))
    print(f"{wheel_name}: {len(wheel_files)} files")
    for path in WHEEL_REQUIRED:
        if not matches(wheel_files, path):
            problems.append(f"{wheel_name} lacks {path}")
    if f"{dist_info}/licenses/LICENSE" not in wheel_files:
        problems.append(f"{wheel_name} lacks {dist_info}/licenses/LICENSE")
    # Exactly the package: its files, as in the sdist, and the wheel's own metadata.
    package = {name for name in wheel_files if name.startswith("sesame_db/")}
    for name in sorted(set(wheel_files) - package):
        if not name.startswith(f"{dist_info}/"):
            problems.append(f"{wheel_name} contains {name}, outside the package")
    sdist_package = {name for name in sdist_files if name.startswith("sesame_db/")}
    for name in sorted(sdist_package - package):
        problems.append(f"{wheel_name} lacks {name}, which the sdist has")
    for name in sorted(package - sdist_package):
        if not any(fnmatch.fnmatch(name, pattern) for pattern in WHEEL_GENERATED):
            problems.append(f"{wheel_name} contains {name}, which the sdist lacks")
    problems.extend(check_metadata(wheel_name, metadata))

    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    problems = check(Path(sys.argv[1]))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("Package contents OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

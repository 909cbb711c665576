"""
Check the wheel and the sdist that ``python -m build`` wrote into a directory.

Usage: python .ci/check_dist.py DIST_DIR

To require or forbid another path, add one line to the lists below.

"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

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
    "sesame_db/templatetags/sesame_db_admin.py",
    "sesame_db/static/sesame_db/admin/copy_link.js",
    "sesame_db/locale/fr/LC_MESSAGES/django.mo",
]

# Path prefixes that must not be in the wheel.
WHEEL_FORBIDDEN = [
    "tests/",
    "migrations_tests/",
    "demo/",
    "docs/",
]

# Paths, relative to the sdist's top directory, that the sdist must contain.
SDIST_REQUIRED = [
    "pyproject.toml",
    "README.md",
    "sesame_db/py.typed",
    "sesame_db/migrations/0001_initial.py",
    "sesame_db/templates/sesame_db/confirm.html",
    "sesame_db/static/sesame_db/admin/copy_link.js",
]


def matches(names: list[str], path: str) -> bool:
    if path.endswith("/"):
        return any(name.startswith(path) for name in names)
    return path in names


def check(dist_dir: Path) -> list[str]:
    wheels = sorted(dist_dir.glob("*.whl"))
    sdists = sorted(dist_dir.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [
            f"expected one wheel and one sdist in {dist_dir}, found {wheels + sdists}"
        ]
    problems = []

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    print(f"{wheels[0].name}: {len(names)} files")
    for path in WHEEL_REQUIRED:
        if not matches(names, path):
            problems.append(f"{wheels[0].name} lacks {path}")
    for path in WHEEL_FORBIDDEN:
        if matches(names, path):
            problems.append(f"{wheels[0].name} contains {path}")

    with tarfile.open(sdists[0]) as sdist:
        # Drop the top directory, "django_sesame_db-<version>/".
        names = [name.partition("/")[2] for name in sdist.getnames()]
    print(f"{sdists[0].name}: {len(names)} files")
    for path in SDIST_REQUIRED:
        if not matches(names, path):
            problems.append(f"{sdists[0].name} lacks {path}")

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

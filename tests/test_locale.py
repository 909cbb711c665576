"""
The message catalogues: complete, compiled in step, and used by the pages.

The compiled ``.mo`` files are committed, so that building the package needs
no gettext tools; these tests check them against the ``.po`` sources with
Python's :mod:`gettext` alone. To update a catalogue, run from ``sesame_db/``
``django-admin makemessages -l fr --no-location``, translate, then
``django-admin compilemessages`` (both need GNU gettext).

"""

from __future__ import annotations

import ast
import gettext
import re
from pathlib import Path

from django.test import SimpleTestCase, TestCase, override_settings
from django.urls import reverse
from django.utils import translation

from sesame_db.models import IssuedToken
from sesame_db.utils import get_query_string, issue_token

from .mixins import CreateUserMixin

PACKAGE = Path(__file__).resolve().parent.parent / "sesame_db"
LOCALE = PACKAGE / "locale"
LANGUAGES = ["fr"]
PLACEHOLDER_RE = re.compile(r"%(?:\(\w+\))?[sd]")
# The source strings that makemessages extracts, in their simplest forms:
# _("..."), gettext("..."), gettext_lazy("..."), the singular of ngettext(),
# and {% translate "..." %}. Enough to catch a string added without its
# translation; makemessages remains the tool that extracts them all.
PYTHON_RE = re.compile(
    r"\b(?:_|gettext|gettext_lazy|ngettext|ngettext_lazy)\(\s*((?:\"[^\"\n]*\"\s*)+)"
)
TEMPLATE_RE = re.compile(r"{%\s*translate\s+\"([^\"]*)\"")


def parse_po(text: str) -> dict[tuple[str, str | None], list[str]]:
    """Return {(msgid, msgid_plural): [msgstr, ...]} for each entry of a .po file."""
    entries: dict[tuple[str, str | None], list[str]] = {}
    fields: dict[str, str] = {}
    strings: list[str] = []
    current: str | None = None

    def flush() -> None:
        if "msgid" in fields:
            entries[fields["msgid"], fields.get("msgid_plural")] = list(strings)
        fields.clear()
        strings.clear()

    for line in [*text.splitlines(), ""]:
        if not line.strip():
            flush()
            current = None
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            value = ast.literal_eval(line)
            if current == "msgstr":
                strings[-1] += value
            else:
                assert current is not None, line
                fields[current] += value
        else:
            keyword, _, literal = line.partition(" ")
            value = ast.literal_eval(literal)
            if keyword.startswith("msgstr"):
                current = "msgstr"
                strings.append(value)
            else:
                current = keyword
                fields[keyword] = value
    return entries


def source_strings() -> set[str]:
    strings = set()
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for match in PYTHON_RE.finditer(path.read_text()):
            strings.add(
                "".join(
                    ast.literal_eval(part)
                    for part in re.findall(r'"[^"\n]*"', match[1])
                )
            )
    for path in PACKAGE.rglob("*.html"):
        strings.update(TEMPLATE_RE.findall(path.read_text()))
    return strings


class CatalogueTests(SimpleTestCase):
    def test_parser(self):
        text = (
            'msgid ""\nmsgstr ""\n"Language: fr\\n"\n\n'
            '#, python-format\nmsgid "a %(n)s"\nmsgstr "b "\n"%(n)s"\n\n'
            'msgid "one"\nmsgid_plural "many"\nmsgstr[0] "un"\nmsgstr[1] "des"\n'
        )
        self.assertEqual(
            parse_po(text),
            {
                ("", None): ["Language: fr\n"],
                ("a %(n)s", None): ["b %(n)s"],
                ("one", "many"): ["un", "des"],
            },
        )

    def test_source_strings_are_found(self):
        strings = source_strings()
        # One of each form: Python, lazy, a string split over lines, a template.
        for string in [
            "Revoke selected links",
            "issued links",
            "Empty for the default scope, which logs the user in.",
            "Continue to the site",
        ]:
            with self.subTest(string=string):
                self.assertIn(string, strings)

    def test_every_source_string_is_in_each_catalogue(self):
        strings = source_strings()
        for language in LANGUAGES:
            msgids = {msgid for msgid, _ in parse_po(self.po(language).read_text())}
            with self.subTest(language=language):
                self.assertEqual(sorted(strings - msgids), [])

    def test_every_message_is_translated(self):
        for language in LANGUAGES:
            for (msgid, plural), msgstrs in parse_po(
                self.po(language).read_text()
            ).items():
                if not msgid:
                    continue
                with self.subTest(language=language, msgid=msgid):
                    self.assertEqual(len(msgstrs), 1 if plural is None else 2)
                    self.assertTrue(all(msgstrs), msgstrs)
                    # The same named placeholders, or formatting fails at run time.
                    expected = set(PLACEHOLDER_RE.findall(msgid + (plural or "")))
                    for msgstr in msgstrs:
                        found = set(PLACEHOLDER_RE.findall(msgstr))
                        self.assertLessEqual(found, expected)
                    self.assertEqual(
                        set(PLACEHOLDER_RE.findall(msgstrs[-1])),
                        set(PLACEHOLDER_RE.findall(plural or msgid)),
                    )

    def test_mo_file_is_compiled_from_the_po_file(self):
        for language in LANGUAGES:
            entries = parse_po(self.po(language).read_text())
            with self.po(language).with_suffix(".mo").open("rb") as file:
                catalogue = gettext.GNUTranslations(file)
            for (msgid, plural), msgstrs in entries.items():
                if not msgid:
                    continue
                with self.subTest(language=language, msgid=msgid):
                    if plural is None:
                        self.assertEqual(catalogue.gettext(msgid), msgstrs[0])
                    else:
                        # French: n <= 1 is singular.
                        self.assertEqual(
                            catalogue.ngettext(msgid, plural, 1), msgstrs[0]
                        )
                        self.assertEqual(
                            catalogue.ngettext(msgid, plural, 2), msgstrs[1]
                        )
            # And nothing more: a message removed from the .po is gone.
            catalog = catalogue._catalog  # type: ignore[attr-defined]
            # The header is the entry of "", and each plural form is one entry.
            expected = sum(1 if plural is None else 2 for _, plural in entries)
            self.assertEqual(len(catalog), expected)

    def po(self, language: str) -> Path:
        return LOCALE / language / "LC_MESSAGES" / "django.po"


@override_settings(ROOT_URLCONF="tests.urls", SESAME_CONFIRM=True)
class TranslatedPagesTests(CreateUserMixin, TestCase):
    def test_confirmation_page_in_french(self):
        with translation.override("fr"):
            response = self.client.get(reverse("login") + get_query_string(self.user))
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, '<html lang="fr">')
        self.assertContains(response, "<h1>Continuer vers le site</h1>")
        self.assertContains(response, "Appuyez sur le bouton pour continuer.")
        self.assertContains(response, '<button type="submit">Continuer</button>')

    def test_confirmation_page_in_english(self):
        with translation.override("en"):
            response = self.client.get(reverse("login") + get_query_string(self.user))
        self.assertContains(response, '<html lang="en">')
        self.assertContains(response, "<h1>Continue to the site</h1>")

    @override_settings(LANGUAGE_CODE="fr")
    def test_admin_in_french(self):
        superuser = self.create_user("admin", email="admin@example.com")
        superuser.is_staff = superuser.is_superuser = True
        superuser.save()
        self.client.force_login(superuser)
        _, record = issue_token(self.user, scope="report:1", max_uses=3)
        response = self.client.get(reverse("admin:sesame_db_issuedtoken_changelist"))
        self.assertContains(response, "Émettre un lien")
        self.assertContains(response, "Révoquer les liens sélectionnés")
        self.assertContains(response, "portée")
        response = self.client.get(
            reverse("admin:sesame_db_issuedtoken_change", args=[record.pk])
        )
        self.assertContains(response, f"Lien n°{record.pk} pour john (report:1)")
        self.assertContains(response, "Durée de vie")
        with translation.override("fr"):
            self.assertEqual(str(IssuedToken._meta.verbose_name_plural), "liens émis")

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from sesame_db.conf import conf
from sesame_db.management.users import find_user, text
from sesame_db.store import issue, issue_guests


def _minutes(value: Any) -> datetime.timedelta:
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise CommandError(
            f"--expires-in expects a number of minutes, got {value!r}"
        ) from None
    # NaN fails the comparison; beyond a century, dates overflow.
    if not 0 < minutes <= 100 * 366 * 24 * 60:
        raise CommandError(
            f"--expires-in expects a positive number of minutes, at most a century, got {value!r}"
        )
    return datetime.timedelta(minutes=minutes)


def _max_uses(value: Any) -> int:
    try:
        max_uses = int(value)
    except (TypeError, ValueError):
        raise CommandError(f"--max-uses expects an integer, got {value!r}") from None
    if max_uses < 1:
        raise CommandError(f"--max-uses must be at least 1, got {value!r}")
    return max_uses


def _base_url(value: str) -> str:
    if "/" in value or ":" in value:
        return value
    try:
        return reverse(value)
    except NoReverseMatch:
        raise CommandError(
            f"--url expects a URL, a path or the name of a URL pattern without arguments, got {value!r}"
        ) from None


def add_token(url: str, token: str) -> str:
    """Add ``token`` to the query string of ``url``, replacing any token already there."""
    parts = urlsplit(url)
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name != conf.TOKEN_NAME
    ]
    query.append((conf.TOKEN_NAME, token))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Command(BaseCommand):
    help = (
        "Issue a stored magic link for a user, or a guest link with --guest, and print "
        "it: the URL given with --url with the token added, or else the token alone. "
        "Details go to stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "user",
            nargs="?",
            help="Username, or primary key, of the user the link logs in.",
        )
        parser.add_argument(
            "--guest",
            metavar="RECIPIENT",
            help="Issue a guest link, which logs no one in, shared with RECIPIENT "
            "(an email address or a name), instead of a user's link; requires --scope.",
        )
        parser.add_argument(
            "--bind-to-browser",
            action="store_true",
            help="With --guest: the link works only in the first browser that opens it.",
        )
        parser.add_argument(
            "--scope", default="", help="Scope of the link (default: no scope)."
        )
        parser.add_argument(
            "--expires-in",
            metavar="MINUTES",
            help="Lifetime of the link in minutes (default: SESAME_MAX_AGE).",
        )
        parser.add_argument(
            "--max-uses",
            metavar="N",
            help="How many times the link works (default: unlimited).",
        )
        parser.add_argument(
            "--label", default="", help="Description shown in the admin."
        )
        parser.add_argument(
            "--url",
            metavar="PATH_OR_URL",
            help="URL, path or URL pattern name to add the token to, such as https://example.com/login/.",
        )

    def handle(
        self,
        *args: Any,
        user: str | None,
        scope: str,
        expires_in: Any,
        max_uses: Any,
        label: str,
        url: str | None,
        **options: Any,
    ) -> None:
        # Validate everything before writing anything. call_command() passes
        # keyword arguments without converting them, so convert here.
        max_age = None if expires_in is None else _minutes(expires_in)
        uses = None if max_uses is None else _max_uses(max_uses)
        base_url = None if url is None else _base_url(url)
        scope = text(scope, "--scope")
        label = text(label, "--label")
        if len(scope) > 255 or len(label) > 255:
            raise CommandError("--scope and --label are limited to 255 characters")
        guest = options.get("guest")
        bind = bool(options.get("bind_to_browser"))
        if guest is not None:
            if user is not None:
                raise CommandError("Give a user or --guest, not both")
            guest = str(guest).strip()
            if not guest or len(guest) > 254:
                raise CommandError("--guest expects a recipient of 1 to 254 characters")
            if not scope:
                raise CommandError(
                    "--guest requires --scope: a guest link opens one thing"
                )
            try:
                [(token, record)] = issue_guests(
                    [guest],
                    scope,
                    max_age=max_age,
                    max_uses=uses,
                    label=label,
                    bind_to_browser=bind,
                )
            except ValueError as exc:
                # What the options above don't check, such as control
                # characters in the recipient.
                raise CommandError(f"--guest: {exc}") from None
            self.stdout.write(token if base_url is None else add_token(base_url, token))
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"Issued guest link #{record.pk} for {guest!r}: {', '.join(self.details(scope, record, uses))}."
                )
            return
        if user is None:
            raise CommandError("Give the user the link logs in, or --guest RECIPIENT")
        if bind:
            raise CommandError("--bind-to-browser applies to guest links only")
        target = find_user(str(user), "user")
        if not getattr(target, "is_active", True):
            self.stderr.write(
                f"Warning: {target.get_username()!r} is inactive: the link works only once they're active again."
            )
        token, record = issue(
            target, scope, max_age=max_age, max_uses=uses, label=label
        )
        # The token is printed because the operator asked for it; it's never logged.
        self.stdout.write(token if base_url is None else add_token(base_url, token))
        if options["verbosity"] >= 1:
            self.stderr.write(
                f"Issued link #{record.pk} for {target.get_username()!r}: {', '.join(self.details(scope, record, uses))}."
            )

    @staticmethod
    def details(scope: str, record: Any, uses: int | None) -> list[str]:
        details = [f"scope {scope!r}" if scope else "no scope"]
        details.append(
            f"expires at {record.expires_at:%Y-%m-%d %H:%M:%S %Z}"
            if record.expires_at is not None
            else "doesn't expire"
        )
        details.append(
            "unlimited uses" if uses is None else f"{uses} use{'s' if uses > 1 else ''}"
        )
        if record.bind_to_browser:
            details.append("bound to the first browser")
        return details

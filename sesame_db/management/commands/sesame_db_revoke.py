from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sesame_db.management.users import find_user, text
from sesame_db.managers import RECIPIENT_CONTROL_CHARACTERS
from sesame_db.models import IssuedToken


def _ids(values: list[Any]) -> list[int]:
    ids = []
    for value in values:
        try:
            ids.append(int(value))
        except (TypeError, ValueError):
            raise CommandError(f"--id expects link ids, got {value!r}") from None
    return ids


class Command(BaseCommand):
    help = (
        "Revoke stored magic links chosen by id, user, guest, scope or issuer; links already "
        "sent stop working at once. At least one filter is required; filters combine."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--id",
            dest="ids",
            nargs="+",
            action="extend",
            metavar="ID",
            help="Ids of the links to revoke, as shown in the admin.",
        )
        parser.add_argument(
            "--user", help="Revoke the links of this user (username or primary key)."
        )
        parser.add_argument(
            "--recipient",
            metavar="RECIPIENT",
            help="Revoke the guest links shared with RECIPIENT (compared without regard to case).",
        )
        parser.add_argument(
            "--scope", help="Revoke the links of this scope; '' for unscoped links."
        )
        parser.add_argument(
            "--issued-by",
            metavar="USER",
            help="Revoke the links issued by this user (username or primary key).",
        )
        parser.add_argument(
            "--reason", default="", help="Reason recorded in the audit trail."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the links that would be revoked, revoke nothing.",
        )

    def handle(
        self,
        *args: Any,
        ids: list[Any] | None,
        user: str | None,
        scope: str | None,
        issued_by: str | None,
        reason: str,
        dry_run: bool,
        **options: Any,
    ) -> None:
        recipient = options.get("recipient")
        if (
            not ids
            and user is None
            and scope is None
            and issued_by is None
            and recipient is None
        ):
            raise CommandError(
                "Choose the links to revoke with --id, --user, --recipient, --scope or --issued-by"
            )
        if recipient is not None and not str(recipient).strip():
            raise CommandError("--recipient expects a recipient, got ''")
        if recipient is not None and RECIPIENT_CONTROL_CHARACTERS.search(
            str(recipient).strip()
        ):
            raise CommandError("--recipient can't contain control characters")
        # Before any query: text the database can't compare or store.
        reason = text(reason, "--reason")
        if len(reason) > 255:
            raise CommandError("--reason is limited to 255 characters")
        if scope is not None:
            scope = text(scope, "--scope")
        if user is not None:
            user = text(user, "--user")
        if issued_by is not None:
            issued_by = text(issued_by, "--issued-by")
        links = IssuedToken.objects.all()
        if ids:
            wanted = set(_ids(ids))
            found = set(
                IssuedToken.objects.filter(pk__in=wanted).values_list("pk", flat=True)
            )
            if missing := sorted(wanted - found):
                raise CommandError(
                    f"No link with id {', '.join(map(str, missing))}; nothing was revoked"
                )
            links = links.filter(pk__in=wanted)
        if user is not None:
            links = links.for_user(find_user(user, "--user"))
        if issued_by is not None:
            links = links.issued_by(find_user(issued_by, "--issued-by"))
        if recipient is not None:
            links = links.shared_with(str(recipient))
        if scope is not None:
            links = links.for_scope(scope)
        if dry_run:
            count = links.filter(revoked_at__isnull=True).count()
            self.stdout.write(f"Would revoke {count} link{'s' if count != 1 else ''}.")
            return
        count = links.revoke(by=None, reason=reason)
        self.stdout.write(f"Revoked {count} link{'s' if count != 1 else ''}.")

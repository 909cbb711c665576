from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router
from django.db.models import QuerySet
from django.utils import timezone

from sesame_db.conf import conf
from sesame_db.models import IssuedToken, TokenEvent


def _days(value: str) -> datetime.timedelta:
    try:
        days = float(value)
    except ValueError:
        raise CommandError(f"expected a number of days, got {value!r}") from None
    # Beyond a century, dates overflow; NaN fails every comparison.
    if not 0 <= days <= 36500:
        raise CommandError(
            f"expected a number of days between 0 and 36500, got {value!r}"
        )
    return datetime.timedelta(days=days)


def delete_in_batches(queryset: QuerySet[Any], batch_size: int) -> int:
    """
    Delete the rows of ``queryset`` in batches of ``batch_size`` rows.

    Each batch is bounded by primary keys, found with one query that returns
    a single key, rather than listed: memory stays flat and statements stay
    short. Each DELETE keeps the conditions of ``queryset``.

    """
    queryset = queryset.using(router.db_for_write(queryset.model)).order_by("pk")
    deleted, last = 0, None
    while True:
        pending = queryset if last is None else queryset.filter(pk__gt=last)
        boundary = pending.values_list("pk", flat=True)[
            batch_size - 1 : batch_size
        ].first()
        # The models have no cascades or delete signals: one DELETE per batch.
        count, _ = (
            pending if boundary is None else pending.filter(pk__lte=boundary)
        ).delete()
        deleted += count
        if boundary is None:
            return deleted
        last = boundary


class Command(BaseCommand):
    help = (
        "Delete issued links that have been expired, revoked or used up for longer than "
        "SESAME_TOKEN_RETENTION, and link events older than SESAME_EVENT_RETENTION."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted, delete nothing.",
        )
        parser.add_argument(
            "--token-retention",
            type=_days,
            metavar="DAYS",
            help="Override SESAME_TOKEN_RETENTION, in days.",
        )
        parser.add_argument(
            "--event-retention",
            type=_days,
            metavar="DAYS",
            help="Override SESAME_EVENT_RETENTION, in days.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Rows deleted per statement (default: 1000).",
        )

    def handle(
        self,
        *args: Any,
        dry_run: bool,
        token_retention: datetime.timedelta | None,
        event_retention: datetime.timedelta | None,
        batch_size: int,
        **options: Any,
    ) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        # call_command() passes keyword arguments without converting them.
        if token_retention is not None and not isinstance(
            token_retention, datetime.timedelta
        ):
            token_retention = _days(str(token_retention))
        if event_retention is not None and not isinstance(
            event_retention, datetime.timedelta
        ):
            event_retention = _days(str(event_retention))
        now = timezone.now()
        token_cutoff = now - (
            token_retention
            if token_retention is not None
            else datetime.timedelta(seconds=conf.TOKEN_RETENTION)
        )
        event_cutoff = now - (
            event_retention
            if event_retention is not None
            else datetime.timedelta(seconds=conf.EVENT_RETENTION)
        )
        # By the status rule of the model: revoked, expired or used up since
        # before the cutoff.
        tokens = IssuedToken._default_manager.filter(
            IssuedToken.stopped_before_condition(token_cutoff)
        )
        events = TokenEvent._default_manager.filter(created_at__lt=event_cutoff)
        if dry_run:
            self.stdout.write(
                f"Would delete {tokens.count()} issued links and {events.count()} link events."
            )
            return
        deleted_tokens = delete_in_batches(tokens, batch_size)
        deleted_events = delete_in_batches(events, batch_size)
        self.stdout.write(
            f"Deleted {deleted_tokens} issued links and {deleted_events} link events."
        )

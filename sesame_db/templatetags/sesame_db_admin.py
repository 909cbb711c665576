"""
Template tags of the admin of the database store.

"""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from django import template
from django.contrib.admin.utils import get_fields_from_path
from django.db.models import DateTimeField, Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

__all__ = ["sesame_db_date_hierarchy"]

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def sesame_db_date_hierarchy(cl: Any) -> dict[str, Any]:
    """
    Build the date drill-down of a changelist from the table's first and last dates.

    Django's ``{% date_hierarchy %}`` lists the years, months or days that
    have rows with ``SELECT DISTINCT`` over the filtered rows, which reads
    all of them. This tag lists every year, month or day between the first
    and the last row of the whole table instead: ``MIN()`` and ``MAX()``
    without a ``WHERE`` clause read both ends of the field's index, whatever
    the filters and the search. A choice may lead to an empty page.

    """
    field_name = cl.date_hierarchy
    field = get_fields_from_path(cl.model, field_name)[-1]
    year_field = f"{field_name}__year"
    month_field = f"{field_name}__month"
    day_field = f"{field_name}__day"
    year_lookup = cl.params.get(year_field)
    month_lookup = cl.params.get(month_field)
    day_lookup = cl.params.get(day_field)

    def link(filters: dict[str, Any]) -> str:
        return str(cl.get_query_string(filters, [f"{field_name}__"]))

    if year_lookup and month_lookup and day_lookup:
        day = datetime.date(int(year_lookup), int(month_lookup), int(day_lookup))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year_lookup, month_field: month_lookup}),
                "title": capfirst(formats.date_format(day, "YEAR_MONTH_FORMAT")),
            },
            "choices": [
                {"title": capfirst(formats.date_format(day, "MONTH_DAY_FORMAT"))}
            ],
        }

    bounds = cl.root_queryset.aggregate(first=Min(field_name), last=Max(field_name))
    first, last = bounds["first"], bounds["last"]
    if first is None or last is None:
        first = last = None
    else:
        if isinstance(field, DateTimeField) and timezone.is_aware(first):
            first, last = timezone.localtime(first), timezone.localtime(last)
        first, last = _date(first), _date(last)
        # Without a selection, start at the narrowest level that has more
        # than one choice.
        if not (year_lookup or month_lookup) and first.year == last.year:
            year_lookup = str(first.year)
            if first.month == last.month:
                month_lookup = str(first.month)

    if year_lookup and month_lookup:
        year, month = int(year_lookup), int(month_lookup)
        days = [
            datetime.date(year, month, number)
            for number in range(1, calendar.monthrange(year, month)[1] + 1)
        ]
        return {
            "show": True,
            "back": {
                "link": link({year_field: year_lookup}),
                "title": str(year_lookup),
            },
            "choices": [
                {
                    "link": link(
                        {
                            year_field: year_lookup,
                            month_field: month_lookup,
                            day_field: day.day,
                        }
                    ),
                    "title": capfirst(formats.date_format(day, "MONTH_DAY_FORMAT")),
                }
                for day in _between(days, first, last)
            ],
        }
    if year_lookup:
        year = int(year_lookup)
        months = [datetime.date(year, number, 1) for number in range(1, 13)]
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year_lookup, month_field: month.month}),
                    "title": capfirst(formats.date_format(month, "YEAR_MONTH_FORMAT")),
                }
                for month in _between(
                    months,
                    None if first is None else first.replace(day=1),
                    last,
                )
            ],
        }
    years = [] if first is None or last is None else range(first.year, last.year + 1)
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(year)}), "title": str(year)}
            for year in years
        ],
    }


def _date(value: datetime.date) -> datetime.date:
    return value.date() if isinstance(value, datetime.datetime) else value


def _between(
    dates: list[datetime.date],
    first: datetime.date | None,
    last: datetime.date | None,
) -> list[datetime.date]:
    if first is None or last is None:
        return []
    return [date for date in dates if first <= date <= last]

"""
The machinery of the admins' change lists, for large tables.

A paginator that estimates rather than counts, filters that use the
query set methods, and the columns and lookups that the admins of links,
of events and of users share. The helpers without an entry in
:data:`__all__` are internal to :mod:`sesame_db.admin`.

"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from sesame_db.conf import conf
from sesame_db.models import IssuedToken

if TYPE_CHECKING:
    _Paginator = Paginator[Any]
else:
    _Paginator = Paginator

__all__ = [
    "EstimatedCountPaginator",
    "GuestFilter",
    "ScopeFilter",
    "StatusFilter",
    "estimated_count",
]


STATUS_STYLES = {
    IssuedToken.Status.ACTIVE: "#1e7e34",
    IssuedToken.Status.EXPIRED: "#6c757d",
    IssuedToken.Status.REVOKED: "#b02a37",
    IssuedToken.Status.USED_UP: "#8a6100",
}


class RefuseNulMixin:
    """
    Answer a change list's query string with NUL as Django's admin answers an invalid lookup.

    The query string becomes lookups and searches, and PostgreSQL can't
    compare text with NUL: it would fail with a ``DataError``. The admins
    of links and events redirect such requests to the change list with
    ``?e=1``, where the admin says that the filters were wrong.

    """

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)  # type: ignore[misc,no-any-return]


# Large tables.


class EstimatedCountPaginator(_Paginator):
    """
    A paginator that doesn't count every row of a large table.

    On PostgreSQL, when the query set has no ``WHERE`` clause, its count is
    the planner's estimate of the table's size, computed as PostgreSQL does
    from ``pg_class.reltuples`` and the table's current size on disk, if it
    exceeds :attr:`estimate_threshold`. Otherwise, and on other databases,
    it's a real ``COUNT(*)``. :attr:`is_estimate` tells which.

    """

    #: Below this estimate, rows are counted.
    estimate_threshold = 10_000

    #: Whether :attr:`count` is an estimate.
    is_estimate = False

    @cached_property
    def count(self) -> int:
        """The number of objects: estimated on large tables when nothing filters them."""
        estimate = estimated_count(self.object_list)
        if estimate is not None and estimate > self.estimate_threshold:
            self.is_estimate = True
            return estimate
        return int(super().count)


def estimated_count(queryset: Any) -> int | None:
    """
    Return PostgreSQL's estimate of the number of rows of ``queryset``'s table.

    Return :obj:`None` when ``queryset`` filters rows, isn't a query set, isn't
    on PostgreSQL, or when the table was never analyzed.

    """
    if not isinstance(queryset, QuerySet):
        return None
    query = queryset.query
    if (
        query.where
        or query.distinct
        or query.combinator
        or query.is_sliced
        or query.group_by is not None
    ):
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    # The planner's own formula: tuples per page at the last ANALYZE times
    # the pages now, so the estimate follows the table between ANALYZEs.
    # reltuples is a float4: in double precision and rounded, 300 tuples on
    # 7 pages are 300, not float4's 299.99997 truncated to 299.
    sql = (
        "SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL "
        "ELSE round(c.reltuples::float8 / c.relpages * "
        "(pg_relation_size(c.oid) / current_setting('block_size')::integer)) END "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.quote_name(queryset.model._meta.db_table)])
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0])


# Filters.


class StatusFilter(admin.SimpleListFilter):
    """Filter links by status, with the query set methods of :class:`~sesame_db.managers.IssuedTokenQuerySet`."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(status.value, str(status.label)) for status in IssuedToken.Status]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        value = self.value()
        if value in IssuedToken.Status.values:
            # The methods are named after the statuses: active(), expired()...
            return getattr(queryset, value)()
        return queryset


class GuestFilter(admin.SimpleListFilter):
    """Filter links by who they're for: a user, or a guest (a recipient without an account)."""

    title = _("user or guest")
    parameter_name = "for"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("user", gettext("user")), ("guest", gettext("guest"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        value = self.value()
        if value == "user":
            return queryset.users()  # type: ignore[attr-defined]
        if value == "guest":
            return queryset.guests()  # type: ignore[attr-defined]
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    """
    Filter links by scope, among the scopes listed in :data:`SESAME_ADMIN_SCOPES`.

    Listing the scopes found in the table would read every row.

    """

    title = _("scope")
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (scope, scope or gettext("default scope")) for scope in conf.ADMIN_SCOPES
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        value = self.value()
        if value is None:
            return queryset
        return queryset.for_scope(value)  # type: ignore[attr-defined]


# Columns shared by the admin of links and the inline of a user's links.


class LinkColumns:
    """Columns that show a link's status and uses without a query."""

    @admin.display(description=_("status"))
    def status_badge(self, obj: IssuedToken) -> str:
        """Show the status of a link as a colored badge, with its name."""
        status = obj.status
        return format_html(
            '<span class="sesame-db-status sesame-db-status-{}" style="background: {}; '
            'color: #fff; padding: 1px 7px; border-radius: 8px; white-space: nowrap">{}</span>',
            status.value,
            STATUS_STYLES[status],
            status.label,
        )

    @admin.display(description=_("uses"))
    def uses(self, obj: IssuedToken) -> str:
        """Show ``n / max``, or ``n / ∞`` when unlimited."""
        limit = "∞" if obj.max_uses is None else str(obj.max_uses)
        return f"{obj.use_count} / {limit}"


def user_or_id(user: Model | None, user_id: Any) -> str:
    # Events keep user ids after the user is deleted.
    if user is not None:
        return str(user)
    if user_id is not None:
        return f"#{user_id}"
    return ""


def short_datetime(value: datetime.datetime | None) -> str:
    # The admin's default, "Dec. 11, 2026, 5:07 p.m.", doesn't wrap (its
    # cells are nowrap) and widens the list past 1280 px.
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return date_format(value, "SHORT_DATETIME_FORMAT")


# Change pages and searches.


def get_object_or_none(
    queryset: QuerySet[Any], object_id: str, from_field: str | None
) -> Any:
    """Do what ModelAdmin.get_object() does, on ``queryset``."""
    opts = queryset.model._meta
    field = opts.pk if from_field is None else opts.get_field(from_field)
    try:
        return queryset.get(**{field.name: field.to_python(object_id)})
    except (queryset.model.DoesNotExist, ValidationError, ValueError):
        return None


def user_search_fields(model: type[Model]) -> list[str]:
    """Search the user's USERNAME_FIELD and EMAIL_FIELD, if it exists."""
    user_field = model._meta.get_field("user")
    User = user_field.related_model
    assert isinstance(User, type)
    fields = [f"user__{User.USERNAME_FIELD}"]  # type: ignore[attr-defined]
    email = User.get_email_field_name()  # type: ignore[attr-defined]
    try:
        User._meta.get_field(email)
    except FieldDoesNotExist:
        pass
    else:
        if email != User.USERNAME_FIELD:  # type: ignore[attr-defined]
            fields.append(f"user__{email}")
    return fields


def token_change_link(admin_site: admin.AdminSite, pk: int) -> str:
    """Link to the change page of issued link ``pk``, or its id where ``admin_site`` doesn't register it."""
    opts = IssuedToken._meta
    try:
        url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=[quote(pk)],
            current_app=admin_site.name,
        )
    except NoReverseMatch:
        return f"#{pk}"
    return format_html('<a href="{}">#{}</a>', url, pk)

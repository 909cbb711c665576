"""
The admin of the audit trail: read-only.

"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from sesame_db.admin.changelist import (
    EstimatedCountPaginator,
    RefuseNulMixin,
    get_object_or_none,
    token_change_link,
    user_or_id,
    user_search_fields,
)
from sesame_db.conf import conf
from sesame_db.models import TokenEvent

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = admin.ModelAdmin

__all__ = [
    "TokenEventAdmin",
]


@admin.register(TokenEvent)
class TokenEventAdmin(RefuseNulMixin, _ModelAdmin):
    """
    The admin of the audit trail: read-only.

    Nobody adds or changes events. Superusers may delete them when
    :data:`SESAME_ADMIN_EVENTS_DELETABLE` is set; the ``sesame_db_purge``
    command deletes old ones.

    """

    list_display = [
        "created_at",
        "kind",
        "reason",
        "link",
        "event_user",
        "event_actor",
        "scope",
        "ip",
        "method",
        "path",
    ]
    list_select_related = ["user", "actor", "token"]
    list_filter = ["kind", "reason", ("created_at", admin.DateFieldListFilter)]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    sortable_by = ["created_at", "kind", "ip"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    search_help_text = _("Username, email, guest or scope; or an exact IP address.")
    fields = readonly_fields = (
        "created_at",
        "kind",
        "reason",
        "link",
        "event_user",
        "event_actor",
        "scope",
        "detail",
        "ip",
        "user_agent",
        "method",
        "path",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Any | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: Any | None = None
    ) -> bool:
        return bool(conf.ADMIN_EVENTS_DELETABLE and request.user.is_superuser)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [*user_search_fields(self.model), "recipient", "scope"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # An IP address is looked up exactly, with the index; comparing it
        # as text would read every row.
        try:
            ip = ipaddress.ip_address(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(ip=str(ip)), False

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        queryset = self.get_queryset(request).select_related("user", "actor", "token")
        return get_object_or_none(queryset, object_id, from_field)

    @admin.display(description=_("link"))
    def link(self, obj: TokenEvent) -> str:
        """Link to the link's change page, or show its id once it's purged."""
        if obj.token_id is None:
            return ""
        if obj.token is None:
            return gettext("#%(id)s (deleted)") % {"id": obj.token_id}
        return token_change_link(self.admin_site, obj.token_id)

    @admin.display(description=_("user or guest"))
    def event_user(self, obj: TokenEvent) -> str:
        if obj.user_id is None and obj.recipient:
            return gettext("Guest: %(recipient)s") % {"recipient": obj.recipient}
        return user_or_id(obj.user, obj.user_id)

    @admin.display(description=_("actor"))
    def event_actor(self, obj: TokenEvent) -> str:
        return user_or_id(obj.actor, obj.actor_id)

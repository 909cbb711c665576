"""
The Django admin of the database store: issued links and their audit trail.

Staff see every link with its status, revoke links, shorten their expiry,
issue a link by hand, and read the audit trail. The token of a link is shown
once, on the page that issues it, and never again: the database can't
rebuild it.

Settings are read when a page is built, never at import, and the user model
is resolved through the :class:`~sesame_db.models.IssuedToken` foreign key
when needed.

"""

from __future__ import annotations

import datetime
import ipaddress
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.contrib.auth import get_permission_codename
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, Model, Q, QuerySet, Window
from django.db.models.functions import Now
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from sesame_db.conf import conf
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import issue_token

if TYPE_CHECKING:
    from django.urls import URLPattern

    _ModelAdmin = admin.ModelAdmin[Any]
    _Paginator = Paginator[Any]
    _TabularInline = admin.TabularInline[Any, Any]
    _InlineFormSet = BaseInlineFormSet[Any, Any, Any]
    _ModelForm = forms.ModelForm[Any]
    # The mixin is typed as the ModelAdmin it's mixed into.
    _UserAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdmin = admin.ModelAdmin
    _Paginator = Paginator
    _TabularInline = admin.TabularInline
    _InlineFormSet = BaseInlineFormSet
    _ModelForm = forms.ModelForm
    _UserAdminBase = object

__all__ = [
    "EstimatedCountPaginator",
    "IssueLinkForm",
    "IssuedTokenAdmin",
    "IssuedTokenChangeForm",
    "IssuedTokenInline",
    "IssuedTokenUserAdminMixin",
    "RevokeForm",
    "ScopeFilter",
    "StatusFilter",
    "TokenEventAdmin",
    "estimated_count",
]

# How many events the change page of a link shows, newest first.
EVENTS_SHOWN = 50

# The longest expiry that the issue form accepts, in minutes: ten years.
MAX_EXPIRES_IN = 10 * 366 * 24 * 60

STATUS_STYLES = {
    IssuedToken.Status.ACTIVE: "#1e7e34",
    IssuedToken.Status.EXPIRED: "#6c757d",
    IssuedToken.Status.REVOKED: "#b02a37",
    IssuedToken.Status.USED_UP: "#8a6100",
}

SHORTEN_HELP_TEXT = _(
    "Shorten the expiry by entering an earlier time; a time in the past ends "
    "the link at once. It can’t be extended: the link carries its expiry, "
    "signed, and it’s checked before the database, so a later time here "
    "wouldn’t make the link work any longer."
)


class _IssuedLink:
    """
    The issued link, for the template of the page that shows it.

    Its ``repr()`` hides it: Django's template engine logs the whole context
    at the ``DEBUG`` level when a variable is missing.

    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        self._url = url

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return "<issued link>"


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
    sql = (
        "SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL "
        "ELSE c.reltuples / c.relpages * "
        "(pg_relation_size(c.oid) / current_setting('block_size')::integer) END "
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


class _LinkColumns:
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


def _user_or_id(user: Model | None, user_id: Any) -> str:
    # Events keep user ids after the user is deleted.
    if user is not None:
        return str(user)
    if user_id is not None:
        return f"#{user_id}"
    return ""


def _short_datetime(value: datetime.datetime | None) -> str:
    # The admin's default, "Dec. 11, 2026, 5:07 p.m.", doesn't wrap (its
    # cells are nowrap) and widens the list past 1280 px.
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return date_format(value, "SHORT_DATETIME_FORMAT")


# Forms.


class RevokeForm(forms.Form):
    """The reason given on the confirmation page of a revocation."""

    reason = forms.CharField(
        label=_("Reason"),
        required=False,
        max_length=255,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Optional. Recorded in the audit trail."),
    )


class IssueLinkForm(forms.Form):
    """
    The form of the "Issue a link" page.

    ``target`` must be a path on this site; the link is ``target`` with the
    token added to its query string.

    """

    scope = forms.CharField(
        label=_("Scope"),
        required=False,
        max_length=255,
        help_text=_("Empty for the default scope, which logs the user in."),
    )
    expires_in = forms.IntegerField(
        label=_("Expires in"),
        required=False,
        min_value=1,
        max_value=MAX_EXPIRES_IN,
    )
    max_uses = forms.IntegerField(
        label=_("Maximum uses"),
        required=False,
        min_value=1,
        max_value=2**31 - 1,
        help_text=_("Empty for unlimited."),
    )
    label = forms.CharField(
        label=_("Label"),
        required=False,
        max_length=255,
        help_text=_("Shown in the admin, for example “Q3 report for the board”."),
    )
    target = forms.CharField(
        label=_("Target"),
        max_length=2000,
        initial="/",
        help_text=_("A path on this site, such as /reports/42/."),
    )

    def __init__(
        self,
        *args: Any,
        request: HttpRequest,
        admin_site: admin.AdminSite,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        user_field = IssuedToken._meta.get_field("user")
        User = user_field.related_model
        assert isinstance(User, type)
        self.fields["user"] = forms.ModelChoiceField(
            queryset=User._default_manager.all(),
            label=_("User"),
            widget=ForeignKeyRawIdWidget(user_field.remote_field, admin_site),
            help_text=_("The id of the user whom the link logs in."),
        )
        max_age = conf.MAX_AGE
        expires_in = self.fields["expires_in"]
        if max_age is None:
            expires_in.help_text = _("In minutes. Empty for a link that never expires.")
        else:
            expires_in.initial = math.ceil(max_age / 60)
            expires_in.help_text = _("In minutes. Empty for SESAME_MAX_AGE.")
        self.fields["scope"].widget.attrs["list"] = "sesame-db-scopes"
        self.order_fields(
            ["user", "scope", "expires_in", "max_uses", "label", "target"]
        )

    def clean_user(self) -> Any:
        user = self.cleaned_data["user"]
        if not getattr(user, "is_active", True):
            raise ValidationError(
                _("This user is inactive: a link wouldn't log them in."),
                code="inactive",
            )
        return user

    def clean_target(self) -> str:
        target: str = self.cleaned_data["target"].strip()
        request = self.request
        parts = urlsplit(target)
        if not url_has_allowed_host_and_scheme(
            target,
            allowed_hosts={request.get_host()},
            require_https=request.is_secure(),
        ) or not (parts.netloc or parts.path.startswith("/")):
            raise ValidationError(
                _("Enter a path on this site, such as /reports/42/."),
                code="external",
            )
        if conf.TOKEN_NAME in parse_qs(parts.query, keep_blank_values=True):
            raise ValidationError(
                _("Remove the %(name)s parameter: the link adds its own."),
                code="token",
                params={"name": conf.TOKEN_NAME},
            )
        return target

    def link(self, token: str) -> str:
        """Return the absolute URL of ``target`` with ``token``."""
        parts = urlsplit(self.cleaned_data["target"])
        parameter = urlencode({conf.TOKEN_NAME: token})
        query = f"{parts.query}&{parameter}" if parts.query else parameter
        return self.request.build_absolute_uri(urlunsplit(parts._replace(query=query)))


class IssuedTokenChangeForm(_ModelForm):
    """The change form of a link: only shortening its expiry is possible."""

    class Meta:
        model = IssuedToken
        fields = ["expires_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields.get("expires_at")
        if field is not None:
            field.help_text = SHORTEN_HELP_TEXT

    def clean_expires_at(self) -> datetime.datetime | None:
        current: datetime.datetime | None = self.instance.expires_at
        new: datetime.datetime | None = self.cleaned_data["expires_at"]
        if current is None or new == current:
            return new
        # The form shows whole seconds: resubmitting it unchanged isn't a change.
        if new is not None and new == current.replace(microsecond=0):
            return current
        if new is None or new > current:
            raise ValidationError(
                _(
                    "The expiry can only be shortened: enter a time before the "
                    "current one, or revoke the link."
                ),
                code="extend",
            )
        return new


# Links.


@admin.register(IssuedToken)
class IssuedTokenAdmin(_LinkColumns, _ModelAdmin):
    """
    The admin of issued links.

    Viewing needs the view permission. Revoking a link, or shortening its
    expiry, needs the ``sesame_db.revoke_issuedtoken`` permission or the
    change permission: nothing else about a link can be changed. Issuing a
    link needs the add permission; deleting one, the delete permission.

    """

    # Few and narrow columns, so that the list fits a 1280 px window with
    # the navigation sidebar open (tests/browser/test_admin_layout.py); the
    # last use and the issuer are on each link's page.
    list_display = [
        "user",
        "scope_and_label",
        "status_badge",
        "uses",
        "expires",
        "issued",
    ]
    list_display_links = ["user", "scope_and_label"]
    list_select_related = ["user", "issued_by"]
    list_filter = [
        StatusFilter,
        ScopeFilter,
        ("created", admin.DateFieldListFilter),
    ]
    date_hierarchy = "created"
    ordering = ["-created"]
    # Columns with an index; sorting on others would sort the whole table.
    sortable_by = ["user", "scope_and_label", "expires", "issued"]
    show_full_result_count = False
    # Counts per filter choice would read every row.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    search_help_text = _("Username, email, scope or label.")
    raw_id_fields = ["user"]
    form = IssuedTokenChangeForm
    actions = ["revoke_selected"]
    fieldsets = [
        (None, {"fields": ["user", "scope", "label", "status_badge", "uses"]}),
        (
            _("Lifetime"),
            {"fields": ["created", "expires_at", "last_used_at", "max_uses"]},
        ),
        (
            _("Issue and revocation"),
            {"fields": ["issued_by", "revoked_at", "revoked_by", "revoke_reason"]},
        ),
    ]

    @admin.display(description=_("scope and label"), ordering="scope")
    def scope_and_label(self, obj: IssuedToken) -> str:
        """Show the scope, or "default scope", with the label below it."""
        return format_html(
            '<span class="sesame-db-scope">{}</span>{}',
            obj.scope or gettext("default scope"),
            format_html('<br><span class="sesame-db-label">{}</span>', obj.label)
            if obj.label
            else "",
        )

    @admin.display(description=_("expires at"), ordering="expires_at")
    def expires(self, obj: IssuedToken) -> str:
        """Show the expiry in the short format, which wraps onto two lines."""
        return _short_datetime(obj.expires_at)

    @admin.display(description=_("created"), ordering="created")
    def issued(self, obj: IssuedToken) -> str:
        """Show the creation time in the short format."""
        return _short_datetime(obj.created)

    # Permissions.

    def has_revoke_permission(
        self, request: HttpRequest, obj: IssuedToken | None = None
    ) -> bool:
        """Tell whether ``request.user`` may revoke links: the revoke or the change permission."""
        opts = self.opts
        return request.user.has_perm(
            f"{opts.app_label}.revoke_{opts.model_name}"
        ) or super().has_change_permission(request, obj)

    def has_change_permission(
        self, request: HttpRequest, obj: Any | None = None
    ) -> bool:
        # Changing a link is cutting it short: revoking it or shortening
        # its expiry. The revoke permission allows both.
        return self.has_revoke_permission(request, obj)

    # Pages.

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [*_user_search_fields(self.model), "scope", "label"]

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        # The change page shows the three users: one query, not four.
        queryset = self.get_queryset(request).select_related(
            "user", "issued_by", "revoked_by"
        )
        return _get_object(queryset, object_id, from_field)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Any | None = None
    ) -> list[str]:
        fields = flatten_fieldsets(self.get_fieldsets(request, obj))
        if self._can_shorten(request, obj):
            return [field for field in fields if field != "expires_at"]
        return fields

    def _can_shorten(self, request: HttpRequest, obj: IssuedToken | None) -> bool:
        return (
            obj is not None
            and obj.status == IssuedToken.Status.ACTIVE
            and self.has_revoke_permission(request, obj)
        )

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        # Before the default URLs, where <path:object_id>/ would match issue/.
        return [
            path(
                "issue/",
                self.admin_site.admin_view(self.issue_view),
                name="{}_{}_issue".format(*info),
            ),
            path(
                "<path:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="{}_{}_revoke".format(*info),
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args: Any) -> str:
        info = self.opts.app_label, self.opts.model_name
        return reverse(
            "admin:{}_{}_{}".format(*info, name),
            args=args,
            current_app=self.admin_site.name,
        )

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Links are issued on their own page, which shows the link once.
        if not self.has_add_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(self._url("issue"))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # "Save and add another" would lead to the issue page.
        extra_context = {"show_save_and_add_another": False, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any | None = None,
    ) -> Any:
        if obj is not None:
            can_shorten = self._can_shorten(request, obj)
            context.update(
                {
                    "can_revoke": obj.revoked_at is None
                    and self.has_revoke_permission(request, obj),
                    "show_save": can_shorten,
                    "show_save_and_continue": can_shorten,
                    **self._events_context(request, obj),
                }
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _events_context(self, request: HttpRequest, obj: IssuedToken) -> dict[str, Any]:
        # One query: the newest events with their actor, and how many there
        # are in all, counted by a window over the same rows.
        events = list(
            TokenEvent._default_manager.filter(token_id=obj.pk)
            .select_related("actor")
            .annotate(total=Window(Count("pk")))
            .order_by("-created_at", "-pk")[:EVENTS_SHOWN]
        )
        total = events[0].total if events else 0
        events_url = None
        try:
            events_admin = self.admin_site.get_model_admin(TokenEvent)
        except NotRegistered:
            pass
        else:
            if events_admin.has_view_permission(request):
                opts = TokenEvent._meta
                events_url = (
                    reverse(
                        f"admin:{opts.app_label}_{opts.model_name}_changelist",
                        current_app=self.admin_site.name,
                    )
                    + "?"
                    + urlencode({"token__id__exact": obj.pk})
                )
        return {
            "link_events": [
                {
                    "event": event,
                    "reason": event.get_reason_display()
                    if event.reason
                    else (
                        event.detail if event.kind == TokenEvent.Kind.REVOKED else ""
                    ),
                    "actor": _user_or_id(event.actor, event.actor_id),
                }
                for event in events
            ],
            "link_events_total": total,
            "link_events_url": events_url,
        }

    def save_model(
        self, request: HttpRequest, obj: IssuedToken, form: Any, change: bool
    ) -> None:
        # Only the expiry can change, and only to an earlier time: one
        # conditional UPDATE, so that a concurrent use or revocation isn't
        # overwritten by this form's stale copy of the row.
        if not change:  # pragma: no cover - add_view redirects to issue_view
            raise PermissionDenied
        if "expires_at" not in form.changed_data or obj.expires_at is None:
            return
        shortened = (
            type(obj)
            ._default_manager.filter(pk=obj.pk)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=obj.expires_at))
            .update(expires_at=obj.expires_at, modified=Now())
        )
        if not shortened:
            self.message_user(
                request,
                gettext("The expiry wasn't changed: it was already earlier."),
                messages.WARNING,
            )

    # Revoking.

    @admin.action(description=_("Revoke selected links"), permissions=["revoke"])
    def revoke_selected(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse | None:
        """Revoke the selected links after a confirmation page that asks for a reason."""
        confirmed = "post" in request.POST
        form = RevokeForm(request.POST if confirmed else None)
        if confirmed and form.is_valid():
            revoked = queryset.revoke(  # type: ignore[attr-defined]
                by=request.user, reason=form.cleaned_data["reason"], request=request
            )
            _message_revoked(self, request, revoked)
            return None
        counts = queryset.aggregate(
            total=Count("pk"), active=Count("pk", filter=Q(revoked_at__isnull=True))
        )
        preview = list(queryset.select_related("user")[:PREVIEW])
        summary = (
            ngettext(
                "Revoke %(total)d selected link, of which %(active)d isn't revoked yet?",
                "Revoke %(total)d selected links, of which %(active)d aren't revoked yet?",
                counts["total"],
            )
            % counts
        )
        return revoke_confirmation(
            self,
            request,
            form=form,
            title=gettext("Revoke links"),
            summary=summary,
            objects=[
                (self._url("change", quote(link.pk)), link, link.label)
                for link in preview
            ],
            more=counts["total"] - len(preview),
            action="revoke_selected",
            cancel_url=request.get_full_path(),
        )

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Revoke one link: GET shows the confirmation page, POST revokes."""
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(
                gettext("Issued link with ID “%s” doesn't exist.") % object_id
            )
        change_url = self._url("change", quote(obj.pk))
        form = RevokeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            revoked = self.model._default_manager.filter(pk=obj.pk).revoke(
                by=request.user, reason=form.cleaned_data["reason"], request=request
            )
            _message_revoked(self, request, revoked)
            return HttpResponseRedirect(change_url)
        if obj.revoked_at is not None:
            summary = gettext("This link is already revoked.")
        else:
            summary = gettext(
                "Revoke this link? It stops working at once, wherever it was sent."
            )
        return revoke_confirmation(
            self,
            request,
            form=form,
            title=gettext("Revoke link"),
            summary=summary,
            objects=[(change_url, obj, obj.label)],
            more=0,
            action=None,
            cancel_url=change_url,
            original=obj,
        )

    # Issuing.

    def issue_view(self, request: HttpRequest) -> HttpResponse:
        """Issue a link for a user and show it, once."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = IssueLinkForm(
                request.POST, request=request, admin_site=self.admin_site
            )
        else:
            form = IssueLinkForm(
                request=request,
                admin_site=self.admin_site,
                initial={
                    name: request.GET[name]
                    for name in ("user", "scope", "label", "target")
                    if name in request.GET
                },
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Issue a link"),
            "media": self.media + form.media,
            "form": form,
            "scopes": conf.ADMIN_SCOPES,
        }
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            expires_in = data["expires_in"]
            token, record = issue_token(
                data["user"],
                data["scope"],
                max_age=None
                if expires_in is None
                else datetime.timedelta(minutes=expires_in),
                max_uses=data["max_uses"],
                label=data["label"],
                issued_by=request.user,  # type: ignore[arg-type]
                request=request,
            )
            record.user = data["user"]  # named in the history's object_repr
            self.log_addition(request, record, [{"added": {}}])
            context.update(
                {
                    "title": gettext("Link issued"),
                    "issued_link": _IssuedLink(form.link(token)),
                    "record": record,
                    "change_url": self._url("change", quote(record.pk)),
                }
            )
            response = TemplateResponse(request, "sesame_db/admin/issued.html", context)
            # The page holds the token: no cache may keep it.
            patch_cache_control(response, no_store=True, no_cache=True, private=True)
            return response
        return TemplateResponse(request, "sesame_db/admin/issue.html", context)


# How many links the confirmation page of a revocation names.
PREVIEW = 20


def revoke_confirmation(
    model_admin: Any,
    request: HttpRequest,
    *,
    form: RevokeForm,
    title: str,
    summary: str,
    objects: list[tuple[str | None, Any, str]],
    more: int,
    action: str | None,
    cancel_url: str,
    original: Any = None,
) -> TemplateResponse:
    """Render the confirmation page of a revocation, for an action when ``action`` is set."""
    hidden: list[tuple[str, str]] = []
    if action is not None:
        # Post back what the changelist posted, like Django's delete_selected:
        # the same URL, with its filters, and the same selection.
        hidden = [("action", action), ("post", "yes")]
        hidden += [("select_across", request.POST.get("select_across", "0"))]
        hidden += [
            (ACTION_CHECKBOX_NAME, pk)
            for pk in request.POST.getlist(ACTION_CHECKBOX_NAME)
        ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "summary": summary,
        "objects": objects,
        "more": more,
        "form": form,
        "hidden_fields": hidden,
        "cancel_url": cancel_url,
        "original": original,
    }
    return TemplateResponse(
        request, "sesame_db/admin/revoke_confirmation.html", context
    )


def _message_revoked(model_admin: Any, request: HttpRequest, revoked: int) -> None:
    if revoked:
        model_admin.message_user(
            request,
            ngettext("Revoked %(count)d link.", "Revoked %(count)d links.", revoked)
            % {"count": revoked},
            messages.SUCCESS,
        )
    else:
        model_admin.message_user(
            request,
            gettext("No link was revoked: they were already revoked."),
            messages.WARNING,
        )


def _get_object(queryset: QuerySet[Any], object_id: str, from_field: str | None) -> Any:
    """Do what ModelAdmin.get_object() does, on ``queryset``."""
    opts = queryset.model._meta
    field = opts.pk if from_field is None else opts.get_field(from_field)
    try:
        return queryset.get(**{field.name: field.to_python(object_id)})
    except (queryset.model.DoesNotExist, ValidationError, ValueError):
        return None


def _user_search_fields(model: type[Model]) -> list[str]:
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


# The audit trail.


def _token_change_link(admin_site: admin.AdminSite, pk: int) -> str:
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


@admin.register(TokenEvent)
class TokenEventAdmin(_ModelAdmin):
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
    search_help_text = _("Username, email or scope; or an exact IP address.")
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
        return [*_user_search_fields(self.model), "scope"]

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
        return _get_object(queryset, object_id, from_field)

    @admin.display(description=_("link"))
    def link(self, obj: TokenEvent) -> str:
        """Link to the link's change page, or show its id once it's purged."""
        if obj.token_id is None:
            return ""
        if obj.token is None:
            return gettext("#%(id)s (deleted)") % {"id": obj.token_id}
        return _token_change_link(self.admin_site, obj.token_id)

    @admin.display(description=_("user"))
    def event_user(self, obj: TokenEvent) -> str:
        return _user_or_id(obj.user, obj.user_id)

    @admin.display(description=_("actor"))
    def event_actor(self, obj: TokenEvent) -> str:
        return _user_or_id(obj.actor, obj.actor_id)


# Users.


class _NewestInlineFormSet(_InlineFormSet):
    """An inline formset of the newest ``cap`` objects only."""

    cap = 20

    def get_queryset(self) -> Any:
        if not hasattr(self, "_newest"):
            self._newest = super().get_queryset()[: self.cap]
        return self._newest


class IssuedTokenInline(_LinkColumns, _TabularInline):
    """A user's links, newest first, read-only, at most :attr:`max_shown`."""

    model = IssuedToken
    fk_name = "user"
    formset = _NewestInlineFormSet
    fields = readonly_fields = (
        "link",
        "scope",
        "label",
        "status_badge",
        "uses",
        "expires_at",
        "last_used_at",
        "issued_by",
        "created",
    )
    ordering = ["-created"]
    extra = 0
    max_num = 0
    can_delete = False
    #: How many links are shown, newest first.
    max_shown = 20

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # Each row shows the link's str(), which names its user.
        return super().get_queryset(request).select_related("user", "issued_by")

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.cap = self.max_shown  # type: ignore[attr-defined]
        return formset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("link"))
    def link(self, obj: IssuedToken) -> str:
        return _token_change_link(self.admin_site, obj.pk)


class IssuedTokenUserAdminMixin(_UserAdminBase):
    """
    Add the user's links and a "Revoke all links of the selected users" action to a user admin.

    Put it before the user admin class::

        class UserAdmin(IssuedTokenUserAdminMixin, auth.admin.UserAdmin): ...

    The inline shows the :attr:`IssuedTokenInline.max_shown` newest links. The
    action needs the permissions that revoke links.

    """

    #: The inline of the user's links; set it to :obj:`None` to leave it out.
    issued_token_inline: type[IssuedTokenInline] | None = IssuedTokenInline

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        inlines = list(super().get_inlines(request, obj))
        if obj is not None and self.issued_token_inline is not None:
            inlines.append(self.issued_token_inline)
        return inlines

    def get_actions(
        self, request: HttpRequest, action_location: Any = None
    ) -> dict[str, Any]:
        # Django 6.1 passes action_location, the change list or the change
        # form; earlier versions don't have it. Revoking belongs to the list.
        actions: dict[str, Any]
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]
            if getattr(action_location, "value", action_location) != "CHANGE_LIST":
                return actions
        if getattr(self, "actions", None) is None or IS_POPUP_VAR in request.GET:
            return actions
        if self.has_revoke_links_permission(request):
            name = "revoke_issued_links"
            actions[name] = self.get_action(name)
        return actions

    def has_revoke_links_permission(self, request: HttpRequest) -> bool:
        """Tell whether ``request.user`` may revoke links: the revoke or the change permission."""
        opts = IssuedToken._meta
        return request.user.has_perm(
            f"{opts.app_label}.revoke_{opts.model_name}"
        ) or request.user.has_perm(
            f"{opts.app_label}.{get_permission_codename('change', opts)}"
        )

    @admin.action(description=_("Revoke all links of the selected users"))
    def revoke_issued_links(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse | None:
        """Revoke every link of the selected users after a confirmation page that asks for a reason."""
        if not self.has_revoke_links_permission(request):
            raise PermissionDenied
        links = IssuedToken._default_manager.filter(user__in=queryset.values("pk"))
        confirmed = "post" in request.POST
        form = RevokeForm(request.POST if confirmed else None)
        if confirmed and form.is_valid():
            revoked = links.revoke(
                by=request.user,  # type: ignore[arg-type]
                reason=form.cleaned_data["reason"],
                request=request,
            )
            _message_revoked(self, request, revoked)
            return None
        users = list(queryset[:PREVIEW])
        total = queryset.count()
        active = links.active().count()
        summary = ngettext(
            "Revoke the %(active)d active links of %(total)d selected user?",
            "Revoke the %(active)d active links of %(total)d selected users?",
            total,
        ) % {"active": active, "total": total}
        info = self.opts.app_label, self.opts.model_name
        objects = []
        for user in users:
            try:
                url = reverse(
                    "admin:{}_{}_change".format(*info),
                    args=[quote(user.pk)],
                    current_app=self.admin_site.name,
                )
            except NoReverseMatch:
                url = None
            objects.append((url, user, ""))
        return revoke_confirmation(
            self,
            request,
            form=form,
            title=gettext("Revoke links"),
            summary=summary,
            objects=objects,
            more=total - len(users),
            action="revoke_issued_links",
            cancel_url=request.get_full_path(),
        )

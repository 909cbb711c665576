"""
The admin of issued links.

Staff see every link with its status, revoke links, shorten their expiry,
issue a link by hand, and read the audit trail of each. The token of a link
is shown once, on the page that issues it, and never again: the database
can't rebuild it.

Settings are read when a page is built, never at import, and the user model
is resolved through the :class:`~sesame_db.models.IssuedToken` foreign key
when needed.

"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet, Window
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import patch_cache_control
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from sesame_db.admin.changelist import (
    EstimatedCountPaginator,
    GuestFilter,
    LinkColumns,
    RefuseNulMixin,
    ScopeFilter,
    StatusFilter,
    get_object_or_none,
    short_datetime,
    user_or_id,
    user_search_fields,
)
from sesame_db.admin.forms import IssuedTokenChangeForm, IssueLinkForm, RevokeForm
from sesame_db.conf import conf
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.utils import issue_guest_token, issue_token

if TYPE_CHECKING:
    from django.urls import URLPattern

    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = admin.ModelAdmin

__all__ = [
    "IssuedTokenAdmin",
]


# How many events the change page of a link shows, newest first.
EVENTS_SHOWN = 50


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


# Permissions.


def can_revoke(request: HttpRequest) -> bool:
    """
    Tell whether ``request.user`` may revoke links and shorten their expiry.

    That takes the ``sesame_db.revoke_issuedtoken`` permission or the change
    permission. Every check of the admin goes through here: the link admin,
    its actions and pages, and the action of
    :class:`~sesame_db.admin.IssuedTokenUserAdminMixin`.

    """
    opts = IssuedToken._meta
    user = request.user
    return user.has_perm(f"{opts.app_label}.revoke_{opts.model_name}") or user.has_perm(
        f"{opts.app_label}.{get_permission_codename('change', opts)}"
    )


# Links.


@admin.register(IssuedToken)
class IssuedTokenAdmin(RefuseNulMixin, LinkColumns, _ModelAdmin):
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
        "user_or_guest",
        "scope_and_label",
        "status_badge",
        "uses",
        "expires",
        "issued",
    ]
    list_display_links = ["user_or_guest", "scope_and_label"]
    list_select_related = ["user", "issued_by"]
    list_filter = [
        StatusFilter,
        GuestFilter,
        ScopeFilter,
        ("created", admin.DateFieldListFilter),
    ]
    date_hierarchy = "created"
    ordering = ["-created"]
    # Columns with an index; sorting on others would sort the whole table.
    sortable_by = ["user_or_guest", "scope_and_label", "expires", "issued"]
    show_full_result_count = False
    # Counts per filter choice would read every row.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    search_help_text = _("Username, email, guest, scope or label.")
    raw_id_fields = ["user"]
    form = IssuedTokenChangeForm
    actions = ["revoke_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "user",
                    "recipient",
                    "scope",
                    "label",
                    "status_badge",
                    "uses",
                    "bind_to_browser",
                ]
            },
        ),
        (
            _("Lifetime"),
            {"fields": ["created", "expires_at", "last_used_at", "max_uses"]},
        ),
        (
            _("Issue and revocation"),
            {"fields": ["issued_by", "revoked_at", "revoked_by", "revoke_reason"]},
        ),
    ]

    @admin.display(description=_("user or guest"), ordering="user")
    def user_or_guest(self, obj: IssuedToken) -> str:
        """Show the user, or a guest link's recipient and who shared it, without a query."""
        if obj.user_id is not None:
            return str(obj.user)
        sharer = obj.issued_by
        return format_html(
            '<span class="sesame-db-guest">{}</span>{}',
            gettext("Guest: %(recipient)s") % {"recipient": obj.recipient},
            format_html(
                '<br><span class="sesame-db-label">{}</span>',
                gettext("shared by %(user)s") % {"user": sharer},
            )
            if sharer is not None
            else "",
        )

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
        return short_datetime(obj.expires_at)

    @admin.display(description=_("created"), ordering="created")
    def issued(self, obj: IssuedToken) -> str:
        """Show the creation time in the short format."""
        return short_datetime(obj.created)

    # Permissions.

    def has_revoke_permission(
        self, request: HttpRequest, obj: IssuedToken | None = None
    ) -> bool:
        """Tell whether ``request.user`` may revoke links: the revoke or the change permission."""
        return can_revoke(request)

    def has_change_permission(
        self, request: HttpRequest, obj: Any | None = None
    ) -> bool:
        # Changing a link is cutting it short: revoking it or shortening
        # its expiry. The revoke permission allows both.
        return self.has_revoke_permission(request, obj)

    # Pages.

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [*user_search_fields(self.model), "recipient", "scope", "label"]

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        # The change page shows the three users: one query, not four.
        queryset = self.get_queryset(request).select_related(
            "user", "issued_by", "revoked_by"
        )
        return get_object_or_none(queryset, object_id, from_field)

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
                    "actor": user_or_id(event.actor, event.actor_id),
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
            message_revoked(self, request, revoked)
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
            message_revoked(self, request, revoked)
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
                    for name in ("user", "recipient", "scope", "label", "target")
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
            options: dict[str, Any] = {
                "max_age": None
                if expires_in is None
                else datetime.timedelta(minutes=expires_in),
                "max_uses": data["max_uses"],
                "label": data["label"],
                "issued_by": request.user,
                "request": request,
            }
            if data["recipient"]:
                token, record = issue_guest_token(
                    data["recipient"],
                    data["scope"],
                    bind_to_browser=data["bind_to_browser"],
                    **options,
                )
            else:
                token, record = issue_token(data["user"], data["scope"], **options)
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


# Revoking.


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


def message_revoked(model_admin: Any, request: HttpRequest, revoked: int) -> None:
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

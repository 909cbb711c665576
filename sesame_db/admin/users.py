"""
The links of a user in a user admin: an inline and a revocation action.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from sesame_db.admin.changelist import LinkColumns, token_change_link
from sesame_db.admin.forms import RevokeForm
from sesame_db.admin.links import (
    PREVIEW,
    can_revoke,
    message_revoked,
    revoke_confirmation,
)
from sesame_db.models import IssuedToken

if TYPE_CHECKING:
    _TabularInline = admin.TabularInline[Any, Any]
    _InlineFormSet = BaseInlineFormSet[Any, Any, Any]
    # The mixin is typed as the ModelAdmin it's mixed into.
    _UserAdminBase = admin.ModelAdmin[Any]
else:
    _TabularInline = admin.TabularInline
    _InlineFormSet = BaseInlineFormSet
    _UserAdminBase = object

__all__ = [
    "IssuedTokenInline",
    "IssuedTokenUserAdminMixin",
]


class _NewestInlineFormSet(_InlineFormSet):
    """An inline formset of the newest ``cap`` objects only."""

    cap = 20

    def get_queryset(self) -> Any:
        if not hasattr(self, "_newest"):
            self._newest = super().get_queryset()[: self.cap]
        return self._newest


class IssuedTokenInline(LinkColumns, _TabularInline):
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
        return token_change_link(self.admin_site, obj.pk)


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
            # django-stubs before 6.1 lack the argument.
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg, unused-ignore]
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
        return can_revoke(request)

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
            message_revoked(self, request, revoked)
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

"""
The forms of the admin of issued links: issuing, shortening, revoking.

"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from sesame_db.conf import conf
from sesame_db.managers import RECIPIENT_CONTROL_CHARACTERS
from sesame_db.models import IssuedToken

if TYPE_CHECKING:
    _ModelForm = forms.ModelForm[Any]
else:
    _ModelForm = forms.ModelForm

__all__ = [
    "IssueLinkForm",
    "IssuedTokenChangeForm",
    "RevokeForm",
]


# The longest expiry that the issue form accepts, in minutes: ten years.
MAX_EXPIRES_IN = 10 * 366 * 24 * 60

SHORTEN_HELP_TEXT = _(
    "Shorten the expiry by entering an earlier time; a time in the past ends "
    "the link at once. It can’t be extended: the link carries its expiry, "
    "signed, and it’s checked before the database, so a later time here "
    "wouldn’t make the link work any longer."
)


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
    recipient = forms.CharField(
        label=_("Guest"),
        required=False,
        max_length=254,
        # As sesame_db.store.issue_guests() refuses them.
        validators=[
            RegexValidator(
                RECIPIENT_CONTROL_CHARACTERS,
                inverse_match=True,
                message=_(
                    "A recipient can’t contain control characters, such as line breaks."
                ),
                code="control_characters",
            )
        ],
        help_text=_(
            "For a guest link, which logs no one in: the email address or the "
            "name of the person it’s shared with."
        ),
    )
    bind_to_browser = forms.BooleanField(
        label=_("Bind to the first browser"),
        required=False,
        help_text=_("A guest link then works only in the browser that opens it first."),
    )
    target = forms.CharField(
        label=_("Target"),
        max_length=2000,
        initial="/",
        help_text=_(
            "A path on this site whose view accepts tokens, such as /reports/42/."
        ),
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
            required=False,
            widget=ForeignKeyRawIdWidget(user_field.remote_field, admin_site),
            help_text=_(
                "The id of the user whom the link logs in. Empty for a guest link."
            ),
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
            [
                "user",
                "recipient",
                "bind_to_browser",
                "scope",
                "expires_in",
                "max_uses",
                "label",
                "target",
            ]
        )

    def clean_user(self) -> Any:
        user = self.cleaned_data["user"]
        if user is not None and not getattr(user, "is_active", True):
            raise ValidationError(
                _("This user is inactive: a link wouldn't log them in."),
                code="inactive",
            )
        return user

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        user, recipient = data.get("user"), data.get("recipient")
        if "user" in data and "recipient" in data:
            if user is None and not recipient:
                raise ValidationError(
                    _("Choose a user, or enter a guest’s recipient for a guest link."),
                    code="no_one",
                )
            if user is not None and recipient:
                raise ValidationError(
                    _("Choose a user or enter a recipient, not both."),
                    code="both",
                )
        if recipient and not data.get("scope"):
            self.add_error(
                "scope",
                ValidationError(
                    _("A guest link needs a scope: it opens one thing."),
                    code="guest_scope",
                ),
            )
        if user is not None and data.get("bind_to_browser"):
            self.add_error(
                "bind_to_browser",
                ValidationError(
                    _("Only guest links can be bound to a browser."),
                    code="bind_user",
                ),
            )
        return data

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

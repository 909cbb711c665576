"""
The forms of login by email: the request of a link, and the code.

"""

from __future__ import annotations

import re

from django import forms
from django.utils.translation import gettext_lazy as _

from sesame_db.conf import conf

__all__ = ["LoginCodeForm", "LoginRequestForm"]


class LoginRequestForm(forms.Form):
    """Ask for a login link: an email address, and where to go after login."""

    email = forms.EmailField(
        label=_("Email address"),
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    # Checked again when the link is used: it must stay on the site.
    next = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2000)


_separators_re = re.compile(r"[\s-]")


class LoginCodeForm(forms.Form):
    """The code of the email, typed in the browser that asked for the link."""

    code = forms.CharField(
        label=_("Code"),
        max_length=32,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
            }
        ),
    )

    def clean_code(self) -> str:
        # People copy codes with spaces or dashes.
        code = _separators_re.sub("", self.cleaned_data["code"])
        if not (code.isascii() and code.isdigit()) or len(code) != int(
            conf.LOGIN_CODE_LENGTH
        ):
            raise forms.ValidationError(
                _("Enter the %(length)d-digit code from the email."),
                code="invalid",
                params={"length": conf.LOGIN_CODE_LENGTH},
            )
        return code

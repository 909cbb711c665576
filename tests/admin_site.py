"""
A second admin site for the tests of the admin.

It registers a user admin with
:class:`~sesame_db.admin.IssuedTokenUserAdminMixin`, as a project would, on
its own site, so that the default site stays as Django and sesame_db set it
up.

"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import User

from sesame_db.admin import IssuedTokenAdmin, IssuedTokenUserAdminMixin, TokenEventAdmin
from sesame_db.models import IssuedToken, TokenEvent

site = admin.AdminSite(name="test_admin")
site.register(IssuedToken, IssuedTokenAdmin)
site.register(TokenEvent, TokenEventAdmin)


@admin.register(User, site=site)
class UserAdmin(IssuedTokenUserAdminMixin, BaseUserAdmin):  # type: ignore[type-arg]
    pass

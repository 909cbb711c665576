"""
The Django admin of the database store: issued links and their audit trail.

Importing this package registers :class:`IssuedTokenAdmin` and
:class:`TokenEventAdmin` on the default admin site, as Django's
``autodiscover()`` does. Its modules: ``forms``, ``changelist`` (the
paginator, filters and columns of large tables), ``links``, ``events`` and
``users``; import the names below from here.

"""

from __future__ import annotations

from sesame_db.admin.changelist import (
    EstimatedCountPaginator,
    GuestFilter,
    ScopeFilter,
    StatusFilter,
    estimated_count,
)
from sesame_db.admin.events import TokenEventAdmin
from sesame_db.admin.forms import IssuedTokenChangeForm, IssueLinkForm, RevokeForm
from sesame_db.admin.links import IssuedTokenAdmin
from sesame_db.admin.users import IssuedTokenInline, IssuedTokenUserAdminMixin

__all__ = [
    "EstimatedCountPaginator",
    "GuestFilter",
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

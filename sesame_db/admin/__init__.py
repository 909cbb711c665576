"""
The Django admin of the database store: issued links and their audit trail.

Importing this package registers :class:`IssuedTokenAdmin` and
:class:`TokenEventAdmin` on the default admin site, as Django's
``autodiscover()`` does.

"""

from __future__ import annotations

from .links import (
    EstimatedCountPaginator,
    IssuedTokenAdmin,
    IssuedTokenChangeForm,
    IssuedTokenInline,
    IssuedTokenUserAdminMixin,
    IssueLinkForm,
    RevokeForm,
    ScopeFilter,
    StatusFilter,
    TokenEventAdmin,
    estimated_count,
)

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

"""
Signals sent by sesame_db.

They're sent after the database transaction that records the event commits,
so a receiver never sees an event that was rolled back.

"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["token_issued", "token_rejected", "token_revoked", "token_used"]

# Sent when a stored token is issued.
# Arguments: sender (IssuedToken), token (IssuedToken), issued_by (user or None).
token_issued = Signal()

# Sent when a token authenticates a user.
# Arguments: sender (the backend class), request (or None), user,
# token (IssuedToken, or None for a stateless token), scope.
token_used = Signal()

# Sent when a token is rejected.
# Arguments: sender (the backend class), request (or None), reason (Reason),
# token_id (int, or None when the token doesn't identify a stored token), scope.
token_rejected = Signal()

# Sent when stored tokens are revoked.
# Arguments: sender (IssuedToken), token_ids (list of int), revoked_by (user or None), reason (str).
token_revoked = Signal()

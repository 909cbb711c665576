"""Logging of the demo: a refused link is one line in the console, not a traceback."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied


class OneLineForbidden(logging.Filter):
    """
    Drop the traceback of "Forbidden (Permission denied)" records.

    Django logs a 403 answer to :exc:`~django.core.exceptions.PermissionDenied`
    with its traceback. In the demo, a refused link is expected, and its reason
    is already on the ``sesame_db`` logger's line.

    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PermissionDenied):
            record.exc_info = None
            record.exc_text = None
        return True

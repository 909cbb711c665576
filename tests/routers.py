from __future__ import annotations


class ReadsElsewhereRouter:
    """Send reads to the "other" database, like a lagging replica, and writes to "default"."""

    def db_for_read(self, model, **hints):
        return "other"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

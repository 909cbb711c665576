from __future__ import annotations


class ReadsElsewhereRouter:
    """Send reads to the "other" database, like a lagging replica, and writes to "default"."""

    def db_for_read(self, model, **hints):
        return "other"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True


class StoreOnDefaultRouter:
    """Keep the tables of sesame_db on the "default" database only."""

    def allow_migrate(self, db, app_label, **hints):
        return db == "default" if app_label == "sesame_db" else None


class UsersElsewhereRouter:
    """Keep users and the store on the "other" database, as a project with a separate users database would."""

    apps = {"auth", "sesame_db"}

    def db_for_read(self, model, **hints):
        return "other" if model._meta.app_label in self.apps else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        if {obj1._meta.app_label, obj2._meta.app_label} <= self.apps:
            return True
        return None

    def allow_migrate(self, db, app_label, **hints):
        return db == "other" if app_label in self.apps else None


class PrimaryReplicaRouter:
    """
    Send reads to a replica and writes to the primary (docs/scale.rst).

    sesame_db reads what decides a link's fate where it writes, through
    db_for_write, whatever this router says; sessions are read from the
    primary too, so that a login is seen by the next request at once.
    """

    primary = "default"
    replica = "replica"
    read_from_primary = {"sessions"}

    def db_for_read(self, model, **hints):
        if model._meta.app_label in self.read_from_primary:
            return self.primary
        return self.replica

    def db_for_write(self, model, **hints):
        return self.primary

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, **hints):
        return db == self.primary


class ScalePrimaryReplicaRouter(PrimaryReplicaRouter):
    """PrimaryReplicaRouter on the throwaway databases of tests/test_replica.py."""

    primary = "scale_primary"
    replica = "scale_replica"


class ScaleBouncerRouter:
    """Everything through PgBouncer, for tests/test_pgbouncer.py."""

    alias = "scale_bouncer"

    def db_for_read(self, model, **hints):
        return self.alias

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, **hints):
        return db == self.alias

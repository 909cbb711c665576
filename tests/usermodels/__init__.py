"""
User models of every shape a project may have, and the settings that switch to each.

The test matrix in ``tests/test_user_models.py`` runs the same scenarios with
each of them, in a subprocess whenever the shape needs another
:setting:`AUTH_USER_MODEL` (the store's foreign key is bound at import).

"""

"""Tests of the admin, one module per module of :mod:`sesame_db.admin`."""

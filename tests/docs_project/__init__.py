"""
A throwaway project for the snippets of the documentation (tests/test_docs.py).

Snippets that start with a file name, such as ``# views.py``, run in a fresh
module of this package, so that ``from . import views`` and
``from .models import Document`` work as in a project.

"""

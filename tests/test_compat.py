"""
Compatibility with django-sesame 3.2, side by side.

The same scenarios run against the real django-sesame (a test dependency
only) and against sesame_db, each configured by the same ``SESAME_*``
settings and its own backend: custom packers of every shape, ``get_user()``
with each ``update_last_login``, one-time tokens through each entry point
with their query counts, and the errors raised for misuse. Where sesame_db
differs on purpose, the test says so and ``docs/migrating.rst`` explains
why; tokens themselves are compared in ``tests/test_interop.py``.

"""

from __future__ import annotations

import importlib
import struct
import unittest
from collections.abc import Callable
from types import ModuleType
from typing import Any
from unittest import mock

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection
from django.http import HttpResponse, HttpResponseBase
from django.test import RequestFactory, TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils.decorators import method_decorator
from django.views.generic import View

from sesame_db import checks, packers
from sesame_db.contrib.channels import authenticate_connection
from sesame_db.views import TokenAuthenticationMixin

from .mixins import CreateUserMixin, last_login_updates
from .test_packers import SAMPLE_PKS, custom_packers

try:
    import sesame.packers
    import sesame.settings
except ImportError:  # tox.ini installs django-sesame in every test env
    HAS_SESAME = False
else:
    HAS_SESAME = True

try:
    from rest_framework.views import APIView

    from sesame_db.contrib.rest_framework import SesameTokenAuthentication
except ImportError:  # pragma: no cover
    HAS_DRF = False
else:
    HAS_DRF = True

LIBRARIES = ["sesame", "sesame_db"]
SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"
BUILT_IN_PACKERS = [
    "ShortPacker",
    "UnsignedShortPacker",
    "LongPacker",
    "UnsignedLongPacker",
    "LongLongPacker",
    "UnsignedLongLongPacker",
    "UUIDPacker",
    "BytesPacker",
    "StrPacker",
]


def module(library: str, name: str) -> ModuleType:
    return importlib.import_module(f"{library}.{name}")


def configured(library: str, **settings: Any) -> Any:
    """Return ``override_settings`` for ``library``, with its backend only."""
    return override_settings(
        **settings, AUTHENTICATION_BACKENDS=[f"{library}.backends.ModelBackend"]
    )


# Custom packers that subclass no library, in each shape of method: both
# libraries load them by the same dotted path, so tokens are identical.


class InstanceMethodPacker:
    def pack_pk(self, user_pk):
        return struct.pack("!i", user_pk)

    def unpack_pk(self, data):
        return struct.unpack("!i", data[:4])[0], data[4:]


class ClassMethodPacker:
    @classmethod
    def pack_pk(cls, user_pk):
        return struct.pack("!i", user_pk)

    @classmethod
    def unpack_pk(cls, data):
        return struct.unpack("!i", data[:4])[0], data[4:]


class StaticMethodPacker:
    @staticmethod
    def pack_pk(user_pk):
        return struct.pack("!i", user_pk)

    @staticmethod
    def unpack_pk(data):
        return struct.unpack("!i", data[:4])[0], data[4:]


SHARED_PACKERS = ["InstanceMethodPacker", "ClassMethodPacker", "StaticMethodPacker"]

# Subclasses of each library's built-in packers, in each shape, such as
# "sesame__LongPacker_ClassMethodPacker": tests.test_packers.custom_packers().
SUBCLASS_PACKERS: dict[str, list[str]] = {library: [] for library in LIBRARIES}
if HAS_SESAME:
    for _library in LIBRARIES:
        for _parent_name in BUILT_IN_PACKERS:
            _parent = getattr(module(_library, "packers"), _parent_name)
            for _packer_class in custom_packers(_parent):
                _name = f"{_library}__{_parent_name}_{_packer_class.__name__}"
                _packer_class.__name__ = _packer_class.__qualname__ = _name
                globals()[_name] = _packer_class
                SUBCLASS_PACKERS[_library].append(_name)


def current_packer(library: str) -> Any:
    """Return the packer that ``library`` uses with the current settings."""
    if library == "sesame":
        return sesame.packers.packer
    return packers.current_packer()


def ok(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("ok")


def with_auth(view: Any) -> Any:
    """Wrap ``view`` in Django's session and authentication middleware."""
    return SessionMiddleware(DjangoAuthenticationMiddleware(view))


def entry_points(library: str) -> dict[str, Callable[[Any, str], Any]]:
    """
    Return the entry points of ``library``, each as a function of a request and a token.

    django-sesame has no class-based view mixin, Django REST framework
    class, nor Channels middleware: the counterparts are what its
    documentation suggests, ``method_decorator(authenticate)`` and
    ``get_user(token)``.

    """
    decorators = module(library, "decorators")
    middleware = module(library, "middleware")
    views = module(library, "views")
    utils = module(library, "utils")

    def run(handler):
        return lambda request, token: handler(request)

    if library == "sesame":

        @method_decorator(decorators.authenticate, name="dispatch")
        class ClassBasedView(View):
            get = ok

        @method_decorator(decorators.authenticate(permanent=True), name="dispatch")
        class PermanentClassBasedView(View):
            get = ok

        def api(request, token):
            return utils.get_user(token)

        websocket = api
    else:

        class ClassBasedView(TokenAuthenticationMixin, View):  # type: ignore[no-redef]
            get = ok

        class PermanentClassBasedView(ClassBasedView):  # type: ignore[no-redef]
            permanent = True

        def api(request, token):
            class WhoAmI(APIView):  # type: ignore[misc]
                authentication_classes = [SesameTokenAuthentication]

                def get(self, request):
                    return HttpResponse(request.user.get_username())

            request.META["HTTP_AUTHORIZATION"] = f"Sesame {token}"
            return WhoAmI.as_view()(request)

        def websocket(request, token):
            scope = {"type": "websocket", "path": "/", "client": ("192.0.2.1", 1)}
            return async_to_sync(authenticate_connection)(scope, token)

    points = {
        "middleware": run(with_auth(middleware.AuthenticationMiddleware(ok))),
        "@authenticate": run(with_auth(decorators.authenticate(ok))),
        "@authenticate(permanent=True)": run(
            with_auth(decorators.authenticate(permanent=True)(ok))
        ),
        "LoginView": run(with_auth(views.LoginView.as_view())),
        "class-based view": run(with_auth(ClassBasedView.as_view())),
        "class-based view, permanent": run(
            with_auth(PermanentClassBasedView.as_view())
        ),
        "WebSocket": websocket,
    }
    if HAS_DRF or library == "sesame":
        points["API"] = api
    return points


def succeeded(entry_point: Any, request: Any, token: str) -> bool:
    """Tell whether ``entry_point`` accepts ``token``."""
    try:
        result = entry_point(request, token)
    except PermissionDenied:
        return False
    if isinstance(result, HttpResponseBase):
        # A middleware runs the view whether the token is valid or not.
        return result.status_code < 400 and request.user.is_authenticated
    return result is not None


@unittest.skipUnless(HAS_SESAME, "django-sesame isn't installed")
class PackerCompatTests(CreateUserMixin, TestCase):
    def test_shared_packers_of_every_shape(self):
        # The same class, loaded by both: the same token, accepted by both.
        for name in SHARED_PACKERS:
            settings = {"SESAME_PACKER": f"tests.test_compat.{name}"}
            tokens = {}
            for library in LIBRARIES:
                with (
                    self.subTest(packer=name, library=library),
                    configured(library, **settings),
                ):
                    tokens[library] = module(library, "utils").get_token(self.user)
            self.assertEqual(tokens["sesame"], tokens["sesame_db"], name)
            for library in LIBRARIES:
                with (
                    self.subTest(packer=name, library=library),
                    configured(library, **settings),
                ):
                    user = module(library, "utils").get_user(tokens["sesame"])
                    self.assertEqual(user, self.user)

    def test_subclasses_of_built_in_packers_of_every_shape(self):
        # Each library with subclasses of its own built-in packers: where
        # django-sesame's work, sesame_db's work and pack the same bytes.
        for sesame_name, sesame_db_name in zip(
            SUBCLASS_PACKERS["sesame"], SUBCLASS_PACKERS["sesame_db"], strict=True
        ):
            parent_name = sesame_name.split("__")[1].split("_")[0]
            user_pk = SAMPLE_PKS[getattr(module("sesame_db", "packers"), parent_name)]
            packed = {}
            for library, name in [
                ("sesame", sesame_name),
                ("sesame_db", sesame_db_name),
            ]:
                with (
                    self.subTest(packer=name),
                    configured(library, SESAME_PACKER=f"tests.test_compat.{name}"),
                ):
                    packer = current_packer(library)
                    packed[library] = packer.pack_pk(user_pk)
                    self.assertEqual(packer.unpack_pk(packed[library]), (user_pk, b""))
            self.assertEqual(packed["sesame"], packed["sesame_db"], sesame_db_name)

    def test_subclasses_of_built_in_packers_authenticate(self):
        # The whole way, with the default user model's integer primary key.
        for library in LIBRARIES:
            for name in SUBCLASS_PACKERS[library]:
                if "_LongPacker_" not in name:
                    continue
                with (
                    self.subTest(packer=name),
                    configured(library, SESAME_PACKER=f"tests.test_compat.{name}"),
                ):
                    utils = module(library, "utils")
                    token = utils.get_token(self.user)
                    self.assertEqual(utils.get_user(token), self.user)


@unittest.skipUnless(HAS_SESAME, "django-sesame isn't installed")
class GetUserCompatTests(CreateUserMixin, TestCase):
    def outcome(self, library, one_time, update_last_login):
        """Return (user, whether last_login changed, queries, reusable) for a fresh token."""
        self.user.refresh_from_db()
        with configured(library, SESAME_ONE_TIME=one_time):
            utils = module(library, "utils")
            token = utils.get_token(self.user)
            before = self.user.last_login
            with self.assertNumQueries(
                self.expected_queries(library, one_time, update_last_login)
            ) as queries:
                user = utils.get_user(token, update_last_login=update_last_login)
            self.user.refresh_from_db()
            reusable = utils.get_user(token, update_last_login=False) is not None
        return user, self.user.last_login != before, len(queries), reusable

    def expected_queries(self, library, one_time, update_last_login):
        # 1. SELECT the user.
        # 2. UPDATE last_login, when the token is one-time or when
        #    update_last_login is True; sesame_db consumes a one-time
        #    token even when update_last_login is False.
        if library == "sesame":
            writes = update_last_login or (update_last_login is None and one_time)
        else:
            writes = update_last_login or one_time
        return 1 + bool(writes)

    def test_update_last_login(self):
        for one_time in [False, True]:
            for update_last_login in [None, True, False]:
                outcomes = {
                    library: self.outcome(library, one_time, update_last_login)
                    for library in LIBRARIES
                }
                with self.subTest(
                    one_time=one_time, update_last_login=update_last_login
                ):
                    self.assertEqual(outcomes["sesame"][0], self.user)
                    if one_time and update_last_login is False:
                        # The deliberate difference: django-sesame leaves a
                        # one-time token usable again; sesame_db consumes it.
                        self.assertEqual(outcomes["sesame"][1:], (False, 1, True))
                        self.assertEqual(outcomes["sesame_db"][1:], (True, 2, False))
                    else:
                        self.assertEqual(outcomes["sesame"], outcomes["sesame_db"])


@unittest.skipUnless(HAS_SESAME, "django-sesame isn't installed")
@override_settings(SESSION_ENGINE=SIGNED_COOKIES)
class EntryPointCompatTests(CreateUserMixin, TestCase):
    def use(self, library, name, one_time):
        """Use a fresh token through an entry point; return (accepted, queries, last_login writes, reusable)."""
        self.user.refresh_from_db()
        factory = RequestFactory()
        with configured(library, SESAME_ONE_TIME=one_time):
            entry_point = entry_points(library)[name]
            token = module(library, "utils").get_token(self.user)
            with CaptureQueriesContext(connection) as queries:
                accepted = succeeded(
                    entry_point, factory.get("/", {"sesame": token}), token
                )
            again = succeeded(entry_point, factory.get("/", {"sesame": token}), token)
        return accepted, len(queries), len(last_login_updates(queries)), again

    def test_entry_points(self):
        names = entry_points("sesame_db").keys() & entry_points("sesame").keys()
        self.assertGreaterEqual(len(names), 8 if HAS_DRF else 7)
        for one_time in [False, True]:
            for name in sorted(names):
                sesame_outcome = self.use("sesame", name, one_time)
                sesame_db_outcome = self.use("sesame_db", name, one_time)
                with self.subTest(one_time=one_time, entry_point=name):
                    self.assertTrue(sesame_outcome[0])
                    self.assertTrue(sesame_db_outcome[0])
                    # At most django-sesame's queries; in fact the same.
                    self.assertEqual(sesame_db_outcome[1], sesame_outcome[1])
                    # last_login is written at most once.
                    self.assertEqual(sesame_db_outcome[2], sesame_outcome[2])
                    self.assertLessEqual(sesame_db_outcome[2], 1)
                    # A one-time token is used up, by both.
                    self.assertEqual(sesame_outcome[3], not one_time)
                    self.assertEqual(sesame_db_outcome[3], not one_time)


@unittest.skipUnless(HAS_SESAME, "django-sesame isn't installed")
class ErrorCompatTests(CreateUserMixin, TestCase):
    def raised(self, library, call, **settings):
        """Return the exception that ``call(library)`` raises with ``settings``."""
        # django-sesame may raise as soon as the settings change.
        try:
            with configured(library, **settings):
                call(library)
        except Exception as exc:
            return exc
        self.fail(f"{library}: nothing raised")

    def assertSameError(self, call, **settings):
        """Assert that both libraries raise the same type, and that sesame_db's text contains django-sesame's."""
        sesame_error = self.raised("sesame", call, **settings)
        sesame_db_error = self.raised("sesame_db", call, **settings)
        self.assertIs(type(sesame_db_error), type(sesame_error))
        self.assertIn(str(sesame_error), str(sesame_db_error))

    def get_user(self, *args, **kwargs):
        return lambda library: module(library, "utils").get_user(*args, **kwargs)

    def with_token(self, call):
        def with_token(library):
            return call(library, module(library, "utils").get_token(self.user))

        return with_token

    def test_get_user_with_neither_request_nor_token(self):
        for value in [None, 42, b"token", object(), {"sesame": "token"}]:
            with self.subTest(value=value):
                self.assertSameError(self.get_user(value))

    def test_get_user_with_bad_scope(self):
        for scope in [None, 42, b"scope"]:
            with self.subTest(scope=scope):
                self.assertSameError(
                    self.with_token(
                        lambda library, token, scope=scope: module(
                            library, "utils"
                        ).get_user(token, scope=scope)
                    )
                )

    def test_get_user_with_bad_max_age(self):
        for max_age in ["300", [300]]:
            with self.subTest(max_age=max_age):
                self.assertSameError(
                    self.with_token(
                        lambda library, token, max_age=max_age: module(
                            library, "utils"
                        ).get_user(token, max_age=max_age)
                    ),
                    SESAME_MAX_AGE=300,
                )

    def test_get_user_with_too_many_positional_arguments(self):
        self.assertSameError(self.get_user("token", "", None, True))

    def test_token_functions_with_a_non_user(self):
        for function in ["get_token", "get_parameters", "get_query_string"]:
            for value in [None, "john", object()]:
                with self.subTest(function=function, value=value):
                    self.assertSameError(
                        lambda library, function=function, value=value: getattr(
                            module(library, "utils"), function
                        )(value)
                    )

    def test_get_token_with_bad_scope(self):
        for scope in [None, 42]:
            with self.subTest(scope=scope):
                self.assertSameError(
                    lambda library, scope=scope: module(library, "utils").get_token(
                        self.user, scope=scope
                    )
                )

    def test_get_token_with_an_unsaved_user(self):
        # django-sesame lets the struct.error of its packer through;
        # sesame_db raises an error that is both a ValueError and a
        # struct.error, with django-sesame's text after its own.
        unsaved = get_user_model()(username="unsaved")
        errors = {
            library: self.raised(
                library, lambda library: module(library, "utils").get_token(unsaved)
            )
            for library in LIBRARIES
        }
        self.assertIs(type(errors["sesame"]), struct.error)
        self.assertIsInstance(errors["sesame_db"], struct.error)
        self.assertIsInstance(errors["sesame_db"], ValueError)
        self.assertIn(str(errors["sesame"]), str(errors["sesame_db"]))

    def decorated(self, library, **kwargs):
        return module(library, "decorators").authenticate(**kwargs)(ok)

    def test_authenticate_misuse(self):
        factory = RequestFactory()
        cases = {
            "permanent without sessions": lambda library, token: self.decorated(
                library, permanent=True
            )(factory.get("/", {"sesame": token})),
            "scope isn't a string": lambda library, token: self.decorated(
                library, scope=42
            )(factory.get("/", {"sesame": token})),
            "scope needs a missing argument": lambda library, token: self.decorated(
                library, scope="report:{pk}"
            )(factory.get("/", {"sesame": token})),
            "not a request": lambda library, token: self.decorated(library)(None),
            "a string": lambda library, token: self.decorated(library)("request"),
        }
        for name, call in cases.items():
            with self.subTest(case=name):
                self.assertSameError(self.with_token(call))

    def test_login_view_without_auth(self):
        self.assertSameError(
            self.with_token(
                lambda library, token: module(library, "views").LoginView.as_view()(
                    RequestFactory().get("/", {"sesame": token})
                )
            )
        )

    def test_bad_settings_at_use(self):
        # Both raise when the setting is used, such as when creating a token.
        cases: dict[str, dict[str, Any]] = {
            "packer module not found": {"SESAME_PACKER": "nowhere.Packer"},
            "packer class not found": {"SESAME_PACKER": "tests.models.Nowhere"},
            "primary key field isn't unique": {"SESAME_PRIMARY_KEY_FIELD": "email"},
            "primary key field doesn't exist": {"SESAME_PRIMARY_KEY_FIELD": "nowhere"},
            "signature too large": {"SESAME_SIGNATURE_SIZE": 100},
            "signature size isn't an integer": {"SESAME_SIGNATURE_SIZE": "10"},
            "no token formats": {"SESAME_TOKENS": []},
            "max age isn't a number": {"SESAME_MAX_AGE": "300"},
        }
        for name, settings in cases.items():
            with self.subTest(case=name):
                self.assertSameError(
                    self.with_token(
                        lambda library, token: module(library, "utils").get_user(token)
                    ),
                    **settings,
                )

    def test_insecure_settings(self):
        # django-sesame raises when it's imported; sesame_db reports a
        # system check, with the same advice.
        settings = {
            "SESAME_MAX_AGE": None,
            "SESAME_INVALIDATE_ON_PASSWORD_CHANGE": False,
        }
        with override_settings(**settings):
            with self.assertRaises(ImproperlyConfigured) as cm:
                sesame.settings.check()
            errors = checks.check_settings()
        self.assertEqual([error.id for error in errors], ["sesame_db.E001"])
        self.assertIn(
            "set SESAME_MAX_AGE to a low value or set SESAME_INVALIDATE_ON_PASSWORD_CHANGE to True",
            str(cm.exception),
        )
        self.assertIn(
            "Set SESAME_MAX_AGE to a low value or set SESAME_INVALIDATE_ON_PASSWORD_CHANGE to True",
            errors[0].hint or "",
        )

    @override_settings(
        AUTH_USER_MODEL="tests.NoEmailUser", SESAME_INVALIDATE_ON_EMAIL_CHANGE=True
    )
    def test_missing_email_field(self):
        with self.assertRaises(ImproperlyConfigured):
            sesame.settings.check()
        errors = checks.check_user_model()
        self.assertEqual([error.id for error in errors], ["sesame_db.E002"])

    def test_unsupported_primary_key(self):
        # django-sesame raises NotImplementedError when it's imported;
        # sesame_db raises ImproperlyConfigured when a packer is needed and
        # reports it as a system check.
        pk = get_user_model()._meta.pk
        with mock.patch.object(pk, "get_internal_type", return_value="DecimalField"):
            with self.assertRaises(NotImplementedError) as sesame_cm:
                sesame.packers.get_packer()
            with self.assertRaises(ImproperlyConfigured) as sesame_db_cm:
                module("sesame_db", "packers").get_packer()
            errors = checks.check_user_model()
        self.assertIn(str(sesame_cm.exception), str(sesame_db_cm.exception))
        self.assertEqual([error.id for error in errors], ["sesame_db.E003"])

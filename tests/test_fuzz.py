"""
Property-based tests: no input makes sesame_db raise, or accept what it shouldn't.

Inputs go to :func:`sesame_db.utils.get_user` and :func:`~sesame_db.utils.aget_user`
and, through the test client, to the decorator, :class:`~sesame_db.views.LoginView`
and the middleware, under WSGI and ASGI (see ``tests/fuzz_urls.py``): random
text, random bytes in Base64, truncated and edited tokens, flipped bits,
tokens of other users or scopes, v1-looking tokens and v1 tokens signed with
the right key but holding garbage. With valid tokens, random ``next`` URLs and
query strings check that LoginView only follows safe URLs and that the
middleware's redirect drops the token and keeps the other parameters.

A subtlety: the last character of a Base64 token carries unused low bits, so
editing it may give the same bytes, which is still a valid token. Tests that
edit characters expect a rejection only when the decoded bytes change.

Examples are derandomized, so that every run tests the same inputs; set
``FUZZ_EXAMPLES_FACTOR`` to run more (or fewer) of them.

"""

from __future__ import annotations

import base64
import logging
import os
import re
import string
import time
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.http import QueryDict
from django.test import AsyncClient, Client, override_settings
from django.test import TestCase as DjangoTestCase
from django.utils.encoding import iri_to_uri
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from sesame_db.conf import conf
from sesame_db.packers import current_packer
from sesame_db.utils import aget_user, get_token, get_user

from .fuzz_urls import middleware_with_sesame
from .mixins import IsolateDjangoSesameMixin

FACTOR = float(os.environ.get("FUZZ_EXAMPLES_FACTOR", "1"))


def fuzz(max_examples: int) -> Any:
    """Configure a property-based test to run ``max_examples`` reproducible examples."""
    return settings(
        max_examples=max(1, int(max_examples * FACTOR)),
        deadline=None,
        derandomize=True,
        database=None,
        # Huge strings and the database make some examples slow by design.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


V1 = {"SESAME_TOKENS": ["sesame_db.tokens_v1"]}

V2_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "max age": {"SESAME_MAX_AGE": 300},
    "one-time": {"SESAME_ONE_TIME": True, "SESAME_INVALIDATE_ON_EMAIL_CHANGE": True},
    "UUID primary key": {"AUTH_USER_MODEL": "tests.UUIDUser"},
    "string primary key": {"AUTH_USER_MODEL": "tests.StrUser", "SESAME_MAX_AGE": 300},
    "bigint primary key": {"AUTH_USER_MODEL": "tests.BigUser"},
    "username, 16-byte signature": {
        "SESAME_PRIMARY_KEY_FIELD": "username",
        "SESAME_SIGNATURE_SIZE": 16,
    },
}
V1_CONFIGS: dict[str, dict[str, Any]] = {
    "v1": V1,
    "v1, max age": {**V1, "SESAME_MAX_AGE": 300},
    "v1, string primary key": {**V1, "AUTH_USER_MODEL": "tests.StrUser"},
}
CONFIGS = {**V2_CONFIGS, **V1_CONFIGS}

v2_configs = st.sampled_from(sorted(V2_CONFIGS))
v1_configs = st.sampled_from(sorted(V1_CONFIGS))
all_configs = st.sampled_from(sorted(CONFIGS))

# Three users per model: two active, one inactive, with primary keys that
# stretch the packers (multi-byte UTF-8, 255 bytes, 8 significant bytes).
USERS: dict[str, list[dict[str, Any]]] = {
    "auth.User": [{}, {}, {}],
    "tests.UUIDUser": [{"id": uuid.UUID(int=n)} for n in (1, 2**128 - 1, 3)],
    "tests.StrUser": [{"id": "álîcé ☃"}, {"id": "b"}, {"id": "c" * 255}],
    "tests.BigUser": [{"id": 2**40 + 7}, {"id": 2**63 - 1}, {"id": -3}],
}
USERNAMES = ["alice", "bob", "carol"]
INACTIVE = 2

B64_ALPHABET = string.ascii_letters + string.digits + "-_"
V2_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(token: str) -> bytes | None:
    """Decode ``token`` as a v2 token is decoded; :obj:`None` if it isn't Base64."""
    if V2_RE.fullmatch(token) is None:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None


def huge(seed: str, size: int) -> str:
    return (seed * size)[:size]


garbage = st.one_of(
    # Any Unicode text, control characters included.
    st.text(),
    st.text(st.characters(codec="ascii"), max_size=60),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=40),
    # Looks like a v2 token.
    st.text(B64_ALPHABET, max_size=80),
    st.binary(max_size=80).map(b64encode),
    st.binary(max_size=80).map(lambda data: base64.urlsafe_b64encode(data).decode()),
    # Looks like a v1 token, untimed and timed: "value:signature" and
    # "value:timestamp:signature", with a 27-character SHA-1 signature.
    st.builds(
        "{}:{}".format,
        st.binary(min_size=3, max_size=30).map(b64encode),
        st.binary(min_size=20, max_size=20).map(b64encode),
    ),
    st.builds(
        "{}:{}:{}".format,
        st.binary(min_size=3, max_size=30).map(b64encode),
        st.integers(62**5, 62**6 - 1).map(signing.b62_encode),
        st.binary(min_size=20, max_size=20).map(b64encode),
    ),
    # Up to 100,000 characters.
    st.builds(huge, st.text(min_size=1, max_size=8), st.integers(1_000, 100_000)),
    st.builds(
        huge, st.text(B64_ALPHABET, min_size=1, max_size=8), st.integers(900, 1_100)
    ),
)

# Character edits: (operation, position, character).
edits = st.lists(
    st.tuples(
        st.sampled_from(["replace", "insert", "delete"]),
        st.integers(0, 10_000),
        st.one_of(st.sampled_from(B64_ALPHABET), st.characters()),
    ),
    min_size=1,
    max_size=4,
)


def apply_edits(token: str, edits: list[tuple[str, int, str]]) -> str:
    for operation, position, char in edits:
        index = position % (len(token) + 1)
        if operation == "insert":
            token = token[:index] + char + token[index:]
        elif token:
            index %= len(token)
            new = char if operation == "replace" else ""
            token = token[:index] + new + token[index + 1 :]
    return token


class FuzzTestCase(IsolateDjangoSesameMixin, TestCase):
    users: ClassVar[dict[str, list[Any]]]
    tokens: ClassVar[dict[tuple[Any, ...], tuple[str, float]]]

    @classmethod
    def setUpTestData(cls):
        for label, users_kwargs in USERS.items():
            User = apps.get_model(label)
            for index, (username, kwargs) in enumerate(
                zip(USERNAMES, users_kwargs, strict=True)
            ):
                User._default_manager.create_user(
                    username,
                    email=f"{username}@example.com",
                    password="letmein",
                    is_active=index != INACTIVE,
                    **kwargs,
                )

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Examples are rolled back, so users and tokens don't change between
        # them. Caching them matters: creating a v1 token takes 10 ms.
        # Tokens are renewed well before SESAME_MAX_AGE = 300 expires them.
        cls.users = {}
        cls.tokens = {}

    def get_users(self) -> list[Any]:
        """Return the users of the current user model, in the order of :data:`USERNAMES`."""
        User = get_user_model()
        label = User._meta.label
        if label not in self.users:
            users = {user.get_username(): user for user in User._default_manager.all()}
            self.users[label] = [users[username] for username in USERNAMES]
        return self.users[label]

    def get_token(self, config: str, index: int, scope: str = "") -> str:
        """Return a token for user ``index``; ``config`` must be in effect."""
        key = (config, index, scope)
        cached = self.tokens.get(key)
        if cached is not None and time.monotonic() - cached[1] < 60:
            return cached[0]
        token = get_token(self.get_users()[index], scope)
        self.tokens[key] = token, time.monotonic()
        return token


class GetUserFuzzTests(FuzzTestCase):
    @fuzz(1800)
    @given(all_configs, garbage)
    def test_garbage(self, config, token):
        with override_settings(**CONFIGS[config]):
            self.assertIsNone(get_user(token))

    @fuzz(300)
    @given(all_configs, garbage, st.text(max_size=20))
    def test_garbage_async(self, config, token, scope):
        with override_settings(**CONFIGS[config]):
            self.assertIsNone(async_to_sync(aget_user)(token, scope))

    @fuzz(1000)
    @given(v2_configs, st.integers(0, 2), st.data())
    def test_real_primary_key_random_rest(self, config, index, data):
        # Reach the database and the signature check.
        with override_settings(**CONFIGS[config]):
            user = self.get_users()[index]
            packed = current_packer().pack_pk(getattr(user, conf.PRIMARY_KEY_FIELD))
            size = conf.SIGNATURE_SIZE + (4 if conf.MAX_AGE is not None else 0)
            rest = data.draw(
                st.one_of(
                    st.binary(min_size=size, max_size=size),
                    st.binary(max_size=2 * size),
                )
            )
            self.assertIsNone(get_user(b64encode(packed + rest)))

    @fuzz(500)
    @given(
        st.sampled_from(["default", *sorted(V1_CONFIGS)]),
        st.integers(0, 2),
        st.booleans(),
        st.binary(max_size=60),
    )
    def test_v1_signed_garbage(self, config, index, real_pk, content):
        # The signature is valid, the content isn't: the packer and the
        # revocation key must reject it.
        with override_settings(**CONFIGS[config]):
            if real_pk:
                user = self.get_users()[index]
                content = current_packer().pack_pk(user.pk) + content
            signer_class = (
                signing.Signer if conf.MAX_AGE is None else signing.TimestampSigner
            )
            signer = signer_class(salt=conf.SALT, algorithm="sha1")
            token = signer.sign(signing.b64_encode(content).decode())
            self.assertIsNone(get_user(token))

    @fuzz(800)
    @given(all_configs, st.integers(0, 2), st.data())
    def test_truncated(self, config, index, data):
        with override_settings(**CONFIGS[config]):
            token = self.get_token(config, index)
            length = data.draw(st.integers(0, len(token) - 1))
            self.assertIsNone(get_user(token[:length]))

    @fuzz(1000)
    @given(v2_configs, st.integers(0, 2), edits)
    def test_edited(self, config, index, edits):
        with override_settings(**CONFIGS[config]):
            user = self.get_users()[index]
            token = self.get_token(config, index)
            edited = apply_edits(token, edits)
            if b64decode(edited) == b64decode(token) and index != INACTIVE:
                self.assertEqual(get_user(edited), user)
            else:
                self.assertIsNone(get_user(edited))

    @fuzz(400)
    @given(v1_configs, st.integers(0, 2), edits)
    def test_edited_v1(self, config, index, edits):
        # The signature covers the text, so any change invalidates it.
        with override_settings(**CONFIGS[config]):
            user = self.get_users()[index]
            token = self.get_token(config, index)
            edited = apply_edits(token, edits)
            if edited == token and index != INACTIVE:
                self.assertEqual(get_user(edited), user)
            else:
                self.assertIsNone(get_user(edited))

    @fuzz(800)
    @given(v2_configs, st.integers(0, 2), st.data())
    def test_bit_flips(self, config, index, data):
        with override_settings(**CONFIGS[config]):
            user = self.get_users()[index]
            token = self.get_token(config, index)
            decoded = bytearray(b64decode(token) or b"")
            bits = data.draw(
                st.lists(st.integers(0, 8 * len(decoded) - 1), min_size=1, max_size=3)
            )
            for bit in bits:
                decoded[bit // 8] ^= 1 << (bit % 8)
            flipped = b64encode(bytes(decoded))
            if flipped == token and index != INACTIVE:  # flips cancelled out
                self.assertEqual(get_user(flipped), user)
            else:
                self.assertIsNone(get_user(flipped))

    @fuzz(800)
    @given(
        v2_configs,
        st.integers(0, 2),
        st.text(max_size=20),
        st.text(max_size=20),
    )
    def test_other_scope_or_inactive_user(self, config, index, scope, other_scope):
        with override_settings(**CONFIGS[config]):
            user = self.get_users()[index]
            token = self.get_token(config, index, scope)
            if scope == other_scope and index != INACTIVE:
                self.assertEqual(get_user(token, other_scope), user)
            else:
                self.assertIsNone(get_user(token, other_scope))

    @fuzz(500)
    @given(v2_configs, st.permutations(range(3)), st.text(max_size=20))
    def test_other_user(self, config, order, scope):
        # The primary key of one user with the rest of another user's token.
        with override_settings(**CONFIGS[config]):
            users = self.get_users()
            minted, target = users[order[0]], users[order[1]]
            data = b64decode(self.get_token(config, order[0], scope)) or b""
            packed = current_packer().pack_pk(getattr(minted, conf.PRIMARY_KEY_FIELD))
            other = current_packer().pack_pk(getattr(target, conf.PRIMARY_KEY_FIELD))
            self.assertIsNone(get_user(b64encode(other + data[len(packed) :]), scope))


# Anything but these statuses, 500 in particular, is a failure.
EXPECTED_STATUS = {
    ("/decorated/", "GET"): 403,
    ("/decorated/", "POST"): 403,
    ("/decorated/", "HEAD"): 403,
    ("/login/", "GET"): 403,
    ("/login/", "HEAD"): 403,
    ("/login/", "OPTIONS"): 200,
    ("/login/", "POST"): 405,
    ("/plain/", "GET"): 200,
    ("/plain/", "POST"): 200,
    ("/plain/", "HEAD"): 200,
}
requests = st.sampled_from(sorted(EXPECTED_STATUS))
READS_NO_QUERY_STRING = {("/login/", "OPTIONS"), ("/login/", "POST")}


def client(path: str) -> Client:
    """Return a test client for ``path``; ``/plain/`` runs sesame_db's middleware."""
    if path == "/plain/":
        with override_settings(MIDDLEWARE=middleware_with_sesame()):
            # The handler loads the middleware on the first request.
            instance = Client(raise_request_exception=False)
            instance.handler.load_middleware()
            return instance
    return Client(raise_request_exception=False)


def async_client(path: str) -> AsyncClient:
    """Return an async test client for ``path``; see :func:`client`."""
    if path == "/plain/":
        with override_settings(MIDDLEWARE=middleware_with_sesame()):
            instance = AsyncClient(raise_request_exception=False)
            instance.handler.load_middleware(is_async=True)
            return instance
    return AsyncClient(raise_request_exception=False)


# Redirect targets that LoginView must not follow.
UNSAFE_NEXT = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example/",
    "\\\\evil.example",
    "/\\evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "https://testserver.evil.example/",
    " //evil.example",
    "\x00//evil.example",
    "\t//evil.example",
]

# Real WSGI servers pass the query string as Latin-1 text.
raw_query_strings = st.one_of(
    st.binary(max_size=200).map(lambda data: data.decode("latin-1")),
    st.builds(
        "sesame={}{}".format,
        st.sampled_from(["", "x"]),
        st.integers(995, 1005).map("&".__mul__),
    ),
    st.binary(max_size=200).map(lambda data: "sesame=" + data.decode("latin-1")),
    st.lists(garbage, max_size=3).map(
        lambda tokens: "&".join(
            "sesame=" + token.encode().decode("latin-1") for token in tokens
        )[:100_000]
    ),
)


@override_settings(ROOT_URLCONF="tests.fuzz_urls")
class ViewFuzzTests(FuzzTestCase):
    request_logger: ClassVar[logging.Logger]
    request_level: ClassVar[int]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Each 403 and 405 is logged as a warning; 500s are still logged.
        cls.request_logger = logging.getLogger("django.request")
        cls.request_level = cls.request_logger.level
        cls.request_logger.setLevel(logging.ERROR)

    @classmethod
    def tearDownClass(cls):
        cls.request_logger.setLevel(cls.request_level)
        super().tearDownClass()

    def assertStatus(self, request, response, query_string=""):
        path, method = request
        expected = EXPECTED_STATUS[request]
        # Django answers 400 when request.GET has too many fields.
        if (
            query_string.count("&") >= django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
            and request not in READS_NO_QUERY_STRING
        ):
            expected = 400
        self.assertEqual(response.status_code, expected)
        if path == "/plain/" and method == "GET" and expected == 200:
            self.assertEqual(response.content, b"anonymous")

    @fuzz(1000)
    @given(requests, st.one_of(garbage, st.builds(apply_edits, st.just("x"), edits)))
    def test_token_parameter(self, request, token):
        path, method = request
        query = urlencode({"sesame": token})
        response = client(path).generic(method, f"{path}?{query}")
        self.assertStatus(request, response)

    @fuzz(200)
    @given(requests, garbage)
    def test_token_parameter_async(self, request, token):
        # Under ASGI, the middleware runs __acall__() and aget_user().
        path, method = request
        query = urlencode({"sesame": token})

        async def get_response():
            return await async_client(path).generic(method, f"{path}?{query}")

        self.assertStatus(request, async_to_sync(get_response)())

    @fuzz(800)
    @given(requests, raw_query_strings)
    def test_raw_query_string(self, request, query_string):
        path, method = request
        response = client(path).generic(method, path, QUERY_STRING=query_string)
        self.assertStatus(request, response, query_string)

    @fuzz(500)
    @given(requests, st.integers(0, 2), edits)
    def test_edited_token(self, request, index, edits):
        path, method = request
        token = self.get_token("default", index)
        edited = apply_edits(token, edits)
        if b64decode(edited) == b64decode(token):
            edited += "A"  # only test rejections here
        query = urlencode({"sesame": edited})
        response = client(path).generic(method, f"{path}?{query}")
        self.assertStatus(request, response)

    @fuzz(300)
    @given(
        st.integers(0, 2**31 - 1),
        st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    )
    def test_scoped_view(self, url_pk, scope_pk):
        # scope_pk is None: the token is for this very report.
        scope_pk = url_pk if scope_pk is None else scope_pk
        user = self.get_users()[0]
        query = urlencode({"sesame": get_token(user, f"report:{scope_pk}")})
        response = client("").get(f"/report/{url_pk}/?{query}")
        self.assertEqual(response.status_code, 200 if scope_pk == url_pk else 403)

    @fuzz(300)
    @given(st.one_of(st.text(), st.sampled_from(UNSAFE_NEXT)))
    def test_login_next(self, next_url):
        # After a valid login, LoginView follows only safe URLs.
        query = urlencode({"sesame": self.get_token("default", 0), "next": next_url})
        response = client("/login/").get(f"/login/?{query}")
        self.assertEqual(response.status_code, 302)
        location = response["Location"]
        self.assertTrue(
            url_has_allowed_host_and_scheme(location, {"testserver"}), location
        )
        if location != "/plain/":
            self.assertEqual(location, iri_to_uri(next_url))

    @fuzz(300)
    @given(st.lists(st.tuples(st.text(), st.text()), max_size=4))
    def test_middleware_redirect(self, params):
        # After a valid login, the middleware redirects to the same URL
        # without the token, keeping the other parameters.
        token = self.get_token("default", 0)
        query = urlencode([*params, ("sesame", token)])
        response = client("/plain/").get(f"/plain/?{query}")
        self.assertEqual(response.status_code, 302)
        location = urlsplit(response["Location"])
        self.assertEqual(location.path, "/plain/")
        redirect_params = QueryDict(location.query)
        self.assertNotIn("sesame", redirect_params)
        self.assertNotIn(token, response["Location"])
        expected_params = QueryDict(query, mutable=True)
        del expected_params["sesame"]
        self.assertEqual(
            sorted(redirect_params.lists()), sorted(expected_params.lists())
        )


@override_settings(ROOT_URLCONF="tests.fuzz_urls")
class FuzzUrlsTests(DjangoTestCase):
    """The targets of :class:`ViewFuzzTests` do accept valid tokens."""

    user: ClassVar[Any]

    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("john", password="letmein")

    def get(self, path, **params):
        query = urlencode({"sesame": get_token(self.user), **params})
        return client(path).get(f"{path}?{query}")

    def test_decorated(self):
        response = self.get("/decorated/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"john")

    def test_scoped(self):
        query = urlencode({"sesame": get_token(self.user, "report:42")})
        response = client("").get(f"/report/42/?{query}")
        self.assertEqual(response.content, b"john")

    def test_login(self):
        response = self.get("/login/")
        self.assertRedirects(response, "/plain/", fetch_redirect_response=False)

    def test_middleware(self):
        response = self.get("/plain/", page="2")
        self.assertRedirects(response, "/plain/?page=2", fetch_redirect_response=False)

    def test_middleware_anonymous(self):
        response = client("/plain/").get("/plain/")
        self.assertEqual(response.content, b"anonymous")

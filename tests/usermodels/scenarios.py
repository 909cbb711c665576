"""
The scenarios that every user model must pass, through stateless and stored tokens.

:class:`Scenarios` is a mixin: ``tests/test_user_models.py`` runs it in
process for the shapes that keep the process's user model, and in a
subprocess (``pytest tests/usermodels/scenarios.py``, with the settings of
:mod:`tests.usermodels.settings`) for the others, through
:class:`UserModelTests` below.

"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, ClassVar

import time_machine
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import TestCase, override_settings
from django.utils import timezone

from sesame_db.exceptions import InvalidToken, Reason
from sesame_db.models import IssuedToken, TokenEvent
from sesame_db.packers import get_packer
from sesame_db.signals import token_rejected
from sesame_db.utils import (
    acheck_link,
    aget_user,
    check_link,
    get_token,
    get_user,
    issue_guest_token,
    issue_token,
)
from tests.mixins import AsyncNumQueriesMixin
from tests.test_sql import SqlEqualsOrm
from tests.usermodels.shapes import SHAPE_VARIABLE, SHAPES, Shape

if TYPE_CHECKING:
    from django.test import TestCase as _TestCase
else:
    _TestCase = object

START = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


class Rejections:
    """
    Record the reasons sent with :data:`~sesame_db.signals.token_rejected`.

    With an audit event, the signal waits for the commit: wrap the call in
    ``captureOnCommitCallbacks(execute=True)``.

    """

    def __init__(self, testcase):
        self.reasons = []
        token_rejected.connect(self, weak=False)
        testcase.addCleanup(token_rejected.disconnect, self)

    def __call__(self, signal, reason, **kwargs):
        self.reasons.append(reason)


class Scenarios(SqlEqualsOrm, AsyncNumQueriesMixin, _TestCase):
    """What must hold for every user model; ``shape`` describes the one under test."""

    shape: ClassVar[Shape]

    # A valid stateless token: 1. SELECT the user.
    STATELESS_QUERIES = 1
    # A one-time stateless token: 1. SELECT the user. 2. UPDATE its last login.
    ONE_TIME_QUERIES = 2
    # A valid stored token: 1. SELECT the token joined to its user. 2. UPDATE
    # the use count. 3. INSERT the "used" event; on PostgreSQL, 2. and 3. are
    # one statement.
    STORED_QUERIES_SQLITE = 3
    STORED_QUERIES_POSTGRESQL = 2

    @property
    def db(self):
        return self.shape.database

    @property
    def stored_queries(self):
        if connections[self.db].vendor == "postgresql":
            return self.STORED_QUERIES_POSTGRESQL
        return self.STORED_QUERIES_SQLITE

    def create_user(self, name, **extra):
        User = get_user_model()
        values = {"email": f"{name}@example.com", **extra}
        if User.USERNAME_FIELD != "email":
            values[User.USERNAME_FIELD] = name
        if User._meta.pk.get_internal_type() == "CharField":
            values["id"] = f"user-{name}"
        user = User(**values)
        user.set_password("letmein")
        user.save()
        return user

    def setUp(self):
        super().setUp()
        self.user = self.create_user("john")
        self.other = self.create_user("jane")

    def assertSameUser(self, user, expected):
        self.assertEqual(user, expected)
        self.assertIs(type(user), get_user_model())
        # Every field as the ORM loads it: the store's prebuilt SELECT must
        # read and convert each column as the ORM does.
        loaded = get_user_model()._base_manager.using(self.db).get(pk=expected.pk)
        for field in get_user_model()._meta.concrete_fields:
            self.assertEqual(
                getattr(user, field.attname), getattr(loaded, field.attname), field
            )
            self.assertIs(
                type(getattr(user, field.attname)),
                type(getattr(loaded, field.attname)),
                field,
            )

    def use_count(self, record):
        record.refresh_from_db()
        return record.use_count

    # The user model and the database.

    def test_packer(self):
        packer = type(get_packer())
        self.assertEqual(
            f"{packer.__module__}.{packer.__qualname__}", self.shape.packer
        )

    def test_database(self):
        # The subprocesses run on the database of the parent's run.
        vendor = "postgresql" if settings.TEST_DB == "postgresql" else "sqlite"
        self.assertEqual(connections[self.db].vendor, vendor)
        self.assertEqual(get_user_model()._meta.label, self.shape.user_model)
        self.assertEqual(self.user._state.db, self.db)
        token, record = issue_token(self.user)
        self.assertEqual(record._state.db, self.db)

    # Stateless tokens.

    def test_stateless(self):
        token = get_token(self.user)
        self.assertFalse(token.startswith("~"))
        with self.assertNumQueries(self.STATELESS_QUERIES, using=self.db):
            user = get_user(token)
        self.assertSameUser(user, self.user)
        self.assertSameUser(get_user(get_token(self.other)), self.other)

    async def test_stateless_async(self):
        token = get_token(self.user)
        async with self.assertNumQueriesAsync(self.STATELESS_QUERIES, using=self.db):
            user = await aget_user(token)
        self.assertEqual(user, self.user)

    @override_settings(SESAME_ONE_TIME=True)
    def test_stateless_one_time(self):
        token = get_token(self.user)
        with self.assertNumQueries(self.ONE_TIME_QUERIES, using=self.db) as queries:
            self.assertEqual(get_user(token), self.user)
        # The database decides, in one statement: a compare-and-set.
        update = queries.captured_queries[-1]["sql"]
        self.assertTrue(update.startswith("UPDATE"), update)
        self.assertIn("last_login", update.partition(" WHERE ")[2])
        self.assertIsNone(get_user(token))

    def test_stateless_invalidated(self):
        token = get_token(self.user)
        self.user.set_password("changed")
        self.user.save()
        rejections = Rejections(self)
        self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.BAD_SIGNATURE])

    def test_stateless_inactive(self):
        token = get_token(self.user)
        self.user.is_active = False
        self.user.save()
        rejections = Rejections(self)
        self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.UNKNOWN_USER])

    # Stored tokens.

    def test_stored(self):
        token = get_token(self.user, store=True)
        self.assertTrue(token.startswith("~"))
        record = IssuedToken.objects.get()
        with self.assertNumQueries(self.stored_queries, using=self.db):
            user = get_user(token)
        self.assertSameUser(user, self.user)
        self.assertEqual(self.use_count(record), 1)
        self.assertEqual(record.user_id, self.user.pk)
        self.assertEqual(
            list(TokenEvent.objects.order_by("pk").values_list("kind", "user_id")),
            [("issued", self.user.pk), ("used", self.user.pk)],
        )

    def test_stored_right_user(self):
        token, _ = issue_token(self.user)
        other_token, _ = issue_token(self.other)
        self.assertSameUser(get_user(other_token), self.other)
        self.assertSameUser(get_user(token), self.user)

    async def test_stored_async(self):
        token, record = await sync_to_async(issue_token)(self.user)
        async with self.assertNumQueriesAsync(self.stored_queries, using=self.db):
            user = await aget_user(token)
        self.assertEqual(user, self.user)
        await record.arefresh_from_db()
        self.assertEqual(record.use_count, 1)

    def test_stored_max_uses(self):
        token, record = issue_token(self.user, max_uses=2)
        self.assertEqual(get_user(token), self.user)
        self.assertEqual(get_user(token), self.user)
        rejections = Rejections(self)
        with self.captureOnCommitCallbacks(using=self.db, execute=True):
            self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.USED_UP])
        self.assertEqual(self.use_count(record), 2)

    def test_stored_revoked(self):
        token, record = issue_token(self.user)
        record.revoke()
        rejections = Rejections(self)
        with self.captureOnCommitCallbacks(using=self.db, execute=True):
            self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.REVOKED])
        self.assertEqual(self.use_count(record), 0)
        event = TokenEvent.objects.latest("pk")
        self.assertEqual(
            (event.kind, event.reason, event.user_id),
            ("rejected", Reason.REVOKED, self.user.pk),
        )

    def test_stored_invalidated(self):
        token, record = issue_token(self.user)
        self.user.set_password("changed")
        self.user.save()
        rejections = Rejections(self)
        with self.captureOnCommitCallbacks(using=self.db, execute=True):
            self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.INVALIDATED])
        self.assertEqual(self.use_count(record), 0)

    def test_stored_inactive(self):
        token, record = issue_token(self.user)
        self.user.is_active = False
        self.user.save()
        rejections = Rejections(self)
        with self.captureOnCommitCallbacks(using=self.db, execute=True):
            self.assertIsNone(get_user(token))
        self.assertEqual(rejections.reasons, [Reason.INACTIVE_USER])
        self.assertEqual(self.use_count(record), 0)

    # Guest links: no user to load, whatever the user model.

    def test_guest_link(self):
        token, record = issue_guest_token("guest@example.com", "report:1")
        self.assertEqual(record._state.db, self.db)
        # The same statements as a user's stored link: the SELECT's join
        # finds no user, and the default manager's condition isn't applied.
        with self.assertNumQueries(self.stored_queries, using=self.db):
            user, link = check_link(token, "report:1", guests=True)
        self.assertIsNone(user)
        assert link is not None
        self.assertEqual(link, record)
        self.assertIsNone(link.user)
        with self.assertRaises(InvalidToken) as cm:
            check_link(token, "report:1")
        self.assertEqual(cm.exception.reason, Reason.GUEST_LINK)
        self.assertIsNone(get_user(token, "report:1"))
        self.assertEqual(self.use_count(record), 1)
        self.assertEqual(
            list(
                TokenEvent.objects.filter(token=record)
                .order_by("pk")
                .values_list("kind", "reason", "user_id", "recipient")
            ),
            [
                ("issued", "", None, "guest@example.com"),
                ("used", "", None, "guest@example.com"),
                ("rejected", Reason.GUEST_LINK, None, "guest@example.com"),
            ],
        )
        # A user's link next to it still logs its user in.
        self.assertSameUser(
            get_user(issue_token(self.user, "report:1")[0], "report:1"), self.user
        )

    async def test_guest_link_async(self):
        token, record = await sync_to_async(issue_guest_token)(
            "guest@example.com", "report:1"
        )
        async with self.assertNumQueriesAsync(self.stored_queries, using=self.db):
            user, link = await acheck_link(token, "report:1", guests=True)
        self.assertIsNone(user)
        assert link is not None
        self.assertEqual(link.pk, record.pk)
        with self.assertRaises(InvalidToken) as cm:
            await acheck_link(token, "report:1")
        self.assertEqual(cm.exception.reason, Reason.GUEST_LINK)


class HiddenUserScenarios(Scenarios):
    """What must hold when the default manager hides users: both paths refuse them alike."""

    def delete(self, user, when):
        type(user).all_objects.filter(pk=user.pk).update(deleted_at=when)

    def test_hidden_user(self):
        stateless = get_token(self.user)
        stored, record = issue_token(self.user)
        self.delete(self.user, timezone.now())
        self.assertFalse(get_user_model().objects.filter(pk=self.user.pk).exists())
        rejections = Rejections(self)
        self.assertIsNone(get_user(stateless))
        with (
            self.captureOnCommitCallbacks(using=self.db, execute=True),
            self.assertNumQueries(2, using=self.db),
        ):
            # 1. SELECT the token joined to its user. 2. INSERT the
            # "rejected" event: one SELECT, as for any other user model.
            self.assertIsNone(get_user(stored))
        self.assertEqual(rejections.reasons, [Reason.UNKNOWN_USER] * 2)
        self.assertEqual(self.use_count(record), 0)
        event = TokenEvent.objects.latest("pk")
        self.assertEqual(
            (event.kind, event.reason, event.token_id, event.user_id),
            ("rejected", Reason.UNKNOWN_USER, record.pk, self.user.pk),
        )
        # The other user is still welcome.
        self.assertEqual(get_user(issue_token(self.other)[0]), self.other)

    async def test_hidden_user_async(self):
        stateless = get_token(self.user)
        stored, record = await sync_to_async(issue_token)(self.user)
        await sync_to_async(self.delete)(self.user, timezone.now())
        rejections = Rejections(self)
        self.assertIsNone(await aget_user(stateless))
        self.assertEqual(rejections.reasons, [Reason.UNKNOWN_USER])
        self.assertIsNone(await aget_user(stored))
        event = await TokenEvent.objects.alatest("pk")
        self.assertEqual(
            (event.kind, event.reason, event.token_id),
            ("rejected", Reason.UNKNOWN_USER, record.pk),
        )

    def test_deletion_scheduled(self):
        # The default manager's condition has a parameter, the current time:
        # the store evaluates it on each use, not once with its SQL.
        with time_machine.travel(START, tick=False):
            stateless = get_token(self.user)
            stored, record = issue_token(self.user)
            self.delete(self.user, START + datetime.timedelta(hours=1))
            self.assertEqual(get_user(stateless), self.user)
            self.assertEqual(get_user(stored), self.user)
        rejections = Rejections(self)
        with time_machine.travel(START + datetime.timedelta(hours=2), tick=False):
            self.assertIsNone(get_user(stateless))
            with self.captureOnCommitCallbacks(using=self.db, execute=True):
                self.assertIsNone(get_user(stored))
        self.assertEqual(rejections.reasons, [Reason.UNKNOWN_USER] * 2)
        self.assertEqual(self.use_count(record), 1)


# What tests/test_user_models.py runs in a subprocess, with the settings of
# tests.usermodels.settings: the shape comes from the environment.
if SHAPE_VARIABLE in os.environ:
    SHAPE = SHAPES[os.environ[SHAPE_VARIABLE]]
    if SHAPE.hides_users:

        class HiddenUserModelTests(HiddenUserScenarios, TestCase):
            shape = SHAPE
            databases = {"default", SHAPE.database}

    else:

        class UserModelTests(Scenarios, TestCase):
            shape = SHAPE
            databases = {"default", SHAPE.database}

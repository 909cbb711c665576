"""
The steps of login by email: issue a link, throttle requests, revoke earlier links, check codes.

Links are stored tokens in the scope :data:`SCOPE`, for one use, expiring
after :data:`SESAME_LOGIN_MAX_AGE`. Their use goes through
:func:`~sesame_db.utils.check_user`, like every token's: this module only
decides which link a request or a code is about.

The audit trail records what happens around the links with the existing
kinds and reasons of :class:`~sesame_db.models.TokenEvent`, told apart by
their ``detail``, which starts with ``"login: "``:

- the ``issued`` event of a link (detail :data:`LABEL`), then an ``issued``
  event with detail ``"login: email sent"`` when the email was handed over;
- a throttled request: ``rejected``, reason ``rate_limited``, no link;
- a link opened in another browser: ``rejected`` with no reason;
- a wrong code: ``rejected``, reason ``bad_signature``, with no link when
  the browser's request issued none (a decoy);
- earlier links, or a link after too many wrong codes: ``revoked``;
- the use of a link, by link or code: ``used``, as any link's.

"""

from __future__ import annotations

import datetime
import hashlib
import logging
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.db import IntegrityError, router, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.module_loading import import_string

from sesame_db import ratelimit, store, tokens_store
from sesame_db.conf import conf
from sesame_db.exceptions import Reason

from . import browser, emails

__all__ = [
    "LABEL",
    "SCOPE",
    "WRONG_CODES",
    "Pending",
    "check_code",
    "find_user",
    "link_url",
    "request_link",
    "safe_next",
]

logger = logging.getLogger("sesame_db")

#: The scope of login links, reserved for this flow.
SCOPE = "sesame_db:login"
#: The label of login links in the admin.
LABEL = "login: requested by email"
#: Wrong codes after which a link is revoked.
WRONG_CODES = 5
# The links that the browser asked for, in its session: the code page needs
# them, and the browser's cookie holds only a nonce.
SESSION_KEY = "_sesame_db_login"
# The signed value of a sign-up link.
SIGNUP_SALT = "sesame_db.login.signup"


@dataclass
class Pending:
    """The login links that a browser asked for, and where to go after login."""

    links: list[tuple[int, float | None]] = field(default_factory=list)
    next: str = ""

    @classmethod
    def load(cls, request: HttpRequest) -> Pending:
        data = request.session.get(SESSION_KEY) or {}
        try:
            links = [(int(pk), exp) for pk, exp in data.get("links", [])]
        except (TypeError, ValueError):
            links = []
        return cls(links, str(data.get("next", "")))

    def save(self, request: HttpRequest) -> None:
        request.session[SESSION_KEY] = {
            "links": [list(link) for link in self.links],
            "next": self.next,
        }

    @staticmethod
    def clear(request: HttpRequest) -> None:
        request.session.pop(SESSION_KEY, None)


def safe_next(request: HttpRequest, url: str) -> str:
    """Return ``url`` if it's a safe place to go after login on this site, else ``""``."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def find_user(email: str) -> AbstractBaseUser | None:
    """
    Return the active user whose email address is ``email``, ignoring case, or :obj:`None`.

    Two accounts with the same address get no link: the address doesn't
    tell which one to log in.

    """
    User = get_user_model()
    email_field = User.get_email_field_name()
    users = [
        user
        for user in User._default_manager.filter(**{f"{email_field}__iexact": email})
        # The database's case-insensitive match is looser than Unicode's:
        # PostgreSQL's UPPER() makes "gmaıl" "GMAIL" (CVE-2019-19844).
        if _same_address(getattr(user, email_field) or "", email)
    ]
    if len(users) != 1:
        if users:
            logger.warning(
                "Login by email: several users have the same address; none gets a link"
            )
        return None
    user: AbstractBaseUser = users[0]
    if not getattr(user, "is_active", True):
        return None
    return user


def _same_address(stored: str, typed: str) -> bool:
    # As django.contrib.auth.forms._unicode_ci_compare().
    return (
        unicodedata.normalize("NFKC", stored).casefold()
        == unicodedata.normalize("NFKC", typed).casefold()
    )


def _user_email(user: AbstractBaseUser) -> str:
    """Return the stored email address of ``user``: the one that login emails go to, never the one typed."""
    return str(getattr(user, get_user_model().get_email_field_name()))


def _address_key(email: str) -> str:
    # Addresses stay out of cache keys: a digest has safe characters.
    # Every spelling that may reach one account counts as one address.
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    digest = hashlib.sha256(folded.encode()).hexdigest()[:32]
    return f"sesame_db:login:address:{digest}"


def _throttle(request: HttpRequest, email: str) -> str | None:
    """Count a request for ``email`` and its client; return "address" or "client" if either goes over the limit."""
    setting = conf.LOGIN_THROTTLE
    if setting is None:
        return None
    period = setting["period"]
    if isinstance(period, datetime.timedelta):
        period = period.total_seconds()
    # Both are counted, whatever the outcome, so that the work doesn't
    # depend on the address.
    address = ratelimit.count(_address_key(email), float(period))
    client = ratelimit.count(
        f"sesame_db:login:client:{ratelimit._client(request)}",
        float(period),
    )
    if address > int(setting["address"]):
        return "address"
    if client > int(setting["client"]):
        return "client"
    return None


def _audit_once(key: str, timeout: float) -> bool:
    # One audit row per key and window, so that floods don't fill the trail.
    return ratelimit.first_in_window(key, timeout)


def link_url(request: HttpRequest, query: dict[str, str]) -> str:
    """Return the absolute URL of the login page with ``query``: on :data:`SESAME_LOGIN_BASE_URL`, or the request's host."""
    path = reverse("sesame_db:login") + "?" + urlencode(query)
    base = conf.LOGIN_BASE_URL
    if base:
        return base.rstrip("/") + path
    return request.build_absolute_uri(path)


def _expiry(record_expires_at: datetime.datetime | None) -> float | None:
    return None if record_expires_at is None else record_expires_at.timestamp()


def _revoke_earlier(user: AbstractBaseUser, request: HttpRequest) -> None:
    IssuedToken, _ = store.get_models()
    keep = max(int(conf.LOGIN_MAX_VALID_LINKS) - 1, 0)
    active = IssuedToken._default_manager.filter(user_id=user.pk, scope=SCOPE).active()
    if keep:
        # The newest ones stay valid, with the new link.
        ids = list(active.order_by("-created").values_list("pk", flat=True)[keep:])
        if not ids:
            return
        active = IssuedToken._default_manager.filter(pk__in=ids)
    active.revoke(reason="login: a new link was requested", request=request)


def _deliver(
    request: HttpRequest,
    context: dict[str, Any],
    to: str,
    token_id: int | None,
    user: AbstractBaseUser | None,
) -> None:
    subject, text, html = emails.render(context, request)
    try:
        emails.send(to=to, subject=subject, text=text, html=html)
    except Exception:
        # Any error of the email backend or of the project's function: the
        # answer stays the same, and the log says where to look.
        logger.exception(
            "Login by email: the email couldn't be sent; check MAILERS "
            "(EMAIL_BACKEND before Django 6.1), or SESAME_LOGIN_SEND_EMAIL"
        )
        return
    store.record_event(
        "issued",
        request=request,
        scope=SCOPE,
        detail="login: email sent",
        token_id=token_id,
        user=user,
    )


def _context(request: HttpRequest, email: str) -> dict[str, Any]:
    return {
        "email": email,
        "code": "",
        "code_url": request.build_absolute_uri(reverse("sesame_db:login-code"))
        if not conf.LOGIN_BASE_URL
        else conf.LOGIN_BASE_URL.rstrip("/") + reverse("sesame_db:login-code"),
        "minutes": max(1, round(conf.LOGIN_MAX_AGE / 60)),
        "user": None,
        "signup": False,
    }


def request_link(request: HttpRequest, email: str, next_url: str = "") -> str:
    """
    Handle a request of a login link for ``email`` from the browser of ``request``; return the browser's nonce.

    The answer must be the same whatever happens here: a link sent, an
    unknown address, or a request over :data:`SESAME_LOGIN_THROTTLE`.

    """
    nonce = browser.get_nonce(request) or browser.new_nonce()
    pending = Pending.load(request)
    pending.next = safe_next(request, next_url)
    user = find_user(email)
    limited = _throttle(request, email)
    if limited is not None:
        logger.info("Login by email: request throttled per %s", limited)
        key = (
            _address_key(email)
            if limited == "address"
            else f"sesame_db:login:client:{ratelimit._client(request)}"
        )
        if _audit_once(key + ":audited", ratelimit.AUDIT_WINDOW):
            store.record_event(
                "rejected",
                request=request,
                scope=SCOPE,
                reason=Reason.RATE_LIMITED,
                detail=f"login: request throttled per {limited}",
                user=user,
            )
    elif user is not None:
        _issue(request, user, email, nonce, pending)
    else:
        if conf.LOGIN_SIGNUP:
            _signup_email(request, email, nonce, pending)
        _add_decoy(pending)
    pending.save(request)
    return nonce


def _add_decoy(pending: Pending) -> None:
    # A request that issues no link leaves a decoy in the session, which
    # no code opens, so that the code page counts wrong codes and gives up
    # after WRONG_CODES as it does for a link: it mustn't tell whether the
    # address got one. Decoys have negative ids; links have positive ones.
    expires_at = time.time() + float(conf.LOGIN_MAX_AGE)
    pending.links.append((-1 - secrets.randbelow(2**62), expires_at))
    del pending.links[: -max(int(conf.LOGIN_MAX_VALID_LINKS), 1)]


def _issue(
    request: HttpRequest,
    user: AbstractBaseUser,
    email: str,
    nonce: str,
    pending: Pending,
) -> None:
    IssuedToken, _ = store.get_models()
    db = router.db_for_write(IssuedToken)
    with transaction.atomic(using=db):
        _revoke_earlier(user, request)
        token, record = store.issue(
            user,
            SCOPE,
            max_age=conf.LOGIN_MAX_AGE,
            max_uses=1,
            label=LABEL,
            request=request,
        )
        query = {conf.TOKEN_NAME: token}
        if conf.LOGIN_BIND_BROWSER:
            query["browser"] = browser.tag(record.pk, nonce)
        if pending.next:
            query["next"] = pending.next
        # To the stored address, which the typed one matched up to case.
        to = _user_email(user)
        context = _context(request, to)
        context.update(
            link=link_url(request, query),
            code=browser.code(record.pk, nonce) if conf.LOGIN_CODE else "",
            user=user,
        )
        pk = record.pk

        def deliver_login_email() -> None:
            _deliver(request, context, to, pk, user)

        # Robust: a failure to send is logged, and the answer stays the same.
        transaction.on_commit(deliver_login_email, using=db, robust=True)
    pending.links.append((record.pk, _expiry(record.expires_at)))
    del pending.links[: -max(int(conf.LOGIN_MAX_VALID_LINKS), 1)]


# Sign-up links, for unknown addresses when SESAME_LOGIN_SIGNUP is set.


def _signup_email(
    request: HttpRequest, email: str, nonce: str, pending: Pending
) -> None:
    value = signing.dumps(
        {"email": email, "browser": browser.tag(0, nonce + "|" + email.lower())},
        salt=SIGNUP_SALT,
    )
    query = {"signup": value}
    if pending.next:
        query["next"] = pending.next
    context = _context(request, email)
    context.update(link=link_url(request, query), signup=True)

    def deliver_signup_email() -> None:
        _deliver(request, context, email, None, None)

    transaction.on_commit(deliver_signup_email, robust=True)


def signup_email(request: HttpRequest, value: str) -> str | None:
    """Return the address of the sign-up link ``value`` if it's authentic, recent and for this browser, else :obj:`None`."""
    try:
        data = signing.loads(
            value,
            salt=SIGNUP_SALT,
            max_age=datetime.timedelta(seconds=conf.LOGIN_MAX_AGE),
        )
        email, tag = str(data["email"]), str(data["browser"])
    except (signing.BadSignature, KeyError, TypeError):
        return None
    nonce = browser.get_nonce(request)
    if conf.LOGIN_BIND_BROWSER and not browser.tag_matches(
        tag, 0, None if nonce is None else nonce + "|" + email.lower()
    ):
        return None
    return email


def signup(request: HttpRequest, email: str) -> str | None:
    """
    Create the account of ``email`` with :data:`SESAME_LOGIN_SIGNUP` and return a login token for it.

    Return :obj:`None` if an account has the address already: the sign-up
    link was used, or the person signed up otherwise since.

    """
    User = get_user_model()
    email_field = User.get_email_field_name()
    db = router.db_for_write(User)
    # One sign-up per address, e.g. on a double click: add() is atomic in
    # the cache. Once the account is created, the lock stays as long as the
    # sign-up link lives, so a read replica that lags can't let the link
    # create another account.
    lock = _address_key(email) + ":signup"
    if not ratelimit.first_in_window(lock, float(conf.LOGIN_MAX_AGE)):
        return None
    created = False
    try:
        # The primary database: an account just created must be seen.
        users = User._default_manager.using(db)
        if users.filter(**{f"{email_field}__iexact": email}).exists():
            return None
        create = import_string(str(conf.LOGIN_SIGNUP))
        try:
            with transaction.atomic(using=db):
                user = create(email=email, request=request)
        except IntegrityError:
            # A unique constraint refused a second account.
            logger.info("Login by email: sign-up refused by the database")
            return None
        created = True
    finally:
        if not created:
            ratelimit.forget(lock)
    token, _ = store.issue(
        user, SCOPE, max_age=conf.LOGIN_MAX_AGE, max_uses=1, label="login: sign-up"
    )
    return token


# Codes.


def _tries_key(pk: int) -> str:
    return f"sesame_db:login:code:{pk}"


def check_code(request: HttpRequest, code: str) -> str | None:
    """
    Return a token of the link whose code is ``code`` in the browser of ``request``, or :obj:`None`.

    Each code typed counts against each of the browser's links, before it's
    compared, so that requests at once can't compare more than
    :data:`WRONG_CODES` codes per link; a link is revoked after
    :data:`WRONG_CODES` wrong codes, and no code opens it anymore. The
    token returned is checked like any other, by
    :func:`~sesame_db.utils.check_user`: it's the same single use as the
    link's.

    """
    nonce = browser.get_nonce(request)
    pending = Pending.load(request)
    if not conf.LOGIN_CODE or nonce is None or not pending.links:
        return None
    tries = {
        pk: ratelimit.count(_tries_key(pk), float(conf.LOGIN_MAX_AGE))
        for pk, _ in pending.links
    }
    live = [(pk, exp) for pk, exp in pending.links if tries[pk] <= WRONG_CODES]
    for pk, exp in live:
        # Decoys (negative ids) have no code.
        if pk > 0 and browser.code_matches(code, pk, nonce):
            expires_at = (
                None
                if exp is None
                else datetime.datetime.fromtimestamp(exp, tz=datetime.timezone.utc)
            )
            return tokens_store.create_token(pk, SCOPE, expires_at)
    for pk, _ in live:
        logger.debug("Login by email: wrong code for stored token %d", pk)
        store.record_event(
            "rejected",
            request=request,
            scope=SCOPE,
            reason=Reason.BAD_SIGNATURE,
            detail="login: wrong code",
            token_id=pk if pk > 0 else None,
        )
        if tries[pk] == WRONG_CODES and pk > 0:
            IssuedToken, _ = store.get_models()
            IssuedToken._default_manager.filter(pk=pk).revoke(
                reason="login: too many wrong codes", request=request
            )
    return None


def codes_left(request: HttpRequest) -> bool:
    """Tell whether a code can still open one of the links of the browser of ``request``."""
    if browser.get_nonce(request) is None:
        return False
    return any(
        ratelimit.get_count(_tries_key(pk)) < WRONG_CODES
        for pk, _ in Pending.load(request).links
    )


def opened_elsewhere(request: HttpRequest, pk: int) -> None:
    """Record that the link of record ``pk`` was opened in another browser than the one that asked for it."""
    logger.debug("Login by email: stored token %d opened in another browser", pk)
    if _audit_once(
        f"sesame_db:login:elsewhere:{pk}:{ratelimit._client(request)}",
        ratelimit.AUDIT_WINDOW,
    ):
        store.record_event(
            "rejected",
            request=request,
            scope=SCOPE,
            reason=Reason.OTHER_BROWSER,
            detail="login: opened in another browser",
            token_id=pk,
        )

"""
The pages of login by email: request a link, open it, type its code.

"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.core.exceptions import ImproperlyConfigured
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_protect
from django.views.generic import FormView

from sesame_db.conf import conf
from sesame_db.confirm import (
    ALL_ALIASES,
    SAFE_METHODS,
    csrf_rejection,
    render_confirmation,
)
from sesame_db.exceptions import DatabaseUnavailable, InvalidToken
from sesame_db.responses import (
    is_rate_limited,
    rate_limited_response,
    unavailable_response,
)
from sesame_db.tokens import decode_token
from sesame_db.tokens_store import StoredClaims
from sesame_db.utils import check_user, database_unavailable
from sesame_db.views import LoginView

from . import browser, flow
from .forms import LoginCodeForm, LoginRequestForm

__all__ = ["LoginCodeView", "LoginLinkView", "LoginRequestView"]


def _never_cache(response: HttpResponseBase) -> HttpResponseBase:
    add_never_cache_headers(response)
    return response


def _require_sessions(request: HttpRequest) -> None:
    if not hasattr(request, "session"):
        raise ImproperlyConfigured(
            "Login by email requires django.contrib.sessions: add "
            "django.contrib.sessions.middleware.SessionMiddleware to MIDDLEWARE."
        )


def _failed(request: HttpRequest) -> HttpResponse:
    response = render(request, "sesame_db/login/failed.html", status=403)
    _never_cache(response)
    return response


@method_decorator(csrf_protect, name="dispatch")
class LoginRequestView(FormView):  # type: ignore[type-arg]
    """
    Ask for a login link by email: the ``sesame_db:login-request`` page.

    A POST with a valid address shows the "check your email" page, whether
    or not the address belongs to an active user, and whether or not the
    request is over :data:`SESAME_LOGIN_THROTTLE`; the email leaves once the
    link is committed. The answer sets the cookie that binds the link to
    this browser.

    """

    form_class = LoginRequestForm
    template_name = "sesame_db/login/request.html"
    sent_template_name = "sesame_db/login/sent.html"

    def dispatch(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        _require_sessions(request)
        return super().dispatch(request, *args, **kwargs)

    def get_initial(self) -> dict[str, Any]:
        return {"next": flow.safe_next(self.request, self.request.GET.get("next", ""))}

    def form_valid(self, form: LoginRequestForm) -> HttpResponse:
        email = form.cleaned_data["email"]
        nonce = flow.request_link(self.request, email, form.cleaned_data["next"])
        response = render(
            self.request,
            self.sent_template_name,
            {"email": email, "code": conf.LOGIN_CODE},
        )
        browser.set_cookie(response, self.request, nonce)
        _never_cache(response)
        return response


class LoginLinkView(LoginView):
    """
    The target of login links: the ``sesame_db:login`` page.

    It's a :class:`~sesame_db.views.LoginView` for links in the scope of
    login by email, with confirmation: a GET shows a page whose button
    POSTs back, which logs the person in and redirects to ``next``, if it's
    safe, or to :setting:`LOGIN_REDIRECT_URL`. With
    :data:`SESAME_LOGIN_BIND_BROWSER`, a link opened in another browser than
    the one that asked for it shows a page that says so, and isn't used.

    """

    scope = flow.SCOPE
    confirm = True
    confirm_template_name = "sesame_db/login/confirm.html"
    other_browser_template_name = "sesame_db/login/other_browser.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if "signup" in request.GET and conf.TOKEN_NAME not in request.GET:
            return self.signup(request)
        token = request.GET.get(conf.TOKEN_NAME)
        if token is None:
            return self.login_failed()
        if conf.LOGIN_BIND_BROWSER and (response := self.check_browser(request, token)):
            return response
        if request.method in SAFE_METHODS:
            return render_confirmation(
                request, template_name=self.confirm_template_name
            )
        return super().get(request, *args, **kwargs)

    def check_browser(
        self, request: HttpRequest, token: str
    ) -> HttpResponseBase | None:
        """Return the answer for a link opened in another browser, or :obj:`None`."""
        try:
            decoded = decode_token(token, scope=self.scope, stored=True)
        except InvalidToken:
            # Forged, malformed, expired...: refused, with its audit, by
            # the check of the POST.
            return None
        if not isinstance(decoded, StoredClaims):
            # Login links are stored: a stateless token isn't bound to a browser.
            return self.login_failed()
        if browser.tag_matches(
            request.GET.get("browser", ""),
            decoded.record_id,
            browser.get_nonce(request),
        ):
            return None
        flow.opened_elsewhere(request, decoded.record_id)
        response = render(
            request,
            self.other_browser_template_name,
            {"code": conf.LOGIN_CODE},
            status=403,
        )
        response["Referrer-Policy"] = "strict-origin"
        return _never_cache(response)

    def signup(self, request: HttpRequest) -> HttpResponseBase:
        """Create the account of a sign-up link, on POST, then log in with a stored link of its own."""
        email = flow.signup_email(request, request.GET["signup"])
        if email is None or not conf.LOGIN_SIGNUP:
            return self.login_failed()
        if request.method in SAFE_METHODS:
            return render_confirmation(
                request, {"signup": True}, template_name=self.confirm_template_name
            )
        if (response := csrf_rejection(request)) is not None:
            return response
        token = flow.signup(request, email)
        if token is None:
            return self.login_failed()
        return _log_in(request, token, self) or self.login_success()

    def get_default_redirect_url(self) -> str:
        return resolve_url(settings.LOGIN_REDIRECT_URL)

    def login_failed(self) -> HttpResponseBase:
        return _failed(self.request)

    def login_success(self) -> HttpResponseBase:
        # The cookie stays until it expires: a link opened again in this
        # browser is then refused as used, not as opened elsewhere.
        flow.Pending.clear(self.request)
        return super().login_success()


def _log_in(request: HttpRequest, token: str, view: Any) -> HttpResponseBase | None:
    """Log in with ``token`` through :func:`~sesame_db.utils.check_user`; return the answer of a failure, or :obj:`None`."""
    try:
        user = check_user(request, flow.SCOPE, token=token)
        if user is None:
            return view.login_failed()  # type: ignore[no-any-return]
        with database_unavailable():
            login(request, user)  # type: ignore[arg-type]
    except InvalidToken as exc:
        if is_rate_limited(exc):
            return rate_limited_response()
        return view.login_failed()  # type: ignore[no-any-return]
    except DatabaseUnavailable:
        return unavailable_response()
    return None


@method_decorator(csrf_protect, name="dispatch")
class LoginCodeView(FormView):  # type: ignore[type-arg]
    """
    Type the code of the email: the ``sesame_db:login-code`` page.

    It works only in the browser that asked for the link, whose cookie and
    session tell which link the code is for. The code uses the link: it
    goes through :func:`~sesame_db.utils.check_user` with the link's token.
    After :data:`~sesame_db.login.flow.WRONG_CODES` wrong codes, the link
    is revoked.

    """

    form_class = LoginCodeForm
    template_name = "sesame_db/login/code.html"

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        # Use the token outside of ATOMIC_REQUESTS, as LoginView does.
        view._non_atomic_requests = ALL_ALIASES  # type: ignore[attr-defined]
        return view

    def dispatch(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        if not conf.LOGIN_CODE:
            # No email carries a code: no code may be guessed here.
            raise Http404
        _require_sessions(request)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["request_url"] = reverse("sesame_db:login-request")
        return context

    def form_valid(self, form: LoginCodeForm) -> HttpResponseBase:  # type: ignore[override]
        request = self.request
        token = flow.check_code(request, form.cleaned_data["code"])
        if token is None:
            if flow.codes_left(request):
                form.add_error("code", _("This code is wrong."))
            else:
                form.add_error(
                    None,
                    _("No code works in this browser now. Ask for a new link."),
                )
            return _never_cache(self.form_invalid(form))
        next_url = flow.safe_next(request, flow.Pending.load(request).next)
        if (response := _log_in(request, token, self)) is not None:
            return response
        flow.Pending.clear(request)
        return HttpResponseRedirect(
            next_url or resolve_url(settings.LOGIN_REDIRECT_URL)
        )

    def login_failed(self) -> HttpResponseBase:
        return _failed(self.request)

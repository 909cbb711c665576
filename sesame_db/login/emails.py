"""
The email of login by email: rendered from templates, sent with Django's email API or a project's function.

Templates, which a project overrides like any app's templates:

- ``sesame_db/login/email_subject.txt``: the subject, on one line;
- ``sesame_db/login/email.txt``: the plain-text body;
- ``sesame_db/login/email.html``: the HTML body.

Their context: ``link`` (the URL to open), ``code`` (the code to type, or
empty when :data:`SESAME_LOGIN_CODE` is off), ``code_url`` (where to type
it), ``minutes`` (how long the link lasts), ``user`` (the person, or
:obj:`None` for a sign-up link), ``signup`` (whether it's a sign-up link),
``email`` and ``request``.

"""

from __future__ import annotations

from typing import Any

from django.core.mail import EmailMultiAlternatives
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from sesame_db.conf import conf

__all__ = ["render", "send", "send_email"]


def render(
    context: dict[str, Any], request: HttpRequest | None = None
) -> tuple[str, str, str]:
    """Render the subject, the plain-text body and the HTML body of the email."""
    # One line: a newline in a subject is a header injection.
    subject = " ".join(
        render_to_string("sesame_db/login/email_subject.txt", context, request).split()
    )
    text = render_to_string("sesame_db/login/email.txt", context, request)
    html = render_to_string("sesame_db/login/email.html", context, request)
    return subject, text, html


def send_email(*, to: str, subject: str, text: str, html: str) -> None:
    """
    Send the email with Django's email API, from :setting:`DEFAULT_FROM_EMAIL`.

    This is the default of :data:`SESAME_LOGIN_SEND_EMAIL`; a project's
    function takes the same keyword arguments, strings only, which a task
    queue can serialize.

    """
    message = EmailMultiAlternatives(subject, text, None, [to])
    message.attach_alternative(html, "text/html")
    message.send()


def send(*, to: str, subject: str, text: str, html: str) -> None:
    """Send the email with :data:`SESAME_LOGIN_SEND_EMAIL`, or :func:`send_email`."""
    path = conf.LOGIN_SEND_EMAIL
    sender = send_email if path is None else import_string(path)
    sender(to=to, subject=subject, text=text, html=html)

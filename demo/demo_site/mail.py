"""Email of the demo: printed to the console as the reader will see it."""

from __future__ import annotations

from django.core.mail import EmailMessage
from django.core.mail.backends import console


class EmailBackend(console.EmailBackend):
    """
    Print the recipients, the subject and the plain-text body of each email.

    Django's console backend prints the raw message. From Django 6.1, that
    encodes the long line of a login link as quoted-printable (``=3D`` for
    ``=``, a ``=`` at each cut): a mail program decodes it, but a link copied
    from the console wouldn't work.

    """

    def write_message(self, message: EmailMessage) -> None:
        self.stream.write(
            f"To: {', '.join(message.to)}\n"
            f"Subject: {message.subject}\n\n"
            f"{message.body}\n"
            f"{'-' * 79}\n"
        )

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.urls import reverse

from sesame_db.utils import get_query_string

USERS = [
    # username, email, password, is_staff
    ("demo", "demo@example.com", "demo", False),
    ("staff", "staff@example.com", "staff", True),
]


class Command(BaseCommand):
    help = "Set up the demo database and users, print magic links, and run the development server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set up and print links, but don't run the server.",
        )

    def handle(self, *args: Any, addrport: str, no_serve: bool, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        User = get_user_model()
        for username, email, password, is_staff in USERS:
            user, created = User._default_manager.get_or_create(
                username=username, defaults={"email": email}
            )
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = is_staff
                user.save()
        demo = User._default_manager.get(username="demo")
        staff = User._default_manager.get(username="staff")
        base = f"http://{addrport}"
        # Stored links first: they show up in the admin at once, with their
        # uses and their audit trail.
        login_link = get_query_string(
            demo, store=True, max_age=3600, label="Demo login link", issued_by=staff
        )
        share_link = get_query_string(
            demo,
            scope="report:1",
            store=True,
            max_age=3600,
            max_uses=5,
            label="Share of Q3 sales",
            issued_by=staff,
        )
        self.stdout.write("sesame_db demo\n\n")
        self.stdout.write(
            "Stored links, listed in the admin with their uses and events:\n"
        )
        self.stdout.write(
            f"  Log in as demo:\n    {base}{reverse('login')}{login_link}\n"
        )
        self.stdout.write(
            f"  Open report 1 only, 5 times at most:\n"
            f"    {base}{reverse('report', args=[1])}{share_link}\n\n"
        )
        self.stdout.write(
            f"Admin: {base}{reverse('admin:sesame_db_issuedtoken_changelist')}\n"
            "  log in as staff / staff (demo / demo is a regular user)\n\n"
        )
        self.stdout.write(
            f"A stateless link, which the admin doesn't list:\n"
            f"    {base}{reverse('login')}{get_query_string(demo, store=False)}\n"
        )
        self.stdout.write(
            f"Or request a link by email at {base}{reverse('sesame_db:login-request')} for demo@example.com (emails print here).\n"
        )
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)

from __future__ import annotations

from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from sesame_db.decorators import authenticate
from sesame_db.utils import get_query_string

# The demo's "reports" are fixed; a real project would use a model.
REPORTS = {
    1: ("Q3 sales", "Revenue grew 12% over Q2, driven by the northern region."),
    2: (
        "Incident review",
        "The outage on 3 March lasted 41 minutes; root cause: expired certificate.",
    ),
}


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/home.html", {"reports": REPORTS})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("home")


def _get_report(pk: int) -> tuple[str, str]:
    try:
        return REPORTS[pk]
    except KeyError:
        raise Http404("No such report") from None


@authenticate(scope="report:{pk}")
def report(request: HttpRequest, pk: int) -> HttpResponse:
    """A report reachable only with a link scoped to it."""
    title, body = _get_report(pk)
    return render(
        request,
        "demo/report.html",
        {"title": title, "body": body, "viewer": request.user},
    )


@login_required
def share_report(request: HttpRequest, pk: int) -> HttpResponse:
    """Create a link that opens this report, and nothing else, as the current user."""
    title, _ = _get_report(pk)
    # A stored link: it can be revoked, and every use is audited.
    query_string = get_query_string(
        request.user,
        scope=f"report:{pk}",
        store=True,
        max_age=3600,
        max_uses=5,
        label=f"Share of {title}",
        issued_by=request.user,
    )
    link = request.build_absolute_uri(reverse("report", args=[pk]) + query_string)
    return render(request, "demo/share.html", {"title": title, "link": link})

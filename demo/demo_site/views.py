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
        request.user,  # type: ignore[arg-type]
        scope=f"report:{pk}",
        store=True,
        max_age=3600,
        max_uses=5,
        label=f"Share of {title}",
        issued_by=request.user,  # type: ignore[arg-type]
    )
    link = request.build_absolute_uri(reverse("report", args=[pk]) + query_string)
    return render(request, "demo/share.html", {"title": title, "link": link})


# Sharing with a guest: someone who has no account. The guest link logs no
# one in; it opens the guest view of one report, and the sharer sees its
# audit trail and can revoke it.


@login_required
def share_with_guest(request: HttpRequest, pk: int) -> HttpResponse:
    """Share a report with a guest email; list this report's guest links, their audit and a revoke button."""
    from sesame_db.models import IssuedToken, TokenEvent
    from sesame_db.utils import get_guest_query_string

    title, _ = _get_report(pk)
    scope = f"report:{pk}"
    link = None
    error = None
    if request.method == "POST":
        email = request.POST.get("email", "").strip()
        if not email or len(email) > 254:
            error = "Enter the guest's email address."
        else:
            query_string = get_guest_query_string(
                email,
                scope,
                max_age=7 * 24 * 3600,
                max_uses=10,
                label=f"{title} for {email}",
                issued_by=request.user,  # type: ignore[arg-type]
                request=request,
            )
            link = request.build_absolute_uri(
                reverse("guest-report", args=[pk]) + query_string
            )
    shared = (
        IssuedToken.objects.shared_by(request.user)  # type: ignore[arg-type]
        .for_scope(scope)
        .order_by("-created")[:20]
    )
    events = (
        TokenEvent.objects.filter(token__in=[s.pk for s in shared])
        .exclude(recipient="")
        .order_by("-created_at")[:50]
    )
    return render(
        request,
        "demo/share_with_guest.html",
        {
            "pk": pk,
            "title": title,
            "link": link,
            "error": error,
            "shared": shared,
            "events": events,
        },
    )


@login_required
@require_POST
def revoke_guest_link(request: HttpRequest, pk: int, link_id: int) -> HttpResponse:
    """Revoke one guest link that the current user shared."""
    from sesame_db.models import IssuedToken

    IssuedToken.objects.shared_by(request.user).filter(pk=link_id).revoke(  # type: ignore[arg-type]
        by=request.user,  # type: ignore[arg-type]
        reason="revoked by the sharer in the demo",
        request=request,
    )
    return redirect("share-with-guest", pk=pk)


@authenticate(scope="report:{pk}", guests=True)
def guest_report(request: HttpRequest, pk: int) -> HttpResponse:
    """The guest's view of a report: no one is logged in."""
    title, body = _get_report(pk)
    return render(
        request,
        "demo/guest_report.html",
        {"title": title, "body": body, "shared": getattr(request, "sesame_link", None)},
    )

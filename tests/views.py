"""
Views for the tests of the decorator, the middleware and ``LoginView``.

Each view answers with the username of the user it sees, or "anonymous", so
that tests can tell who the view ran as.

"""

from __future__ import annotations

from django.http import HttpResponse

from sesame_db.decorators import authenticate


def username(user):
    return user.get_username() if user.is_authenticated else "anonymous"


def show_user(request, *args, **kwargs):
    return HttpResponse(username(request.user))


async def ashow_user(request, *args, **kwargs):
    # Evaluating Django's lazy request.user queries the database, which isn't
    # allowed in async code: use request.auser() when Django's middleware
    # provides it. sesame_db's middleware sets request.user without it.
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else request.user
    return HttpResponse(username(user))


# The decorator documents request.user as the way to reach the user, in sync
# and async views alike.


@authenticate
def decorated(request):
    return HttpResponse(username(request.user))


@authenticate
async def adecorated(request):
    return HttpResponse(username(request.user))


@authenticate(scope="report:{pk}")
def report(request, pk):
    return HttpResponse(f"report {pk} for {username(request.user)}")


@authenticate(scope="report:{pk}")
async def areport(request, pk):
    return HttpResponse(f"report {pk} for {username(request.user)}")


@authenticate(required=False)
def optional(request):
    return HttpResponse(username(request.user))


@authenticate(required=False)
async def aoptional(request):
    return HttpResponse(username(request.user))


@authenticate(permanent=True)
def permanent(request):
    return HttpResponse(username(request.user))


@authenticate(permanent=True)
async def apermanent(request):
    return HttpResponse(username(request.user))


@authenticate(override=False)
def no_override(request):
    return HttpResponse(username(request.user))


@authenticate(override=False)
async def ano_override(request):
    # When the decorator steps aside, request.user is still Django's lazy
    # object, which async code cannot evaluate; see ano_override_user.
    return HttpResponse(username(await request.auser()))


@authenticate(override=False)
async def ano_override_user(request):
    return HttpResponse(username(request.user))


@authenticate(max_age=60)
def max_age(request):
    return HttpResponse(username(request.user))


@authenticate(max_age=60)
async def amax_age(request):
    return HttpResponse(username(request.user))


@authenticate
async def aauser(request):
    # Django's async API for the current user.
    return HttpResponse(username(await request.auser()))

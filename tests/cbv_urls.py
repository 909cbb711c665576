"""
Class-based views with TokenAuthenticationMixin, for tests/test_views.py.

"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.urls import path
from django.views import View
from django.views.generic import DetailView

from sesame_db.utils import get_object_scope
from sesame_db.views import TokenAuthenticationMixin

from .views import username


class Boom(Exception):
    pass


class ShowUserView(TokenAuthenticationMixin, View):
    def get(self, request, *args, **kwargs):
        return HttpResponse(f"{username(request.user)} {sorted(kwargs.items())}")


class AsyncShowUserView(TokenAuthenticationMixin, View):
    async def get(self, request, *args, **kwargs):
        return HttpResponse(username(request.user))


class ConfirmedView(ShowUserView):
    confirm = True

    def post(self, request, *args, **kwargs):
        return HttpResponse(f"confirmed {username(request.user)}")


class UserDetailView(TokenAuthenticationMixin, DetailView):  # type: ignore[type-arg]
    """Share one object: the token's scope names the object."""

    scope = get_object_scope(get_user_model(), "{pk}")

    def get_queryset(self):
        return get_user_model().objects.all()

    def render_to_response(self, context, **response_kwargs):
        return HttpResponse(
            f"{self.object.get_username()} seen by {username(self.request.user)}"
        )


class EditView(ShowUserView):
    def get_scope(self):
        return get_object_scope(get_user_model(), self.kwargs["pk"], action="edit")


class FailingView(ShowUserView):
    def get(self, request, *args, **kwargs):
        get_user_model().objects.create_user("created-by-view")
        raise Boom


urlpatterns = [
    path("user/", ShowUserView.as_view()),
    path("auser/", AsyncShowUserView.as_view()),
    path("optional/", ShowUserView.as_view(required=False)),
    path("permanent/", ShowUserView.as_view(permanent=True)),
    path("no-override/", ShowUserView.as_view(override=False)),
    path("max-age/", ShowUserView.as_view(max_age=60)),
    path("report/<int:pk>/", ShowUserView.as_view(scope="report:{pk}")),
    path("confirmed/", ConfirmedView.as_view()),
    path("users/<int:pk>/", UserDetailView.as_view()),
    path("users/<int:pk>/edit/", EditView.as_view()),
    path("fails/", FailingView.as_view()),
]

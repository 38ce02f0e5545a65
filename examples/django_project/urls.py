"""The Django side: everything not below /ai."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


async def home(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    name = user.get_username() if user.is_authenticated else "anonymous"
    return HttpResponse(f"Hello from Django, {name}. The AI gateway is at /ai/v1\n")


urlpatterns = [path("", home)]

"""Django with the gateway at /ai: one ASGI application for uvicorn.

    uvicorn examples.django_project.asgi:application --port 8000
    # OpenAI clients: base_url="http://127.0.0.1:8000/ai/v1"

`ai_dispatcher` sends /ai/... to the gateway (as if mounted there) and everything else to
Django. Lifespan events go to the gateway (Django takes none), so it is closed when uvicorn
stops. `session_key_id` lets Django's login name the client: a request to /ai carrying the
session cookie of a logged-in user is accounted as `django:<username>`; without one, the
gateway's own client keys (`[server] keys`, open when there are none) decide.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from examples._config import example_config
from thanos_asgi import Gateway, build_app
from thanos_asgi.integrations.django import ai_dispatcher, session_key_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
django_app = get_asgi_application()
gateway = Gateway(example_config(__file__))
application = ai_dispatcher(django_app, build_app(gateway), "/ai", key_id=session_key_id)

"""The gateway as the whole app: the OpenAI-compatible API at /v1 (Anthropic's at /v1/messages).

    uvicorn examples.standalone.app:app --port 8080   # or: python -m examples.standalone.app
    curl http://127.0.0.1:8080/v1/models

This is `uvicorn thanos_asgi:app` spelled out, so each part is yours to change: the config,
the Gateway, and the middleware around ThanosApp (first = outermost; `default_middleware`
is request ids, client keys from `[server] keys` and, where limits exist, rate limits).
ThanosApp answers uvicorn's lifespan events itself and closes the gateway on shutdown.
"""

from __future__ import annotations

from examples._config import example_config
from thanos_asgi import Gateway, build_app
from thanos_asgi.frontends.stack import default_middleware

gateway = Gateway(example_config(__file__))
app = build_app(gateway, middleware=default_middleware(gateway))

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8080)

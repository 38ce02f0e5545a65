"""The gateway with a provider kind of its own (`provider.py`: Acme's API as `kind = "acme"`).

    uvicorn examples.custom_provider.acme_server:app --port 9000      # the "Acme" API
    uvicorn examples.custom_provider.app:app --port 8080              # the gateway
    # OpenAI clients: base_url="http://127.0.0.1:8080/v1", model="acme-small"

Registering the kind (importing `provider`) comes before loading the config that names it.
"""

from __future__ import annotations

import examples.custom_provider.provider  # noqa: F401  (registers kind "acme")
from examples._config import example_config
from thanos_asgi import Gateway, build_app

gateway = Gateway(example_config(__file__))
app = build_app(gateway)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8080)

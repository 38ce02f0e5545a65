"""A host app built to be testable: `create_app(gateway)` takes the gateway it mounts at /ai,
so tests hand it one whose providers are fakes (see `test_app.py`), production a real one.

    uvicorn --factory examples.testing_your_app.app:production_app --port 8000
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from thanos_asgi import ChatRequest, Gateway, Message
from thanos_asgi.config import load_config
from thanos_asgi.integrations.fastapi import lifespan, mount


class Text(BaseModel):
    text: str


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(lifespan=lifespan(gateway))
    mount(app, gateway, path="/ai")  # the OpenAI API at /ai/v1/...

    @app.post("/summary")
    async def summary(body: Text) -> dict[str, str]:
        prompt = f"Summarise in one line: {body.text}"
        request = ChatRequest(model="smart", messages=[Message(role="user", content=prompt)])
        response = await gateway.chat(request)
        return {"summary": response.choices[0].message.content or ""}

    return app


def production_app() -> FastAPI:
    return create_app(Gateway(load_config(env=os.environ)))

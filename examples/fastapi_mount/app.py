"""A FastAPI app with the gateway mounted at /ai, behind the host's own authentication.

    uvicorn examples.fastapi_mount.app:app --port 8000
    # OpenAI clients: base_url="http://127.0.0.1:8000/ai/v1", api_key=<a host token>

The host knows its users by bearer token (`EXAMPLE_TOKENS="token:user,..."`; default
`alice-token:alice`). `current_user` is an ordinary FastAPI dependency; passed to `mount`
it guards everything below /ai (401 from FastAPI without a valid token) and names the user
for the gateway's usage accounting. `/ask` shows a route of the host calling the Gateway
directly through `gateway_dependency`. `lifespan(gateway)` closes upstream clients and
background tasks when the app stops; until the first request nothing has been started.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from examples._config import example_config
from thanos_asgi import ChatRequest, Context, Gateway, Message
from thanos_asgi.integrations.fastapi import gateway_dependency, lifespan, mount

USERS = dict(
    pair.split(":", 1) for pair in os.environ.get("EXAMPLE_TOKENS", "alice-token:alice").split(",")
)

gateway = Gateway(example_config(__file__))
app = FastAPI(lifespan=lifespan(gateway))
bearer = HTTPBearer()


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]
) -> str:
    user = USERS.get(credentials.credentials)
    if user is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    request.scope["thanos.auth"] = {"key_id": f"user:{user}", "policy": None}
    return user


mount(app, gateway, path="/ai", dependencies=[Depends(current_user)])

User = Annotated[str, Depends(current_user)]
GatewayDep = Annotated[Gateway, Depends(gateway_dependency(gateway))]


class Question(BaseModel):
    question: str
    model: str = "auto"


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "fastapi host", "gateway": "/ai/v1"}


@app.post("/ask")
async def ask(question: Question, user: User, gw: GatewayDep) -> dict[str, str]:
    request = ChatRequest(
        model=question.model, messages=[Message(role="user", content=question.question)]
    )
    response = await gw.chat(request, Context(key_id=f"user:{user}"))
    return {"user": user, "answer": response.choices[0].message.content or ""}

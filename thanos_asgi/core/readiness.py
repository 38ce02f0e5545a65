"""`GET /health/ready`: can any provider serve a request now?

A provider that needs a key serves when it has one. One that needs none (Ollama, a local
OpenAI-compatible server) serves only when it answers: its model list is asked for, within
`PROBE_TIMEOUT` seconds; any answer counts, a refused connection or a timeout does not.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from thanos_asgi.exceptions import ThanosError, UpstreamConnectError, UpstreamTimeout
from thanos_asgi.providers import SPECS

if TYPE_CHECKING:
    from thanos_asgi.providers.base import Provider

__all__ = ["PROBE_TIMEOUT", "serving"]

PROBE_TIMEOUT = 2.0


async def serving(providers: dict[str, Provider]) -> dict[str, bool]:
    """Each provider instance: can it serve now?"""
    names = list(providers)
    found = await asyncio.gather(*(_serves(providers[name]) for name in names))
    return dict(zip(names, found, strict=True))


async def _serves(provider: Provider) -> bool:
    status = provider.status()
    if not status.get("configured"):
        return False
    spec = SPECS.get(str(status.get("kind", "")))
    if spec is None or spec.needs_key:
        return True
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await provider.list_models()
    except (UpstreamConnectError, UpstreamTimeout, TimeoutError):
        return False
    except ThanosError:
        return True  # it answered, if only with an error
    return True

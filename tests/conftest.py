from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fake_oauth import FakeOAuth, serving


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOAuth]:
    """The fake GitHub and Anthropic login servers of `tests/fake_oauth.py`, over loopback."""
    async with serving() as server:
        yield server

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fake_oauth import FakeOAuth, serving
from tests.home_guard import pytest_configure, pytest_sessionfinish

__all__ = ["pytest_configure", "pytest_sessionfinish"]  # the home guard's hooks: see there


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOAuth]:
    """The fake GitHub and Anthropic login servers of `tests/fake_oauth.py`, over loopback."""
    async with serving() as server:
        yield server

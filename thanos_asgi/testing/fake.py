"""`kind = "fake"`: a provider instance answering from a script, with no network at all.

    [providers.fake]
    kind = "fake"          # model names pick the behaviour: fake/echo, fake/error-429, ...

It is the OpenAI-compatible adapter over a `FakeUpstream`, so requests take the same path as
to a real OpenAI-compatible provider. Give the instance your own script by passing a
`FakeUpstream` as its transport: `Gateway(config, transports={"fake": FakeUpstream(script)})`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from thanos_asgi.providers.openai_compat import OpenAICompatible
from thanos_asgi.testing.upstream import FakeUpstream

if TYPE_CHECKING:
    from thanos_asgi.config import ProviderConfig
    from thanos_asgi.providers import ProviderSpec
    from thanos_asgi.upstream import Transport

__all__ = ["FakeProvider"]


class FakeProvider(OpenAICompatible):
    """Answers as its `FakeUpstream` (`self.upstream`) is scripted; any other transport the
    gateway hands it is not used."""

    kind: ClassVar[str] = "fake"

    def __init__(
        self, config: ProviderConfig, *, spec: ProviderSpec, transport: Transport | None = None
    ) -> None:
        upstream = transport if isinstance(transport, FakeUpstream) else FakeUpstream()
        super().__init__(config, spec=spec, transport=upstream)
        self.upstream = upstream

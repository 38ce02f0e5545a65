"""A lean HTTP/1.1 upstream client: an asyncio protocol over httptools' parser, pooled."""

from thanos_asgi.upstream.h1._pool import H1Transport

__all__ = ["H1Transport"]

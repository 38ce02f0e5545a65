"""How the examples find their config: plumbing they share, not part of what they show (your
own app builds its `Config` however suits it, `load_config()` being the usual way)."""

from __future__ import annotations

import os
from pathlib import Path

from thanos_asgi.config import Config, load_config


def example_config(example: str) -> Config:
    """The file THANOS_CONFIG names, else a thanos.toml beside `example` (the caller's
    `__file__`), else the usual search (./thanos.toml, ~/.config/thanos/config.toml, ...; with
    no file at all: Ollama on localhost plus every provider whose API key variable is set)."""
    beside = Path(example).with_name("thanos.toml")
    if os.environ.get("THANOS_CONFIG") or not beside.is_file():
        return load_config(env=os.environ)
    return load_config(beside, env=os.environ)

"""The public surface is pinned, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import thanos_asgi


def test_all_is_sorted_and_complete() -> None:
    assert thanos_asgi.__all__ == sorted(thanos_asgi.__all__)
    assert thanos_asgi.__all__ == [
        "AiohttpTransport",
        "ChatChunk",
        "ChatRequest",
        "ChatResponse",
        "ConfigError",
        "Context",
        "ErrorMiddleware",
        "EventSourceResponse",
        "Gateway",
        "H1Transport",
        "HttpxTransport",
        "LazyApp",
        "Message",
        "RequestIdMiddleware",
        "ThanosApp",
        "ThanosError",
        "Timeouts",
        "app",
        "build_app",
        "default_middleware",
    ]
    for name in thanos_asgi.__all__:
        assert getattr(thanos_asgi, name) is not None


def test_import_does_not_pull_optional_or_network_stacks() -> None:
    code = (
        "import sys, thanos_asgi; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'grpc', 'redis', 'django', 'fastapi', 'httpx', 'aiohttp', 'uvicorn', 'starlette', "
        "'httptools'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_aiohttp_is_optional_and_its_engine_says_which_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"  # as if aiohttp were not installed
        "import thanos_asgi\n"
        "try:\n"
        "    thanos_asgi.AiohttpTransport()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'thanos-asgi[aiohttp]'" in result.stdout


def test_the_default_install_declares_no_dependency_the_package_never_imports() -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    names = {d.split(">")[0].split("[")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert not names & {"anyio", "aiohttp"}
    assert project["optional-dependencies"]["aiohttp"] == ["aiohttp>=3.9"]

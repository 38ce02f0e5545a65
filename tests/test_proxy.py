"""Providers behind an egress proxy and a private CA: an HTTP CONNECT proxy (plain and over
TLS) and a SOCKS5 proxy as loopback servers, a TLS provider with a self-signed certificate."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.helpers import self_signed
from tests.rawserver import Server, answer, serving
from tests.test_gateway_upstream import each_request, provider_server
from thanos_asgi import Gateway, H1Transport
from thanos_asgi.config import parse_config
from thanos_asgi.exceptions import ConfigError, UpstreamConnectError
from thanos_asgi.types import ChatRequest, Message

pytestmark = pytest.mark.anyio


class Tunnels:
    """What a proxy saw: the first line and credentials of each tunnel it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []
        self.url = ""


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter], host: str, port: int
) -> None:
    target_reader, target_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(pipe(client[0], target_writer), pipe(target_reader, client[1]))


@asynccontextmanager
async def connect_proxy(
    tls: ssl.SSLContext | None = None, password: str | None = None
) -> AsyncIterator[Tunnels]:
    tunnels = Tunnels()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        line, *fields = head.split("\r\n")
        auth = next(
            (f.split(": ", 1)[1] for f in fields if f.lower().startswith("proxy-authorization")),
            None,
        )
        tunnels.asked.append((line, auth))
        if password and auth != "Basic " + base64.b64encode(f"me:{password}".encode()).decode():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        host, _, port = line.split(" ")[1].rpartition(":")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await splice((reader, writer), host, int(port))

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    tunnels.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    async with listener:
        yield tunnels


@asynccontextmanager
async def socks5_proxy() -> AsyncIterator[Tunnels]:
    """RFC 1928, no authentication, CONNECT to a domain name or an IPv4 address."""
    tunnels = Tunnels()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, count = await reader.readexactly(2)
        await reader.readexactly(count)
        writer.write(b"\x05\x00")
        _, _, _, kind = await reader.readexactly(4)
        if kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntoa(await reader.readexactly(4))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        tunnels.asked.append((f"CONNECT {host}:{port}", None))
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
        await splice((reader, writer), host, port)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    tunnels.url = f"socks5h://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield tunnels


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA's certificate (for `ca_file`) and a server context that presents it."""
    cert, key = self_signed()
    (tmp_path / "ca.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "ca.pem", tmp_path / "key.pem")
    return tmp_path / "ca.pem", server_side


@asynccontextmanager
async def tls_provider(server_side: ssl.SSLContext) -> AsyncIterator[Server]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(answer(b'{"through": "the tunnel"}'))
            await writer.drain()

    async with serving(handler, tls=server_side) as server:
        server.url = server.url.replace("127.0.0.1", "localhost")  # the name goes to the proxy
        yield server


async def get(transport: H1Transport, url: str) -> bytes:
    response = await transport.send("POST", url, headers={}, body=b"{}")
    return await response.read()


async def test_https_through_an_http_connect_proxy_with_credentials_and_a_private_ca(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    ca_file, server_side = certificate
    async with tls_provider(server_side) as provider, connect_proxy(password="s3cret") as proxy:
        authority = provider.url.split("/")[2]
        with_ca = H1Transport(proxy=proxy.url.replace("//", "//me:s3cret@"), ca_file=str(ca_file))
        assert await get(with_ca, provider.url) == b'{"through": "the tunnel"}'
        assert await get(with_ca, provider.url) == b'{"through": "the tunnel"}'  # kept alive
        await with_ca.aclose()
        assert proxy.asked == [(f"CONNECT {authority} HTTP/1.1", "Basic bWU6czNjcmV0")]
        without_ca = H1Transport(proxy=proxy.url.replace("//", "//me:s3cret@"))
        with pytest.raises(UpstreamConnectError, match="TLS"):
            await get(without_ca, provider.url)
        await without_ca.aclose()
        wrong = H1Transport(proxy=proxy.url.replace("//", "//me:wrong@"), ca_file=str(ca_file))
        with pytest.raises(UpstreamConnectError, match="refused the tunnel") as refused:
            await get(wrong, provider.url)
        assert "wrong" not in str(refused.value) and "407" in str(refused.value)
        await wrong.aclose()


async def test_https_through_a_proxy_spoken_to_over_tls(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    ca_file, server_side = certificate
    async with tls_provider(server_side) as provider, connect_proxy(tls=server_side) as proxy:
        transport = H1Transport(proxy=proxy.url, ca_file=str(ca_file))  # TLS inside TLS
        assert await get(transport, provider.url) == b'{"through": "the tunnel"}'
        await transport.aclose()
    assert len(proxy.asked) == 1


async def test_https_through_a_socks5_proxy(certificate: tuple[Path, ssl.SSLContext]) -> None:
    ca_file, server_side = certificate
    async with tls_provider(server_side) as provider, socks5_proxy() as proxy:
        transport = H1Transport(proxy=proxy.url, ca_file=str(ca_file))
        assert await get(transport, provider.url) == b'{"through": "the tunnel"}'
        await transport.aclose()
    assert proxy.asked == [(f"CONNECT {provider.url.split('/')[2]}", None)]


def test_unusable_proxy_or_ca_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http://, https:// or socks5://"):
        H1Transport(proxy="ftp://proxy.example:21")
    with pytest.raises(ConfigError, match="CA file"):
        H1Transport(ca_file=str(tmp_path / "missing.pem"))


async def test_a_provider_instance_goes_through_its_proxy() -> None:
    async with connect_proxy() as proxy, provider_server(each_request(answer(CHAT))) as up:
        base = up.url.split("/v1")[0]
        text = (
            f'[providers.p]\nkind = "openai-compatible"\nbase_url = "{base}/v1"\n'
            f'models = ["m"]\nproxy = "{proxy.url}"\n'
            f'[providers.direct]\nkind = "openai-compatible"\nbase_url = "{base}/v1"\n'
            'models = ["d"]\n'
        )
        gateway = Gateway(parse_config(text, source="proxy.toml", env={}))
        try:
            request = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
            assert (await gateway.chat(request)).choices[0].message.content == "hello"
            await gateway.chat(ChatRequest(model="d", messages=request.messages))
        finally:
            await gateway.aclose()
    assert len(proxy.asked) == 1 and len(up.requests) == 2  # only p's request was tunnelled


CHAT = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def test_trust_env_takes_the_proxy_from_the_environment_unless_no_proxy_names_the_host() -> None:
    text = (
        '[providers.openai]\napi_key = "sk-0123456789abcdef"\n'
        '[providers.local]\nkind = "openai-compatible"\nbase_url = "http://llm.internal:8000/v1"\n'
    )
    env = {"HTTPS_PROXY": "http://egress:3128", "http_proxy": "socks5://s:1080"}
    assert parse_config(text, source="t.toml", env=env).providers["openai"].proxy is None
    trusting = "[server]\ntrust_env = true\n" + text
    providers = parse_config(trusting, source="t.toml", env=env).providers
    assert providers["openai"].proxy == "http://egress:3128"
    assert providers["local"].proxy == "socks5://s:1080"
    env["NO_PROXY"] = "localhost, .internal"
    providers = parse_config(trusting, source="t.toml", env=env).providers
    assert providers["openai"].proxy == "http://egress:3128" and providers["local"].proxy is None

"""`thanos serve --workers N`: uvicorn worker processes, each with its own gateway; SIGHUP to
the parent replaces them with ones that read the config afresh, SIGTERM stops them all; and
configs that several processes cannot serve are refused before anything starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from tests.helpers import openai_compatible
from tests.servers import Upstream, free_port, running, serve_command, serve_env, thanos_serve
from thanos_asgi.cli import _workers_refusal
from thanos_asgi.config import parse_config

HI = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}'


@asynccontextmanager
async def serve_workers(config: Path, workers: int) -> AsyncIterator[tuple[int, Process, Path]]:
    """`thanos serve --workers N` on a free port; yields the port, the parent and its log."""
    async with thanos_serve(config, "--workers", str(workers)) as (port, process, log):
        await until_started(log, process, workers)
        yield port, process, log


async def until_started(log: Path, process: Process, workers: int) -> None:
    for _ in range(600):
        text = await anyio.Path(log).read_text()
        if text.count("Application startup complete") >= workers:
            return
        assert process.returncode is None, text
        await anyio.sleep(0.05)
    raise AssertionError(f"{workers} workers did not start:\n{text}")


async def until_logged(log: Path, text: str) -> None:
    for _ in range(600):
        if text in await anyio.Path(log).read_text():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"{text!r} not logged")


async def ask(port: int, model: str) -> tuple[int, bytes, int]:
    """POST a chat request on a fresh connection; (status, body, pid of the worker that
    holds the server side of that connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        client_port = writer.get_extra_info("sockname")[1]
        body = HI % model.encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length is not None, head
        answer = await reader.readexactly(int(length[1]))
        status = int(head.split(b" ", 2)[1])
        return status, answer, socket_owner(port, client_port)  # the connection is still open
    finally:
        writer.close()


def socket_owner(server_port: int, client_port: int) -> int:
    """The pid holding the accepted socket of a loopback connection (from /proc)."""
    inode = next(
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines())
        if fields[1].endswith(f":{server_port:04X}")
        and fields[2].endswith(f":{client_port:04X}")
        and fields[3] == "01"  # established, not an old connection in TIME_WAIT
    )
    wanted = f"socket:[{inode}]"
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        with contextlib.suppress(OSError):  # gone, or not ours to read
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):  # closed meanwhile
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
    raise AssertionError(f"no process holds the socket of 127.0.0.1:{client_port}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


async def answering_workers(port: int, model: str, at_least: int) -> set[int]:
    """Pids that answered `model` with a 200, asking on fresh connections until `at_least`."""
    seen: set[int] = set()
    for _ in range(20):
        for status, body, pid in await asyncio.gather(*(ask(port, model) for _ in range(16))):
            assert status == 200, body
            seen.add(pid)
        if len(seen) >= at_least:
            break
    return seen


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="finds workers through /proc")
@pytest.mark.anyio
async def test_two_workers_answer_reload_on_sighup_and_stop_on_sigterm(tmp_path: Path) -> None:
    async with running(Upstream()) as upstream:
        config = tmp_path / "thanos.toml"
        config.write_text(openai_compatible("one", upstream))
        async with serve_workers(config, 2) as (port, process, log):
            first = await answering_workers(port, "one/m", 2)
            assert len(first) == 2, "every answer came from one worker"
            assert {parent_of(pid) for pid in first} == {process.pid}

            config.write_text(
                openai_compatible("one", upstream) + openai_compatible("two", upstream)
            )
            process.send_signal(signal.SIGHUP)  # uvicorn replaces the workers one at a time
            for pid in first:  # each old worker stops once its replacement is serving
                await until_logged(log, f"Finished server process [{pid}]")
            second = await answering_workers(port, "two/m", 2)
            assert len(second) == 2 and not second & first, log.read_text()

            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                await process.wait()
    output = await anyio.Path(log).read_text()
    assert process.returncode == 0, output
    for pid in first | second:  # uvicorn waited for every worker it started
        assert f"Finished server process [{pid}]" in output
    assert "Stopping parent process" in output


def refusal(text: str) -> str | None:
    return _workers_refusal(parse_config(text, source="t.toml", env={}))


def test_limits_in_memory_state_are_refused_with_workers() -> None:
    local = openai_compatible("local", "http://127.0.0.1:1")
    assert refusal(local) is None
    limited = local + "rate_limit_rpm = 10\n[cost]\nmonthly_budget_usd = 5\n"
    limited += '[[server.keys]]\nid = "team"\nkey = "thk_0123456789abcdef0123"\ntpm = 100\n'
    problem = refusal(limited)
    assert problem is not None and 'backend = "redis"' in problem
    for name in ("providers.local.rate_limit_rpm", "cost.monthly_budget_usd", "key team tpm"):
        assert name in problem
    shared = limited + '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:6379/0"\n'
    assert refusal(shared) is None
    assert "grpc" in (refusal(local + '[server]\ngrpc = "127.0.0.1:50051"\n') or "")


def test_serve_refuses_workers_it_cannot_share_limits_across(tmp_path: Path) -> None:
    config = tmp_path / "thanos.toml"
    config.write_text("[server]\nworkers = 2\nrpm_per_ip = 60\n")
    command = serve_command(config)
    done = subprocess.run(
        [*command, "--port", str(free_port())],
        env=serve_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot serve with 2 workers" in done.stderr and "server.rpm_per_ip" in done.stderr
    zero = subprocess.run(
        [*command, "--workers", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert zero.returncode == 2 and "must be at least 1" in zero.stderr

"""A streaming chat client for the gateway's gRPC API (needs `pip install 'thanos-asgi[grpc]'`).

    thanos serve                       # with [server] grpc = "127.0.0.1:50051" in thanos.toml
    python examples/grpc_client.py "Write a haiku about gRPC"
    python examples/grpc_client.py --model smart --key "$THANOS_KEY" "Explain SSE vs gRPC"

Text is printed as it arrives; reasoning (when the model shares it) goes to stderr; the
provider, model, finish reason and token usage follow at the end. Ctrl-C cancels the call,
and with it the upstream request. Other languages: generate a client from proto/thanos.proto,
or explore with `grpcurl -plaintext 127.0.0.1:50051 describe thanos.ThanosService`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc

from thanos_asgi.grpc import thanos_pb2 as pb
from thanos_asgi.grpc import thanos_pb2_grpc as pb_grpc


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gateway")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--system", help="a system message")
    parser.add_argument("--key", help="client key, sent as authorization: Bearer <key>")
    parser.add_argument("--ca", help="PEM file to trust for TLS (omit for plaintext)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    return parser.parse_args(argv)


def channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if args.ca is None:
        return grpc.aio.insecure_channel(args.target)
    with open(args.ca, "rb") as file:
        credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    return grpc.aio.secure_channel(args.target, credentials)


async def chat(args: argparse.Namespace) -> int:
    messages = [pb.Message(role="system", content=args.system)] if args.system else []
    messages.append(pb.Message(role="user", content=args.prompt))
    request = pb.ChatRequest(model=args.model, messages=messages, stream=True)
    metadata = (("authorization", f"Bearer {args.key}"),) if args.key else ()
    async with channel(args) as open_channel:
        stub = pb_grpc.ThanosServiceStub(open_channel)
        try:
            async for message in stub.ChatCompletion(
                request, metadata=metadata, timeout=args.timeout
            ):
                show(message)
        except grpc.aio.AioRpcError as exc:
            trailers = dict(exc.trailing_metadata() or ())
            retry = (
                f" (retry after {trailers['retry-after']} s)" if "retry-after" in trailers else ""
            )
            print(f"\nerror: {exc.code().name}: {exc.details()}{retry}", file=sys.stderr)
            return 1
    return 0


def show(message: pb.ChatResponse) -> None:
    if message.reasoning:
        print(message.reasoning, end="", file=sys.stderr, flush=True)
    if message.content:
        print(message.content, end="", flush=True)
    for call in message.tool_calls:
        print(f"[tool call {call.index}: {call.name} {call.arguments_json}]", end="", flush=True)
    if message.done:
        usage = message.usage
        print(flush=True)
        print(
            f"-- {message.provider}/{message.model}, finish: {message.finish_reason or '?'}, "
            f"tokens: {usage.prompt_tokens} in / {usage.completion_tokens} out",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(chat(parse(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Text and tool calls that a stream delivers in pieces, put together once at the end.

`text += piece` on a string held elsewhere (an attribute, a list item) copies the whole text
on every piece: a provider streaming its answer a character at a time would make the work
quadratic in the answer's length and stall the event loop (a 1 MiB answer in 1-byte pieces:
about 5 * 10^11 bytes copied). These keep the pieces and join them once, in linear time.
"""

from __future__ import annotations

from thanos_asgi.types import ToolCallDelta

__all__ = ["Calls", "Pieces"]


class Pieces:
    """One text growing piece by piece; `text()` joins what arrived so far."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def add(self, piece: str) -> None:
        if piece:
            self._parts.append(piece)

    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""


class Calls:
    """The tool calls of one streamed choice, by index: each call's name and arguments."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, tuple[Pieces, Pieces]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, call: ToolCallDelta) -> None:
        index = call.index if call.index >= 0 else len(self._calls)
        entry = self._calls.get(index)
        if entry is None:
            entry = self._calls[index] = (Pieces(), Pieces())
        if call.function is not None:
            entry[0].add(call.function.name or "")
            entry[1].add(call.function.arguments or "")

    def whole(self) -> list[tuple[str, str]]:
        """(name, arguments) of every call, in the order their first pieces came."""
        return [(name.text(), arguments.text()) for name, arguments in self._calls.values()]

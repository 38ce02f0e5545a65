"""Request ids: unique per request and per process, whatever the host app does to `random`."""

from __future__ import annotations

import os
import random
import re

from thanos_asgi.frontends.middleware.request_id import new_id


def test_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_host_app_seeding_random_does_not_repeat_them() -> None:
    random.seed(7)
    first = new_id()
    random.seed(7)
    assert new_id() != first


def test_a_forked_worker_draws_its_own_ids() -> None:
    """`thanos serve --workers` forks: the child must not go on with the parent's sequence."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running anything of pytest's
        os.write(write, b"".join(new_id() for _ in range(4)))
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 1024):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(new_id() for _ in range(4))
    assert len(child) == 128 and child != parent


def test_made_up_completion_and_call_ids_do_not_repeat_under_a_seeded_random() -> None:
    """The ids a provider does not send come from the same generator (`thanos_asgi.ids`)."""
    from thanos_asgi.frontends._anthropic_out import _message_id, _tool_id
    from thanos_asgi.providers._gemini_ids import completion_id as gemini_id
    from thanos_asgi.providers._ollama_codec import completion_id as ollama_id

    for make, form in [
        (ollama_id, r"chatcmpl-[0-9a-f]{24}"),
        (lambda: gemini_id(""), r"chatcmpl-[0-9a-f]{24}"),
        (lambda: _message_id(""), r"msg_[0-9a-f]{24}"),
        (lambda: _tool_id(None), r"toolu_[0-9a-f]{24}"),
    ]:
        random.seed(7)
        first = make()
        random.seed(7)
        second = make()
        assert re.fullmatch(form, first) and first != second


def test_stored_response_ids_sort_by_time_and_keep_160_random_bits() -> None:
    """A stored response's id is the key to read it: unguessable, and in time order so that
    the store's index grows at its end (OpenAI's own `resp_` ids begin with the time, too)."""
    import time

    from thanos_asgi.frontends._responses_out import new_id as response_id

    made = int(time.time())
    ids = [response_id("resp") for _ in range(1_000)]
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in ids)
    assert all(made <= int(i[5:13], 16) <= made + 5 for i in ids)
    assert len({i[13:] for i in ids}) == len(ids)  # the random part alone never repeats
    random.seed(7)
    first = response_id("resp")
    random.seed(7)
    assert response_id("resp")[13:] != first[13:]  # from `secrets`, not a seeded `random`

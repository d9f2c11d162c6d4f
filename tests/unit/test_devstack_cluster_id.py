"""KRaft cluster ids that `StorageTool format -t <id>` accepts (never one that looks like an option)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

from headwater.devstack.stack import new_cluster_id


def draws(*chunks: bytes) -> Callable[[int], bytes]:
    """A stand-in for os.urandom that returns ``chunks`` in order, counting the calls."""
    it: Iterator[bytes] = iter(chunks)

    def take(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n
        return chunk

    return take


def test_an_id_starting_with_a_dash_is_drawn_again() -> None:
    dash = bytes([0xF8]) + bytes(15)  # first 6 bits 111110 = 62 = '-' in URL-safe base64
    assert base64.urlsafe_b64encode(dash).decode().startswith("-")
    ok = bytes(range(16))
    assert new_cluster_id(draws(dash, dash, ok)) == base64.urlsafe_b64encode(ok).decode().rstrip("=")


def test_ids_are_22_chars_of_16_bytes_and_never_start_with_a_dash() -> None:
    ids = [new_cluster_id() for _ in range(20_000)]  # ~310 of them would start with '-' unfixed
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("_") for i in ids)  # the other non-alphanumeric first char stays allowed

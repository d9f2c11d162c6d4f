"""StateManager: layout, reuse, closing per partition, wipe, and the cross-process lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from headwater.state import MemoryStore, RocksDBStore, StateError, StateManager


def test_layout_and_reuse(tmp_path: Path) -> None:
    mgr = StateManager(tmp_path, "app")
    s = mgr.open("counts", 3)
    assert isinstance(s, RocksDBStore)
    assert s.path == tmp_path / "app" / "counts" / "3"
    assert (tmp_path / "app" / "counts" / "3" / "CURRENT").exists()
    assert mgr.open("counts", 3) is s
    with pytest.raises(StateError, match="ttl"):
        mgr.open("counts", 3, ttl_ms=5)
    with pytest.raises(StateError, match="invalid store name"):
        mgr.open("../x", 0)
    mgr.close_all()


def test_close_partition_closes_only_that_partition(tmp_path: Path) -> None:
    mgr = StateManager(tmp_path, "app")
    a0, b0, a1 = mgr.open("a", 0), mgr.open("b", 0), mgr.open("a", 1)
    a0.write_batch({b"k": b"v"}, 3)
    mgr.close_partition(0)
    assert a0.closed and b0.closed and not a1.closed  # type: ignore[attr-defined]
    assert mgr.open_stores() == [a1]
    again = mgr.open("a", 0)
    assert again is not a0 and again.applied_changelog_offset() == 3
    mgr.close_all()
    assert mgr.open_stores() == [] and a1.closed  # type: ignore[attr-defined]


def test_wipe_and_drop(tmp_path: Path) -> None:
    mgr = StateManager(tmp_path, "app")
    mgr.open("a", 0).write_batch({b"k": b"v"}, 1)
    mgr.open("a", 1).write_batch({b"k": b"v"}, 1)
    mgr.drop("a", 0)
    assert not (tmp_path / "app" / "a" / "0").exists()
    assert mgr.open("a", 0).applied_changelog_offset() == -1
    mgr.wipe()
    assert not (tmp_path / "app").exists() and mgr.open_stores() == []
    assert list(mgr.open("a", 1).items()) == []
    mgr.close_all()


def test_in_memory_keeps_contents_across_close(tmp_path: Path) -> None:
    mgr = StateManager(tmp_path, "app", in_memory=True)
    s = mgr.open("a", 0, ttl_ms=100)
    assert isinstance(s, MemoryStore)
    s.write_batch(dict(zip([b"k"], s.encode_values([b"v"]))), 2)
    mgr.close_partition(0)
    again = mgr.open("a", 0, ttl_ms=100)
    assert again.get_many([b"k"]) == [b"v"] and again.applied_changelog_offset() == 2
    mgr.wipe()
    assert mgr.open("a", 0).applied_changelog_offset() == -1
    assert not (tmp_path / "app").exists()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from headwater.state import StateManager
    mgr = StateManager(Path(sys.argv[1]), "app")
    mgr.open("counts", 0).write_batch({b"k": b"from-child"}, 0)
    print("open", flush=True)
    sys.stdin.readline()
    mgr.close_partition(0)
    print("closed", flush=True)
    sys.stdin.readline()
    """
)


def test_store_locked_by_another_process(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "open"
        mgr = StateManager(tmp_path, "app")
        started = time.monotonic()
        with pytest.raises(StateError, match="locked") as info:
            mgr.open("counts", 0)
        assert time.monotonic() - started < 5  # refused, not waited for
        assert info.value.path == str(tmp_path / "app" / "counts" / "0")
        assert (info.value.store, info.value.partition) == ("counts", 0)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
        store = mgr.open("counts", 0)  # the rebalance hand-over: now it is ours
        assert store.get_many([b"k"]) == [b"from-child"]
        mgr.close_all()
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=10)

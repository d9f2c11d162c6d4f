"""The per-checkpoint write-back cache in front of one store.

Operators read and write state per micro-batch through the cache; nothing reaches the store until
the checkpoint calls ``flush``. ``dirty()`` is the changelog content of the checkpoint: one record
per changed key, its latest *stored* value (TTL prefix included), ``None`` for a delete.

A savepoint (``savepoint`` / ``rollback`` / ``release``) lets the engine undo what an operator
wrote before it raised, so that re-running the operator row by row never applies a row twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from headwater.state.errors import StateError
from headwater.state.store import KeyValueStore, prefix_end

_ABSENT = object()
"""Undo-log marker: the key was not dirty when the savepoint started."""


class WriteBackCache:
    """Per-checkpoint write-back cache over one ``KeyValueStore``.

    Keeps the stored values read since the last flush (so a key is fetched from the store at most
    once per checkpoint) and the changed ones. Reads apply the store's TTL with the store's clock.
    Not thread-safe.

    Args:
        store: the store this cache fronts; the cache never closes it.
    """

    __slots__ = ("store", "_clean", "_dirty", "_undo", "__weakref__")

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._clean: dict[bytes, bytes | None] = {}
        self._dirty: dict[bytes, bytes | None] = {}
        self._undo: dict[bytes, object] | None = None

    # --- reads ------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """User values of ``keys`` in order: own writes first, then reads cached this checkpoint,
        the rest fetched from the store in one ``get_many_stored`` call. ``None`` = missing/expired.
        """
        dirty, clean = self._dirty, self._clean
        stored: list[bytes | None] = [None] * len(keys)
        misses: list[bytes] = []
        miss_at: list[int] = []
        for i, key in enumerate(keys):
            if key in dirty:
                stored[i] = dirty[key]
            elif key in clean:
                stored[i] = clean[key]
            else:
                misses.append(key)
                miss_at.append(i)
        if misses:
            for i, key, value in zip(miss_at, misses, self.store.get_many_stored(misses)):
                stored[i] = value
                clean[key] = value
        return self.store.codec.decode_many(stored)

    def range(self, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, user value) pairs with ``start <= key < end`` in key order, as this cache
        sees them: the dirty writes of this checkpoint (deletes included) merged over the store.

        ``None`` leaves that side open; expired values are skipped. The dirty keys of the range
        are taken when the scan starts (sorted then); the store part is read lazily. Do not write
        through the cache while iterating (collect first, e.g. ``list(cache.range(...))``).
        """
        store_part = self.store.range(start, end)  # validates the bounds, fails if closed
        if start is not None and end is not None and start >= end:
            return iter(())
        return self._merged(store_part, start, end)

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, user value) pairs whose key starts with ``prefix``, in key order, with this
        checkpoint's dirty writes merged over the store (see ``range``)."""
        if type(prefix) is not bytes:
            raise TypeError(f"{self.store!r}: prefix must be bytes, got {prefix!r}")
        return self.range(prefix or None, prefix_end(prefix))

    def _merged(
        self, store_part: Iterator[tuple[bytes, bytes]], start: bytes | None, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        dirty = self._dirty
        overlay = sorted(
            (k, v) for k, v in dirty.items()
            if (start is None or k >= start) and (end is None or k < end)
        )
        codec = self.store.codec
        now = codec.now_ms()
        decoded = codec.decode_many([v for _, v in overlay], now)
        # Store entries for dirty keys are shadowed; dirty entries win (tag 0 sorts first).
        mine = ((k, 0, v) for (k, _), v in zip(overlay, decoded))
        theirs = ((k, 1, v) for k, v in store_part if k not in dirty)
        for key, _, value in heapq.merge(mine, theirs):
            if value is not None:
                yield key, value

    # --- writes -----------------------------------------------------------------------------

    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Write user ``values`` (``None`` deletes) for ``keys``; the last write of a key wins.

        Raises:
            ValueError: ``keys`` and ``values`` differ in length.
        """
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        if self._undo is not None:
            self._remember(keys)
        self._dirty.update(zip(keys, self.store.encode_values(values)))

    def delete_many(self, keys: Sequence[bytes]) -> None:
        """Delete ``keys``. A key written since the last flush that the store did not hold when
        this cache read it leaves no trace: no changelog tombstone for what the changelog never
        had (e.g. a window opened and closed within one checkpoint)."""
        if self._undo is not None:
            self._remember(keys)
        dirty, clean = self._dirty, self._clean
        for key in keys:
            if key in clean and clean[key] is None:
                dirty.pop(key, None)
            else:
                dirty[key] = None

    def delete_range(self, start: bytes | None, end: bytes | None) -> list[bytes]:
        """Delete every live key with ``start <= key < end`` (as ``range`` sees them) and return
        those keys in key order.

        Each becomes a dirty ``None``, so the checkpoint writes one tombstone per key to the
        changelog and deletes it from the store. Expired keys not yet purged are left to
        ``purge_expired``.
        """
        keys = [k for k, _ in self.range(start, end)]
        if keys:
            if self._undo is not None:
                self._remember(keys)
            self._dirty.update(dict.fromkeys(keys))
        return keys

    def purge_expired(self, now_ms: int | None = None) -> list[bytes]:
        """Mark every expired key of the store as deleted (a dirty ``None``) and return those keys.

        Keys rewritten since the last flush are not expired. The deletes reach the store and the
        changelog with the next ``flush``/``dirty()``, in order with the other writes.
        """
        codec = self.store.codec
        now = codec.now_ms() if now_ms is None else now_ms
        dirty = self._dirty
        purged = [k for k in self.store.expired_keys(now) if k not in dirty]
        purged += [k for k, v in dirty.items() if v is not None and codec.is_expired(v, now)]
        if self._undo is not None:
            self._remember(purged)
        for key in purged:
            dirty[key] = None
        return purged

    # --- savepoints -------------------------------------------------------------------------

    def savepoint(self) -> None:
        """Start recording an undo log: ``rollback()`` will restore the dirty state as it is now.

        Costs nothing until the next write; each key written afterwards costs one dict entry
        (its previous dirty value, or its absence) on its first write. Not nested.

        Raises:
            StateError: a savepoint is already active (``release`` or ``rollback`` it first).
        """
        if self._undo is not None:
            raise self._error("a savepoint is already active")
        self._undo = {}

    def rollback(self) -> None:
        """Undo every write since ``savepoint()`` and end the savepoint.

        The dirty state (and so the checkpoint's changelog content) is exactly what it was at
        ``savepoint()``. Reads cached since then stay: they are store contents, still valid.

        Raises:
            StateError: no savepoint is active.
        """
        undo = self._undo
        if undo is None:
            raise self._error("rollback without an active savepoint")
        dirty = self._dirty
        for key, previous in undo.items():
            if previous is _ABSENT:
                dirty.pop(key, None)
            else:
                dirty[key] = previous  # type: ignore[assignment]
        self._undo = None

    def release(self) -> None:
        """Keep the writes since ``savepoint()`` and end the savepoint (drop its undo log).

        Raises:
            StateError: no savepoint is active.
        """
        if self._undo is None:
            raise self._error("release without an active savepoint")
        self._undo = None

    @property
    def in_savepoint(self) -> bool:
        """Whether a savepoint is active."""
        return self._undo is not None

    def _remember(self, keys: Iterable[bytes]) -> None:
        undo, dirty = self._undo, self._dirty
        assert undo is not None
        for key in keys:
            if key not in undo:
                undo[key] = dirty.get(key, _ABSENT)

    # --- checkpoint -------------------------------------------------------------------------

    def dirty(self) -> dict[bytes, bytes | None]:
        """What changed since the last flush: latest stored value per key (``None`` = delete).

        A copy; this is what the checkpoint writes to the changelog, in this order.
        """
        return dict(self._dirty)

    def __len__(self) -> int:
        """Number of dirty keys."""
        return len(self._dirty)

    def flush(self, changelog_offset: int | None) -> None:
        """Write the dirty keys and ``changelog_offset`` in one ``store.write_batch``, then forget
        everything cached (the next checkpoint starts cold and bounded).

        Raises:
            StateError: a savepoint is active (release or roll it back first), or the store write
                failed (the dirty keys are then kept so the caller may retry).
        """
        if self._undo is not None:
            raise self._error("flush while a savepoint is active")
        self.store.write_batch(self._dirty, changelog_offset)
        self._dirty = {}
        self._clean = {}

    def discard(self) -> None:
        """Drop the changes since the last flush (the transaction was aborted), cached reads and
        any active savepoint."""
        self._dirty = {}
        self._clean = {}
        self._undo = None

    def _error(self, reason: str) -> StateError:
        store = self.store
        return StateError(reason, store=store.name, partition=store.partition, path=store.path)

"""The per-checkpoint write-back cache in front of one store.

Operators read and write state per micro-batch through the cache; nothing reaches the store until
the checkpoint calls ``flush``. ``dirty()`` is the changelog content of the checkpoint: one record
per changed key, its latest *stored* value (TTL prefix included), ``None`` for a delete.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.state.store import KeyValueStore


_ABSENT = object()


class WriteBackCache:
    """Per-checkpoint write-back cache over one ``KeyValueStore``.

    Keeps the stored values read since the last flush (so a key is fetched from the store at most
    once per checkpoint) and the changed ones. Reads apply the store's TTL with the store's clock.
    Not thread-safe.

    Args:
        store: the store this cache fronts; the cache never closes it.
    """

    __slots__ = ("store", "_clean", "_dirty", "_undo")

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._clean: dict[bytes, bytes | None] = {}
        self._dirty: dict[bytes, bytes | None] = {}
        self._undo: dict[bytes, object] | None = None

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

    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Write user ``values`` (``None`` deletes) for ``keys``; the last write of a key wins.

        Raises:
            ValueError: ``keys`` and ``values`` differ in length.
        """
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        if self._undo is not None:
            undo, dirty = self._undo, self._dirty
            for key in keys:
                if key not in undo:
                    undo[key] = dirty.get(key, _ABSENT)
        self._dirty.update(zip(keys, self.store.encode_values(values)))

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
        for key in purged:
            dirty[key] = None
        return purged

    def savepoint(self) -> None:
        """Start recording how to undo the writes that follow (see :meth:`rollback`)."""
        self._undo = {}

    def rollback(self) -> None:
        """Undo every write since :meth:`savepoint` and end it."""
        for key, previous in (self._undo or {}).items():
            if previous is _ABSENT:
                self._dirty.pop(key, None)
            else:
                self._dirty[key] = previous  # type: ignore[assignment]
        self._undo = None

    def release(self) -> None:
        """Keep the writes since :meth:`savepoint` and end it."""
        self._undo = None

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
            StateError: the store write failed; the dirty keys are kept so the caller may retry.
        """
        self.store.write_batch(self._dirty, changelog_offset)
        self._dirty = {}
        self._clean = {}

    def discard(self) -> None:
        """Drop the changes since the last flush (the transaction was aborted) and cached reads."""
        self._dirty = {}
        self._clean = {}

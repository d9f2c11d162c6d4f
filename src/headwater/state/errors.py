"""Typed errors of the state package."""

from __future__ import annotations

from pathlib import Path

from headwater.errors import HeadwaterError


class StateError(HeadwaterError):
    """A state store or its changelog cannot be opened, read, written or restored.

    Attributes:
        reason: what went wrong.
        store: the store name, when known.
        partition: the input partition of the store, when known.
        path: the store's directory on disk, when there is one.
        topic: the changelog topic involved, when there is one.
    """

    def __init__(
        self,
        reason: str,
        *,
        store: str | None = None,
        partition: int | None = None,
        path: Path | str | None = None,
        topic: str | None = None,
    ) -> None:
        self.reason = reason
        self.store = store
        self.partition = partition
        self.path = str(path) if path is not None else None
        self.topic = topic
        ctx = [
            f"{label}={value}"
            for label, value in (
                ("store", store),
                ("partition", partition),
                ("topic", topic),
                ("path", self.path),
            )
            if value is not None
        ]
        super().__init__(f"{reason} ({', '.join(ctx)})" if ctx else reason)


class StoreLocked(StateError):
    """A store directory is locked by another open store (RocksDB's LOCK file), usually the
    previous owner of the partition in another process that has not closed it yet."""

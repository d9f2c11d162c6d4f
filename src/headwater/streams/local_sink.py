"""``LocalDirectorySink``: the reference two-phase sink, one Parquet file per task per checkpoint.

Layout under ``directory``:

- ``_staging/<name>.parquet``: staged by ``pre_commit`` (durable, not yet visible);
- ``<name>.parquet``: published by ``commit`` (an atomic rename from staging).

``<name>`` is deterministic: ``<subtopology>_<partition>-<seq>-<ranges>`` where ``seq`` is the
task's checkpoint sequence (10 digits) and ``ranges`` the source offset ranges the file covers,
``<topic>.<partition>.<first>-<end>`` joined by ``+`` (Kafka topic names contain neither ``+``
nor a path separator). ``recover`` reads everything it needs back from the names, so it works
in a new process; publishing the same name twice replaces a file with itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Set
from pathlib import Path

import polars as pl

from headwater.streams.sink import (
    Checkpoint, SinkError, SourceRange, Staged, StagedPart, TaskCommit, is_committed,
)
from headwater.streams.task import TaskId

STAGING = "_staging"
_NAME = re.compile(r"^(\d+)_(\d+)-(\d{10})-(.*)\.parquet$")


class LocalDirectorySink:
    """Writes each task's rows of each checkpoint to one Parquet file in ``directory``.

    Args:
        directory: where published files appear (created if missing).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.staging = self.directory / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self._buffers: dict[TaskId, list[pl.DataFrame]] = {}
        self._owned: set[TaskId] = set()

    # --- the Sink protocol ------------------------------------------------------------------

    def on_assign(self, tasks: Set[TaskId]) -> None:
        self._owned |= tasks

    def recover(self, task: TaskId, committed: TaskCommit) -> None:
        for path in self._staged_files(task):
            part = parse_name(path.name, str(path))
            if is_committed(part, committed):
                self._publish(path)
            else:
                path.unlink(missing_ok=True)
        for tmp in self.staging.glob(f"{task}-*.tmp"):
            tmp.unlink(missing_ok=True)

    def write(self, task: TaskId, frame: pl.DataFrame) -> None:
        self._buffers.setdefault(task, []).append(frame)

    def pre_commit(self, checkpoint: Checkpoint) -> Staged:
        parts = []
        for task, frames in sorted(self._buffers.items()):
            position = checkpoint.tasks.get(task)
            if position is None:
                raise SinkError(f"task {task} wrote rows but is not in checkpoint {checkpoint.id}")
            name = file_name(task, position.seq, position.ranges)
            path = self.staging / name
            tmp = path.with_name(f"{name}.tmp")
            with open(tmp, "wb") as fh:
                pl.concat(frames, how="diagonal_relaxed").write_parquet(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            parts.append(StagedPart(task, position.seq, position.ranges, str(path)))
        _fsync_dir(self.staging)
        self._buffers.clear()
        return Staged(checkpoint.id, tuple(parts))

    def commit(self, staged: Staged) -> None:
        for part in staged.parts:
            self._publish(Path(part.location))

    def abort(self, staged: Staged | None) -> None:
        if staged is None:
            self._buffers.clear()
            for task in self._owned:
                for path in self._staged_files(task):
                    path.unlink(missing_ok=True)
            return
        for part in staged.parts:
            Path(part.location).unlink(missing_ok=True)

    def on_revoke(self, tasks: Set[TaskId]) -> None:
        self._drop(tasks)

    def on_lost(self, tasks: Set[TaskId]) -> None:
        self._drop(tasks)  # staged files stay: the next owner's recover decides

    def close(self) -> None:
        self._buffers.clear()

    # --- inspecting -------------------------------------------------------------------------

    def published(self) -> list[Path]:
        """Published files, by name."""
        return sorted(self.directory.glob("*.parquet"))

    def staged(self) -> list[Path]:
        """Files staged and not yet published or discarded, by name."""
        return sorted(self.staging.glob("*.parquet"))

    # --- internals --------------------------------------------------------------------------

    def _staged_files(self, task: TaskId) -> list[Path]:
        return sorted(self.staging.glob(f"{task}-*.parquet"))

    def _publish(self, staged: Path) -> None:
        target = self.directory / staged.name
        try:
            os.replace(staged, target)
        except FileNotFoundError:
            if not target.exists():
                raise SinkError(f"staged file {staged} vanished before it was published") from None
            return  # published before: committing twice is harmless
        _fsync_dir(self.directory)

    def _drop(self, tasks: Set[TaskId]) -> None:
        for task in tasks:
            self._buffers.pop(task, None)
        self._owned -= tasks


def file_name(task: TaskId, seq: int, ranges: tuple[SourceRange, ...]) -> str:
    """The deterministic file name of a task's data at checkpoint sequence ``seq``."""
    covered = "+".join(f"{r.topic}.{r.partition}.{r.first}-{r.end}" for r in ranges) or "none"
    return f"{task}-{seq:010d}-{covered}.parquet"


def parse_name(name: str, location: str) -> StagedPart:
    """The :class:`StagedPart` a file name describes (inverse of :func:`file_name`)."""
    match = _NAME.match(name)
    if match is None:
        raise SinkError(f"{name!r} is not a file name of LocalDirectorySink")
    sub, partition, seq, covered = match.groups()
    ranges = []
    if covered != "none":
        for text in covered.split("+"):
            topic, p, span = text.rsplit(".", 2)
            first, end = span.split("-")
            ranges.append(SourceRange(topic, int(p), int(first), int(end)))
    return StagedPart(TaskId(int(sub), int(partition)), int(seq), tuple(ranges), location)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

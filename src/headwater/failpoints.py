"""Failpoints: named places in the engine where a test can inject a failure deterministically.

Off unless the environment variable ``HEADWATER_FAILPOINTS`` is set, so production pays one dict
lookup per checkpoint step. Fault-injection tests set it for a ``headwater run`` subprocess::

    HEADWATER_FAILPOINTS="checkpoint.after_flush=kill@3,batch.after_operators=raise"
    HEADWATER_FAILPOINTS_FIRED=/tmp/test-x/fired   # optional: fire each failpoint once in all

Each entry is ``name=action[@n]``: the action runs on the ``n``-th time (default 1) the process
passes the failpoint ``name``. Actions:

- ``raise``: raise :class:`InjectedFault` (an ordinary exception inside the worker);
- ``exit``: ``os._exit(3)`` (the process dies without cleanup, like an uncaught crash);
- ``kill``: ``SIGKILL`` to the process itself (``kill -9``: no handler, no flush, no close).

With ``HEADWATER_FAILPOINTS_FIRED`` naming a directory, a failpoint that fired leaves a marker
file there and never fires again in any process (so a restarted worker runs clean: one fault per
test, no crash loop by construction). The names in use are listed in :data:`KNOWN`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from headwater.errors import HeadwaterError

ENV = "HEADWATER_FAILPOINTS"
FIRED_ENV = "HEADWATER_FAILPOINTS_FIRED"

KNOWN = (
    "batch.after_operators",  # a batch went through the operators, before offsets advance
    "checkpoint.after_flush_sinks",
    "checkpoint.after_changelogs",  # changelog records queued, nothing flushed
    "checkpoint.after_flush",  # outputs acknowledged (ALOS) / before the transaction commits
    "checkpoint.after_commit",  # offsets committed / transaction committed, stores not written
    "checkpoint.after_write_stores",
    "rebalance.on_revoke",  # inside the revoke callback, before its checkpoint
    "rebalance.on_assign",  # inside the assign callback
    "restore.after_batch",  # a restore applied one batch of changelog records
)


class InjectedFault(HeadwaterError):
    """The failure a ``raise`` failpoint injects."""


def _parse(spec: str) -> dict[str, tuple[str, int]]:
    points: dict[str, tuple[str, int]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("=")
        action, _, nth = rest.partition("@")
        if name not in KNOWN or action not in ("raise", "exit", "kill"):
            raise ValueError(f"{ENV}: bad entry {entry!r} (names: {', '.join(KNOWN)})")
        points[name] = (action, int(nth or 1))
    return points


_points = _parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Pass the failpoint ``name``: a no-op unless ``HEADWATER_FAILPOINTS`` arms it."""
    if not _points:
        return
    armed = _points.get(name)
    if armed is None:
        return
    _hits[name] = hits = _hits.get(name, 0) + 1
    action, nth = armed
    if hits != nth:
        return
    fired_dir = os.environ.get(FIRED_ENV)
    if fired_dir:
        marker = Path(fired_dir) / name
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(action)
    if action == "raise":
        raise InjectedFault(f"failpoint {name} (hit {hits})")
    if action == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def reload() -> None:
    """Re-read the environment (tests that arm failpoints in-process)."""
    global _points
    _points = _parse(os.environ.get(ENV, ""))
    _hits.clear()

"""``headwater run``: N worker processes under one supervisor.

Workers are processes (the GIL makes threads useless for CPU-bound batches), started with the
``spawn`` method so each imports the topology afresh. The supervisor restarts a worker that
crashes (non-zero exit) after a short backoff, and on SIGTERM/SIGINT forwards SIGTERM to every
worker, waits for their final checkpoints, and exits 0. A worker that exits 0 by itself (e.g.
``--until-idle``) is not restarted; the supervisor returns when all have finished.
Scaling out across hosts needs nothing more: start ``headwater run`` on another host with the
same ``application_id`` and Kafka's group protocol spreads the partitions.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.streams.runtime.worker import Worker, WorkerOptions
from headwater.streams.topology import Topology

log = logging.getLogger("headwater.supervisor")

RESTART_BACKOFF_S = 2.0
STOP_TIMEOUT_S = 30.0


class TopologyLoadError(HeadwaterError):
    """``module:attribute`` does not name a Topology (or a function returning one)."""


def load_topology(reference: str) -> Topology:
    """Import ``package.module:attribute``; call it if it is a function; expect a Topology."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise TopologyLoadError(f"expected module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise TopologyLoadError(f"cannot load {reference!r}: {exc}") from exc
    topology = target() if callable(target) and not isinstance(target, Topology) else target
    if not isinstance(topology, Topology):
        raise TopologyLoadError(f"{reference!r} is a {type(topology).__name__}, not a Topology")
    return topology


def run_worker(reference: str, settings: Settings, options: WorkerOptions) -> None:
    """A worker process's main: load the topology, run it, stop cleanly on SIGTERM/SIGINT."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker-{options.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request
    worker = Worker(load_topology(reference), settings, options)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    log.info("worker-%d done after %d record(s)", options.worker_id, worker.records_processed)


@dataclass
class _Slot:
    options: WorkerOptions
    process: mp.Process | None = None
    restarts: int = 0
    finished: bool = False


def supervise(reference: str, settings: Settings, options: WorkerOptions) -> int:
    """Run ``settings.workers`` workers until they finish or a signal stops them; exit code."""
    load_topology(reference)  # fail fast, in the supervisor, on a bad reference
    ctx = mp.get_context("spawn")
    slots = [
        _Slot(replace(options, worker_id=options.worker_id + i)) for i in range(settings.workers)
    ]
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def start(slot: _Slot) -> None:
        slot.process = ctx.Process(
            target=run_worker, args=(reference, settings, slot.options),
            name=f"headwater-worker-{slot.options.worker_id}",
        )
        slot.process.start()

    for slot in slots:
        start(slot)
    while not stopping and not all(s.finished for s in slots):
        for slot in slots:
            proc = slot.process
            if slot.finished or proc is None or proc.is_alive():
                continue
            if proc.exitcode == 0:
                slot.finished = True
                continue
            slot.restarts += 1
            log.warning("worker-%d exited with %s; restarting (restart #%d)",
                        slot.options.worker_id, proc.exitcode, slot.restarts)
            time.sleep(RESTART_BACKOFF_S)
            if not stopping:
                start(slot)
        time.sleep(0.2)
    return _stop_all(slots)


def _stop_all(slots: list[_Slot]) -> int:
    live = [s.process for s in slots if s.process is not None and s.process.is_alive()]
    for proc in live:
        os.kill(proc.pid, signal.SIGTERM)  # type: ignore[arg-type]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in live:
        proc.join(max(0.0, deadline - time.monotonic()))
    stubborn = [p for p in live if p.is_alive()]
    for proc in stubborn:
        log.error("worker %s did not stop within %ss; killing it", proc.name, STOP_TIMEOUT_S)
        proc.kill()
        proc.join()
    return 1 if stubborn else 0

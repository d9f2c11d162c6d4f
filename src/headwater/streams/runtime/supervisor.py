"""``headwater run``: N worker processes under one supervisor.

Workers are processes (the GIL makes threads useless for CPU-bound batches), started with the
``spawn`` method so each imports the topology afresh. On SIGTERM/SIGINT the supervisor forwards
SIGTERM to every worker, waits for their final checkpoints, and exits 0 (1 if a final checkpoint
failed). A worker that exits 0 by
itself (e.g. ``--until-idle``) is not restarted; the supervisor returns when all have finished.

Failures: a worker that fails exits non-zero having committed nothing after its last checkpoint
(see :mod:`.worker`). The supervisor restarts it after ``restart_backoff_ms``, doubled for each
consecutive failure (at most 60 s). Failures are consecutive while the worker completes no
checkpoint in between, i.e. it keeps failing at the same input positions; after
``max_restarts`` of them the supervisor logs the cause, stops the other workers and exits 1. A
startup error (a missing topic, a bad topology) is not retried: exit 2 at once.
Scaling out across hosts needs nothing more: start ``headwater run`` on another host with the
same ``application_id`` and Kafka's group protocol spreads the partitions.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

from headwater.config import Settings
from headwater.errors import StartupError
from headwater.streams.runtime.worker import Worker, WorkerOptions
from headwater.streams.topology import Topology

log = logging.getLogger("headwater.supervisor")

STOP_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 60.0
EXIT_FAILED = 1
EXIT_STARTUP = 2


class TopologyLoadError(StartupError):
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


def run_worker(
    reference: str, settings: Settings, options: WorkerOptions, reports: Any, checkpoints: Any
) -> None:
    """A worker process's main: load the topology, run it, stop cleanly on SIGTERM/SIGINT.

    ``reports`` (a queue) receives ``(worker_id, kind, cause)`` when the worker fails;
    ``checkpoints`` (a shared counter) counts the checkpoints it completed.
    """
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker-{options.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request
    worker: Worker | None = None
    stop_requested = False  # a stop signal before the worker exists: it stops at once

    def on_stop_signal(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if worker is not None:
            worker.stop()

    signal.signal(signal.SIGTERM, on_stop_signal)  # from the supervisor, or to the whole group
    signal.signal(signal.SIGINT, on_stop_signal)  # (systemd's default KillMode): both are fine
    try:
        worker = Worker(load_topology(reference), settings, options,
                        on_checkpoint=lambda: _increment(checkpoints))
        if stop_requested:
            worker.stop()
        try:
            worker.run()
        finally:  # done either way: a stop signal arriving now (interpreter shutdown resets the
            # handlers) must not turn the exit code into death by signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except StartupError as exc:
        reports.put((options.worker_id, "startup", exc.one_line()))
        log.error("worker-%d cannot start: %s", options.worker_id, exc.one_line())
        sys.exit(EXIT_STARTUP)
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit 1
        cause = getattr(exc, "__cause__", None) or exc
        reports.put((options.worker_id, "failed", f"{type(cause).__name__}: {cause}"))
        log.exception("worker-%d failed", options.worker_id)
        sys.exit(EXIT_FAILED)
    log.info("worker-%d done after %d record(s)", options.worker_id, worker.records_processed)


def _increment(counter: Any) -> None:
    with counter.get_lock():
        counter.value += 1


@dataclass
class _Slot:
    options: WorkerOptions
    checkpoints: Any
    process: mp.Process | None = None
    restarts: int = 0
    consecutive: int = 0
    checkpoints_at_failure: int = 0
    restart_at: float | None = None
    cause: str = ""
    finished: bool = False


def supervise(reference: str, settings: Settings, options: WorkerOptions) -> int:
    """Run ``settings.workers`` workers until they finish or a signal stops them; exit code.

    Returns:
        0 when every worker finished or a signal stopped them cleanly; 1 when a worker failed
        ``max_restarts`` times in a row, failed while stopping (its final checkpoint) or did
        not stop; 2 on a startup error.
    """
    load_topology(reference)  # fail fast, in the supervisor, on a bad reference
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    slots = [
        _Slot(replace(options, worker_id=options.worker_id + i), ctx.Value("q", 0))
        for i in range(settings.workers)
    ]
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def start(slot: _Slot) -> None:
        slot.restart_at = None
        slot.process = ctx.Process(
            target=run_worker, args=(reference, settings, slot.options, reports, slot.checkpoints),
            name=f"headwater-worker-{slot.options.worker_id}",
        )
        slot.process.start()

    by_id = {slot.options.worker_id: slot for slot in slots}
    for slot in slots:
        start(slot)
    exit_code = 0
    while not stopping and not all(s.finished for s in slots):
        startup = _drain(reports, by_id)
        if startup:
            log.error("stopping: %s", startup)
            exit_code = EXIT_STARTUP
            break
        now = time.monotonic()
        for slot in slots:
            proc = slot.process
            if slot.finished or proc is None:
                continue
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    start(slot)
                continue
            if proc.is_alive():
                continue
            if proc.exitcode == 0:
                slot.finished = True
                continue
            startup = _drain(reports, by_id)
            if startup or proc.exitcode == EXIT_STARTUP:
                log.error("stopping: %s", startup or slot.cause)
                exit_code = EXIT_STARTUP
                break
            if not _schedule_restart(slot, settings):
                exit_code = EXIT_FAILED
                break
        if exit_code:
            break
        time.sleep(0.2)
    stopped = _stop_all(slots)
    return exit_code or stopped


def _drain(reports: Any, by_id: dict[int, _Slot]) -> str | None:
    """Read failure reports into their slots; the cause of a startup error, if one came."""
    startup = None
    while True:
        try:
            worker_id, kind, cause = reports.get_nowait()
        except queue.Empty:
            return startup
        by_id[worker_id].cause = cause
        if kind == "startup":
            startup = f"worker-{worker_id}: {cause}"


def _schedule_restart(slot: _Slot, settings: Settings) -> bool:
    """Count the failure and schedule a restart; False when the worker should be given up."""
    assert slot.process is not None
    code = slot.process.exitcode
    cause = slot.cause or (f"killed by signal {-code}" if code and code < 0 else f"exit {code}")
    slot.cause = ""
    done = slot.checkpoints.value
    progressed = done > slot.checkpoints_at_failure
    slot.consecutive = 1 if progressed else slot.consecutive + 1
    slot.checkpoints_at_failure = done
    worker = f"worker-{slot.options.worker_id}"
    if slot.consecutive > settings.max_restarts:
        log.error("%s failed %d time(s) in a row without completing a checkpoint (the same input "
                  "positions each time); giving up (max_restarts=%d). Last cause: %s",
                  worker, slot.consecutive, settings.max_restarts, cause)
        return False
    backoff = backoff_s(slot.consecutive, settings)
    slot.restarts += 1
    log.warning("%s failed (%s); restart #%d in %.1fs (%d/%d in a row)", worker, cause,
                slot.restarts, backoff, slot.consecutive, settings.max_restarts)
    slot.restart_at = time.monotonic() + backoff
    return True


def backoff_s(consecutive: int, settings: Settings) -> float:
    """Delay before the restart after the ``consecutive``-th failure in a row."""
    return min(settings.restart_backoff_ms / 1000 * 2 ** (consecutive - 1), MAX_BACKOFF_S)


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
    failed = [p for p in live if p not in stubborn and p.exitcode != 0]
    for proc in failed:  # e.g. its final checkpoint failed: nothing after the last one committed
        log.error("worker %s failed while stopping (exit %s)", proc.name, proc.exitcode)
    return EXIT_FAILED if stubborn or failed else 0

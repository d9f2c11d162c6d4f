"""Run one engine as a subprocess (its own session) and watch it from outside.

The runner (``headwater run`` or a peer script) prints JSON lines on stdout; the harness keeps
the first ``{"event": "first_consumed", "t": <epoch s>}`` of any of its processes, and the
``{"event": "done", "t": <epoch s>}`` of runners that report their own end (engines that commit
no consumer-group offsets, e.g. Bytewax). A sampler
thread reads ``/proc`` every ``SAMPLE_S`` for every process of the session: CPU ticks
(utime + stime) and resident memory, so CPU can be taken over exactly the timed window and peak
RSS summed over worker processes. ``getrusage(RUSAGE_CHILDREN)`` deltas give the CPU of the whole
run, start-up included, as a cross-check.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

SAMPLE_S = 0.1
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class EngineProcess:
    """One engine run: start, sample, read its events, stop.

    Args:
        argv: the command.
        env: extra environment.
        log: file receiving the run's stderr (and non-JSON stdout lines).
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self._log = log.open("ab")
        self._rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.started = time.time()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
        )
        self.first_consumed: float | None = None
        self.done: float | None = None
        self.events: list[dict] = []
        self.peak_rss_bytes = 0
        self._cpu: deque[tuple[float, float]] = deque()  # (wall time, cpu seconds of the session)
        self._ticks: dict[int, int] = {}  # pid -> last ticks seen (exited processes keep theirs)
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]
        for t in self._threads:
            t.start()

    def alive(self) -> bool:
        """Whether the top process still runs."""
        return self.proc.poll() is None

    def finished_output(self, timeout: float = 5.0) -> bool:
        """After the process exited: wait until its stdout is read to the end; whether it was."""
        self._threads[0].join(timeout)
        return not self._threads[0].is_alive()

    def cpu_seconds_at(self, t: float) -> float:
        """CPU seconds the session had used at wall time ``t`` (the nearest sample at or before)."""
        best = 0.0
        for when, cpu in list(self._cpu):
            if when > t:
                break
            best = cpu
        return best

    def stop(self, timeout: float = 40.0) -> float:
        """SIGTERM the session, wait (SIGKILL after ``timeout``); the run's child CPU seconds."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._done.set()
        for t in self._threads:
            t.join(5)
        self._log.close()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - self._rusage.ru_utime) + (after.ru_stime - self._rusage.ru_stime)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            start = line.find(b'{"event"')
            if start > 0:  # e.g. a terminal control sequence (Faust's spinner) printed before it
                line = line[start:]
            if line.startswith(b"{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and "event" in event:
                    self.events.append(event)
                    if event["event"] == "first_consumed":
                        t = float(event["t"])
                        self.first_consumed = t if self.first_consumed is None else min(t, self.first_consumed)
                    elif event["event"] == "done":
                        self.done = float(event["t"])
                    continue
            self._log.write(raw)

    def _sample(self) -> None:
        sid = self.proc.pid
        while not self._done.is_set():
            rss = 0
            for pid, ticks, pages in _session_processes(sid):
                self._ticks[pid] = ticks
                rss += pages * _PAGE
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
            self._cpu.append((time.time(), sum(self._ticks.values()) / _TICK))
            if self.proc.poll() is not None:
                break
            self._done.wait(SAMPLE_S)


def _session_processes(sid: int) -> list[tuple[int, int, int]]:
    """(pid, utime + stime ticks, resident pages) of every live process in session ``sid``."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields[0] is field 3 (state): session is field 6, utime 14, stime 15, rss 24
        if int(fields[3]) != sid:
            continue
        out.append((int(entry.name), int(fields[11]) + int(fields[12]), int(fields[21])))
    return out

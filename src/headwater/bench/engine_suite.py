"""The engine suite: W0/W1/W2 run by headwater and peers as subprocesses on the real broker.

Per invocation: one input topic of generated ``order.created`` events keyed by userId is
pre-loaded (reused when a previous run left an identical one), and the expected results are
computed from it by the harness. Then, per (workload, engine, workers, guarantee): a fresh
consumer group and output topic, the engine started as a subprocess, timed from its first
consumed record to the moment the group's committed offsets reach the input's end offsets (for
engines that commit no group offsets, :data:`SELF_REPORTED_END`: the runner's own ``done``
event, printed once it has read the input to its end offsets and flushed its output), then
stopped; its output is read back and checked. Latency runs (workers=1, at-least-once, W1 and W2)
feed a fresh input topic at ``latency_fraction`` of the engine's measured throughput.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.admin import AdminClient

from headwater.bench import join_inputs, kafka_io, workloads
from headwater.bench.latency import measure
from headwater.bench.process import EngineProcess
from headwater.bench.progress import Progress
from headwater.bench.report import ResultRow

ROOT = Path(__file__).resolve().parents[3]
PEERS = ROOT / "benchmarks" / "peers"
ENGINES = ("headwater", "quixstreams", "faust", "bytewax", "pathway")
#: Peer scripts (benchmarks/peers/) and the Python package each needs.
PEER_SCRIPTS = {"confluent-kafka": "ceiling_w0.py", "quixstreams": "quix_peer.py",
                "faust": "faust_peer.py", "bytewax": "bytewax_peer.py", "pathway": "pathway_peer.py"}
PEER_MODULES = {"quixstreams": "quixstreams", "faust": "faust", "bytewax": "bytewax",
                "pathway": "pathway"}
#: The workloads each peer implements (headwater: all). W3s (session windows): Bytewax only;
#: Quix Streams' session windows have other rules (see docs/benchmarks.md) and Faust has none.
#: W4/W4t (joins): Quix Streams' ``join_interval`` / ``join_asof``.
PEER_WORKLOADS = {"quixstreams": {"W1", "W1j", "W2", "W3", "W3h", "W4", "W4t"}, "faust": {"W1", "W2"},
                  "bytewax": {"W1", "W2", "W3s"}, "pathway": {"W1j", "W2", "W3"}}
#: Peers that read only some input formats (Pathway reads Kafka as JSON, raw or plaintext).
PEER_INPUT_FORMATS = {"pathway": {"json"}}
#: Peers whose dependencies conflict with the project's: each runs under its own interpreter,
#: from the venv ``make <engine>-venv`` builds (``.venv-<engine>``), or the one named by
#: ``HEADWATER_<ENGINE>_PYTHON``.
OWN_VENV = frozenset({"pathway"})
#: Engines without latency runs (Pathway's runner reads its input in static mode, to its end).
NO_LATENCY = frozenset({"pathway"})
#: Engines whose output is an update stream (``diff`` +1/-1 per row): checked on its final state.
UPDATE_STREAM = frozenset({"pathway"})
#: Engines whose Kafka source commits no consumer-group offsets: the harness cannot watch the
#: group, so the runner stops at the input's end offsets and prints ``{"event": "done"}`` after
#: flushing its output (``BENCH_STOP_AT_END=1``); that instant ends the timed window. Pathway's
#: commits are librdkafka's auto-commit of consumed (not processed) positions: not an end.
SELF_REPORTED_END = frozenset({"bytewax", "pathway"})
#: Bytewax's snapshot (epoch) interval; its CLI takes whole seconds, so 1 s, not the 0.5 s commit
#: interval of the others.
BYTEWAX_SNAPSHOT_S = 1


@dataclass
class EngineSuiteConfig:
    """Sizes and knobs of one engine-suite run (recorded in the result file)."""

    events: int = 1_000_000
    workers: list[int] = field(default_factory=lambda: [1, 2])
    engines: list[str] = field(default_factory=lambda: ["headwater", "quixstreams"])
    workloads: list[str] = field(default_factory=lambda: list(workloads.DEFAULT_WORKLOADS))
    exactly_once: bool = True
    partitions: int = 4
    input_format: str = "avro"
    seed: int = 1
    users: int = 10_000
    invalid_fraction: float = 0.05
    commit_interval_s: float = 0.5
    batch_size: int = 10_000
    latency: bool = True
    latency_fraction: float = 0.5
    latency_seconds: float = 15.0
    latency_warmup_s: float = 3.0
    run_timeout_s: float = 1800.0  # a slow peer (Quix W3h: ~1,600-2,400 events/s) needs ~10 min

    @classmethod
    def quick(cls, **overrides: Any) -> EngineSuiteConfig:
        """Tiny sizes for the CI smoke run (about two minutes)."""
        base = dict(events=20_000, workers=[1], partitions=2, latency_seconds=4.0,
                    latency_warmup_s=1.0, run_timeout_s=180.0)
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class RunSpec:
    """One measured configuration."""

    workload: str
    engine: str
    workers: int
    guarantee: str = "at-least-once"

    @property
    def label(self) -> str:
        eos = " EOS" if self.guarantee == "exactly-once" else ""
        return f"{self.workload} {self.engine} x{self.workers}{eos}"


def plan(cfg: EngineSuiteConfig) -> list[RunSpec]:
    """Every run of the suite, headwater first within each workload (peers are checked against it)."""
    runs: list[RunSpec] = []
    for workload in cfg.workloads:
        engines = ["confluent-kafka"] if workload == "W0" else [
            e for e in cfg.engines if workload in PEER_WORKLOADS.get(e, workloads.WORKLOADS)
            and cfg.input_format in PEER_INPUT_FORMATS.get(e, {cfg.input_format})]
        for engine in engines:
            for workers in cfg.workers:
                runs.append(RunSpec(workload, engine, workers))
                if cfg.exactly_once and engine == "headwater" and workload == "W2":
                    runs.append(RunSpec(workload, engine, workers, "exactly-once"))
    return runs


def peer_python(engine: str) -> Path:
    """The interpreter a peer runs under: the project's own, or for :data:`OWN_VENV` peers
    ``HEADWATER_<ENGINE>_PYTHON`` or ``.venv-<engine>/bin/python`` at the repository root."""
    if engine not in OWN_VENV:
        return Path(sys.executable)
    named = os.environ.get(f"HEADWATER_{engine.upper()}_PYTHON")
    return Path(named) if named else ROOT / f".venv-{engine}" / "bin" / "python"


def available_engines(requested: list[str], input_format: str = "avro") -> tuple[list[str], dict[str, str]]:
    """The requested engines that can run here, and why the others cannot."""
    ok, skipped = [], {}
    for engine in requested:
        module = PEER_MODULES.get(engine)
        formats = PEER_INPUT_FORMATS.get(engine, {input_format})
        if engine not in ENGINES:
            skipped[engine] = "unknown engine"
        elif engine in PEER_SCRIPTS and not (PEERS / PEER_SCRIPTS[engine]).exists():
            skipped[engine] = "no peer implementation in benchmarks/peers"
        elif input_format not in formats:
            skipped[engine] = (f"reads {'/'.join(sorted(formats))} input only "
                               f"(run with --input-format {min(formats)})")
        elif engine in OWN_VENV:
            why = _own_venv_problem(engine, module or engine)
            if why:
                skipped[engine] = why
            else:
                ok.append(engine)
        elif module and find_spec(module) is None:
            skipped[engine] = f"python package {module!r} is not installed"
        else:
            ok.append(engine)
    return ok, skipped


def _own_venv_problem(engine: str, module: str) -> str | None:
    """Why ``engine``'s own interpreter cannot run it (None when it can import ``module``)."""
    python = peer_python(engine)
    hint = f"make {engine}-venv, or set HEADWATER_{engine.upper()}_PYTHON"
    if not python.exists():
        return f"its venv is missing: no {python} ({hint})"
    try:
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                               text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} did not run: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import {module!r}: {last} ({hint})"
    return None


class EngineSuite:
    """Runs the plan; ``run()`` returns result rows (see :class:`~headwater.bench.report.ResultRow`)."""

    def __init__(self, cfg: EngineSuiteConfig, kafka: dict[str, Any], registry_url: str,
                 logs: Path, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.kafka = kafka
        self.registry_url = registry_url
        self.logs = logs
        self.progress = progress or Progress()
        self.admin = AdminClient(kafka)
        self.run_id = uuid.uuid4().hex[:8]
        self.state_root = Path(tempfile.mkdtemp(prefix="hw-bench-"))
        self.input = f"bench.orders.{cfg.input_format}.s{cfg.seed}.u{cfg.users}.n{cfg.events}.p{cfg.partitions}"
        #: the shared orders input is needed by every workload but the joins (which have their own)
        self.needs_orders = any(w not in workloads.JOINS for w in cfg.workloads)
        self.codec = (kafka_io.InputCodec.for_topic(cfg.input_format, self.input, registry_url)
                      if self.needs_orders else kafka_io.InputCodec(cfg.input_format))
        self.joins = join_inputs.join_inputs(cfg.workloads, cfg.input_format, cfg.seed, cfg.users,
                                             cfg.events, cfg.partitions)
        self.join_expected: dict[str, workloads.JoinExpected] = {}
        self.expected: workloads.Expected | None = None
        self.records: list[tuple[bytes, bytes, bytes]] = []
        self.w1_reader = fastavro.parse_schema(workloads.W1_SCHEMA)

    # --- setup ------------------------------------------------------------------------------

    def prepare_input(self) -> None:
        """Pre-load the input topics once (reused when complete) and compute the expected results."""
        if self.joins:
            self.prepare_join_inputs()
        if not self.needs_orders:
            self.expected = workloads.Expected()
            return
        cfg = self.cfg
        kafka_io.create_topics(self.kafka, [self.input], cfg.partitions, {"retention.ms": "-1"})
        have = sum(kafka_io.end_offsets(self.kafka, self.input).values())
        if have != cfg.events:
            if have:
                raise RuntimeError(f"{self.input} holds {have} records, not {cfg.events}: delete it")
            t0 = time.monotonic()
            kafka_io.preload(self.kafka, self.input, self.codec, cfg.events, cfg.seed, cfg.users,
                             cfg.invalid_fraction,
                             lambda n: self.progress.update(f"pre-loading {self.input}: {n:,}/{cfg.events:,}"))
            self.progress.done(f"pre-loaded {cfg.events:,} events into {self.input} "
                               f"in {time.monotonic() - t0:.1f} s (not timed)")
        else:
            self.progress.done(f"reusing {self.input} ({have:,} events)")
        decode, expected = self.codec.decoder(), workloads.Expected()
        for partition, key, value in kafka_io.read_partitions(self.kafka, self.input):
            event = decode(value)
            expected.add(key.decode(), event, partition)
            self.records.append((key, value, str(event["eventId"]).encode()))
        expected.finish()
        self.expected = expected

    def prepare_join_inputs(self) -> None:
        """The join workloads' topics (one generator pass for all; reused when complete) and
        their expected outputs."""
        cfg = self.cfg
        for line in join_inputs.prepare(self.kafka, self.registry_url, self.joins, cfg.input_format,
                                        cfg.seed, cfg.users, cfg.invalid_fraction, cfg.events,
                                        cfg.partitions, self.progress.update):
            self.progress.done(line)
        for w, inp in self.joins.items():
            expected = join_inputs.expected(self.kafka, inp, cfg.input_format)
            self.join_expected[w] = expected
            extra = (f"; {expected.asof_differs:,} orders whose as-of profile differs from the "
                     "latest" if w == "W4t" else "")
            self.progress.done(f"{w} expects {sum(expected.rows.values()):,} rows from "
                               f"{expected.left:,} + {expected.right:,} input records{extra}")

    # --- runs -------------------------------------------------------------------------------

    def run(self, on_row: Callable[[ResultRow], None] | None = None) -> list[ResultRow]:
        """Prepare the input, then measure every planned run (and the latency runs)."""
        self.prepare_input()
        rows: list[ResultRow] = []
        runs = plan(self.cfg)
        for i, spec in enumerate(runs, 1):
            row = self.throughput(spec, f"[{i}/{len(runs)}]")
            rows.append(row)
            if on_row:
                on_row(row)
        if self.cfg.latency:
            for row in list(rows):
                if row.workload in ("W1", "W2") and row.workers == 1 and row.guarantee == "at-least-once" \
                        and row.events_per_s and row.engine not in NO_LATENCY:
                    self.latency(row)
                    if on_row:
                        on_row(row)
        shutil.rmtree(self.state_root, ignore_errors=True)
        return rows

    def throughput(self, spec: RunSpec, tag: str) -> ResultRow:
        """One timed run over the whole pre-loaded input."""
        assert self.expected is not None
        name = f"{spec.workload}-{spec.engine}-{spec.workers}-{spec.guarantee}-{self.run_id}".lower()
        group, output = f"bench-{name}", f"bench.out.{name}"
        if spec.workload != "W0":  # outputs may carry the (old) input's timestamps: no retention
            kafka_io.create_topics(self.kafka, [output], self.cfg.partitions, {"retention.ms": "-1"})
        join = self.joins.get(spec.workload)
        inputs = list(join.topics) if join else [self.input]
        timed = join.timed if join else [self.input]
        offsets = {t: kafka_io.end_offsets(self.kafka, t) for t in inputs}
        ends = {t: offsets[t] for t in timed}
        total = sum(sum(o.values()) for o in offsets.values())
        procs = self._start(spec, group, inputs[0], output, stop_at_end=True,
                            topic_in2=inputs[1] if join else None)
        row = ResultRow("engine", spec.workload, spec.engine, spec.workers, total, None,
                        guarantee=spec.guarantee)
        try:
            if spec.engine in SELF_REPORTED_END:
                t_end = self._wait_done(procs, f"{tag} {spec.label}")
            else:
                t_end = self._wait_committed(procs, group, ends, f"{tag} {spec.label}")
        finally:
            child_cpu = sum(p.stop() for p in procs)
        t_first = min((p.first_consumed for p in procs if p.first_consumed), default=None)
        if t_end is None or t_first is None:
            exits = sorted({p.proc.returncode for p in procs if p.proc.returncode not in (None, 0, -15)})
            why = (f"exited with code {', '.join(map(str, exits))}" if exits
                   else f"did not finish within {self.cfg.run_timeout_s:.0f} s")
            row.notes = f"{why}; see {self.logs}"
            self.progress.done(f"{tag} {spec.label}: FAILED ({row.notes})")
            return row
        window = max(t_end - t_first, 1e-6)
        cpu = sum(p.cpu_seconds_at(t_end) - p.cpu_seconds_at(t_first) for p in procs)
        row.seconds = round(window, 3)
        row.events_per_s = total / window
        row.cpu_s_per_million = cpu / total * 1e6
        row.peak_rss_mb = sum(p.peak_rss_bytes for p in procs) / 2**20
        decoder = next((e["name"] for p in procs for e in p.events if e["event"] == "decoder"), None)
        notes = [f"cpu incl. start-up {child_cpu:.1f} s"] + ([f"decoder: {decoder}"] if decoder else [])
        if spec.workload != "W0":
            row.agrees, why = self._check(spec.workload, output, spec.engine)
            if why:
                notes.append(why)
        row.notes = "; ".join(notes)
        self.progress.done(f"{tag} {spec.label}: {total:,} events in {window:.2f} s = "
                           f"{row.events_per_s:,.0f} events/s, cpu {row.cpu_s_per_million:.1f} s/M, "
                           f"rss {row.peak_rss_mb:.0f} MB, agrees={row.agrees}")
        return row

    def latency(self, row: ResultRow) -> None:
        """Latency percentiles for ``row``'s engine and workload at a fraction of its throughput."""
        assert row.events_per_s
        spec = RunSpec(row.workload, row.engine, 1)
        name = f"lat-{spec.workload}-{spec.engine}-{self.run_id}".lower()
        group, topic_in, topic_out = f"bench-{name}", f"bench.in.{name}", f"bench.out.{name}"
        kafka_io.create_topics(self.kafka, [topic_in, topic_out], self.cfg.partitions)
        if self.cfg.input_format == "avro":
            kafka_io.InputCodec.for_topic("avro", topic_in, self.registry_url)
        rate = row.events_per_s * self.cfg.latency_fraction
        procs = self._start(spec, group, topic_in, topic_out)
        try:
            ready = (self._wait_ready(procs) if spec.engine in SELF_REPORTED_END
                     else self._wait_assigned(group, procs))
            if not ready:
                row.notes += "; latency: the engine did not join its group / report ready"
                return
            self.progress.update(f"latency {spec.label}: producing at {rate:,.0f} events/s", force=True)
            result = measure(self.kafka, spec.workload, topic_in, topic_out, self.records, rate,
                             self.cfg.latency_seconds + self.cfg.latency_warmup_s, self.cfg.latency_warmup_s)
        finally:
            for p in procs:
                p.stop()
        row.p50_ms, row.p95_ms, row.p99_ms = result.p50_ms, result.p95_ms, result.p99_ms
        row.notes += (f"; latency at {result.rate:,.0f} events/s ({self.cfg.latency_fraction:.0%} of max), "
                      f"{result.samples:,} samples")
        self.progress.done(f"latency {spec.label}: {result.rate:,.0f} events/s, p50 {_ms(result.p50_ms)}, "
                           f"p95 {_ms(result.p95_ms)}, p99 {_ms(result.p99_ms)} ({result.samples:,} samples)")

    # --- helpers ----------------------------------------------------------------------------

    def _start(self, spec: RunSpec, group: str, topic_in: str, topic_out: str,
               stop_at_end: bool = False, topic_in2: str | None = None) -> list[EngineProcess]:
        state = self.state_root / group
        env = {
            "BENCH_BOOTSTRAP": self.kafka["bootstrap.servers"], "BENCH_REGISTRY": self.registry_url,
            "BENCH_INPUT": topic_in, "BENCH_OUTPUT": topic_out, "BENCH_GROUP": group,
            "BENCH_FORMAT": self.cfg.input_format, "BENCH_GUARANTEE": spec.guarantee,
            "BENCH_COMMIT_INTERVAL_S": str(self.cfg.commit_interval_s),
            "BENCH_BATCH_SIZE": str(self.cfg.batch_size), "BENCH_STATE_DIR": str(state),
            "HEADWATER_KAFKA_BOOTSTRAP": self.kafka["bootstrap.servers"],
            "HEADWATER_SCHEMA_REGISTRY_URL": self.registry_url,
        }
        if topic_in2:  # a join workload's right side (payments, users)
            env["BENCH_INPUT2"] = topic_in2
        if stop_at_end and spec.engine in SELF_REPORTED_END:
            env["BENCH_STOP_AT_END"] = "1"
        log = self.logs / f"{group}.log"
        py = sys.executable
        if spec.engine == "headwater":
            argv = [py, "-m", "headwater", "run",
                    f"benchmarks.peers.headwater_topologies:{spec.workload.lower()}",
                    "--workers", str(spec.workers), "--guarantee", spec.guarantee,
                    "--application-id", group, "--state-dir", str(state),
                    "--commit-interval-ms", str(int(self.cfg.commit_interval_s * 1000)),
                    "--batch-size", str(self.cfg.batch_size)]
            return [EngineProcess(argv, env, log, ROOT)]
        script = PEER_SCRIPTS[spec.engine]
        if spec.engine == "pathway":
            # one process; Pathway's workers are threads of it (PATHWAY_THREADS); static-mode
            # source, so it always ends by itself (see pathway_peer.py)
            window = workloads.WINDOWED.get(spec.workload)
            extra = {"PATHWAY_THREADS": str(spec.workers), "PATHWAY_PROCESSES": "1"}
            if window:
                extra |= {"BENCH_WINDOW_SIZE_MS": str(window.size_ms),
                          "BENCH_WINDOW_GRACE_MS": str(window.grace_ms)}
            argv = [str(peer_python("pathway")), str(PEERS / script), spec.workload]
            return [EngineProcess(argv, {**env, **extra}, log, ROOT)]
        if spec.engine == "bytewax":
            # one bytewax.run process per worker, forming one cluster (-i/-a); 1 worker: plain run
            # with its recovery store (SQLite snapshots of source offsets and state every
            # BYTEWAX_SNAPSHOT_S, its counterpart of committing), initialised first
            recovery = state / "bytewax-recovery"
            if not recovery.exists():
                recovery.mkdir(parents=True)
                subprocess.run([py, "-m", "bytewax.recovery", str(recovery), "1"], check=True,
                               capture_output=True, cwd=ROOT)
            base = [py, "-m", "bytewax.run", f"{PEERS / script}:flow({spec.workload!r})",
                    "-r", str(recovery), "-s", str(BYTEWAX_SNAPSHOT_S), "-b", "0"]
            if spec.workers == 1:
                return [EngineProcess(base, env, log, ROOT)]
            addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(spec.workers))
            return [EngineProcess([*base, "-i", str(i), "-a", addresses],
                                  {**env, "BENCH_WORKER": str(i)}, log, ROOT)
                    for i in range(spec.workers)]
        argv = [py, str(PEERS / script), spec.workload]
        return [EngineProcess(argv, {**env, "BENCH_WORKER": str(i)}, log, ROOT)
                for i in range(spec.workers)]

    def _wait_committed(self, procs: list[EngineProcess], group: str,
                        ends: dict[str, dict[int, int]], label: str) -> float | None:
        """The instant the group's committed offsets reach ``ends`` (per topic and partition)."""
        total = sum(sum(e.values()) for e in ends.values())
        deadline = time.monotonic() + self.cfg.run_timeout_s
        started = time.time()
        while time.monotonic() < deadline:
            if not any(p.alive() for p in procs):
                return None
            n = 0
            for topic, topic_ends in ends.items():
                try:
                    done = kafka_io.committed(self.admin, group, topic, list(topic_ends))
                except Exception:  # noqa: BLE001 - the group may not exist yet
                    done = {}
                n += sum(max(0, min(done.get(p, -1), end)) for p, end in topic_ends.items())
            now = time.time()
            if n >= total:
                return now
            first = min((p.first_consumed for p in procs if p.first_consumed), default=None)
            rate = n / (now - first) if first and now > first else 0.0
            self.progress.update(f"{label}: {n:,}/{total:,} committed, {rate:,.0f} events/s, "
                                 f"{now - started:.0f} s")
            time.sleep(0.05)
        return None

    def _wait_done(self, procs: list[EngineProcess], label: str) -> float | None:
        """The end instant of a self-reporting runner: the latest ``done`` of its processes, once
        every process has exited with code 0 after printing it (None on failure or timeout)."""
        deadline = time.monotonic() + self.cfg.run_timeout_s
        started = time.time()
        while time.monotonic() < deadline:
            if all(not p.alive() for p in procs):
                for p in procs:
                    p.finished_output()
                if all(p.done is not None and p.proc.returncode == 0 for p in procs):
                    return max(p.done for p in procs if p.done is not None)
                return None
            first = min((p.first_consumed for p in procs if p.first_consumed), default=None)
            running = f"running {time.time() - first:.0f} s" if first else "starting"
            self.progress.update(f"{label}: {running} (ends when the runner reports done), "
                                 f"{time.time() - started:.0f} s")
            time.sleep(0.05)
        return None

    def _wait_ready(self, procs: list[EngineProcess], timeout: float = 60.0, settle_s: float = 2.0) -> bool:
        """For engines without a consumer group: wait for every process's ``ready`` event (its
        dataflow is built), then ``settle_s`` for its source to connect (it reads the fresh input
        topic from the beginning, so nothing produced meanwhile is missed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.alive() for p in procs):
            if all(any(e["event"] == "ready" for e in p.events) for p in procs):
                time.sleep(settle_s)
                return True
            time.sleep(0.1)
        return False

    def _wait_assigned(self, group: str, procs: list[EngineProcess], timeout: float = 60.0) -> bool:
        from confluent_kafka import ConsumerGroupState

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.alive() for p in procs):
            try:
                desc = self.admin.describe_consumer_groups([group])[group].result(10)
                if desc.state == ConsumerGroupState.STABLE and any(
                        m.assignment.topic_partitions for m in desc.members):
                    time.sleep(1.0)  # let the members fetch and restore before the clock starts
                    return True
            except Exception:  # noqa: BLE001 - not created yet
                pass
            time.sleep(0.2)
        return False

    def _check(self, workload: str, output: str, engine: str = "headwater") -> tuple[bool, str]:
        assert self.expected is not None
        if workload in workloads.JOINS:
            view = workloads.join_view(workload, kafka_io.read_topic(self.kafka, output))
            return workloads.check_join(view, self.join_expected[workload])
        if workload in workloads.SESSIONS:  # every engine's output in headwater's convention
            view = workloads.session_view(kafka_io.read_topic(self.kafka, output))
            return workloads.check_sessions(workload, view, self.expected)
        records = kafka_io.read_topic(self.kafka, output)
        if engine in UPDATE_STREAM:
            records = workloads.final_state(records)
        if workload == "W1j":
            view = workloads.w1_json_view(records)
        elif workload == "W1":
            import io

            view = workloads.w1_view(fastavro.schemaless_reader(io.BytesIO(v[5:]), self.w1_reader, None)
                                     for _, v in records if v)
        elif workload in workloads.WINDOWED:
            view = workloads.window_view(records)
        else:
            view = workloads.w2_view(records)
        # Pathway's static-mode runs close every window when the input ends (pathway_peer.py)
        return workloads.check(workload, view, self.expected, windows_at_end=engine == "pathway")

    def config_json(self) -> dict[str, Any]:
        """The configuration as recorded in the result file."""
        out = {**asdict(self.cfg), "input_topic": self.input if self.needs_orders else None}
        if self.joins:
            out["join_input_topics"] = {w: list(inp.topics) for w, inp in self.joins.items()}
        return out


def _free_ports(n: int) -> list[int]:
    """``n`` currently free local TCP ports (for a Bytewax cluster's worker addresses)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"

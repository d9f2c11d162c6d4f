"""Result rows and the files a run writes: JSON, a Markdown table, charts, ``LATEST.md``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass
class ResultRow:
    """One measured configuration.

    Attributes:
        suite: ``serde`` or ``engine``.
        workload: e.g. ``W1`` or ``decode@10000``.
        engine: e.g. ``headwater``, ``quixstreams``, ``confluent-kafka``.
        workers: processes (engine suite) or 1 (in-process serde suite).
        events: events processed (input events for engine runs).
        events_per_s: events / seconds from the first record consumed to the last committed.
        p50_ms, p95_ms, p99_ms: end-to-end latency percentiles (None when not measured).
        cpu_s_per_million: CPU seconds (user + system, all processes of the run, during the timed
            window) per million events.
        peak_rss_mb: peak resident memory of the run (sum over its processes).
        agrees: output checked against headwater's and the expected result (None: not checked).
        guarantee: ``at-least-once`` or ``exactly-once`` (engine runs).
        seconds: the timed window.
        notes: anything needed to read the row (decoder used, why a value is missing).
    """

    suite: str
    workload: str
    engine: str
    workers: int
    events: int
    events_per_s: float | None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    cpu_s_per_million: float | None = None
    peak_rss_mb: float | None = None
    agrees: bool | None = None
    guarantee: str | None = None
    seconds: float | None = None
    notes: str = ""


@dataclass
class BenchReport:
    """Everything one ``headwater bench`` invocation measured."""

    suite: str
    command: str
    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: str = field(default_factory=lambda: utc_now().isoformat(timespec="seconds"))
    results: list[ResultRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to the result file."""
        return {
            "suite": self.suite, "started_at": self.started_at, "command": self.command,
            "machine": self.machine, "config": self.config, "skipped": self.skipped,
            "results": [asdict(r) for r in self.results],
        }

    def write(self, path: Path, latest: Path | None = None) -> list[Path]:
        """Write ``path`` (JSON), ``path.md``, the charts, and optionally ``latest``; the files."""
        from headwater.bench.charts import write_charts

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        charts = write_charts(self, path.with_suffix(""))
        markdown = path.with_suffix(".md")
        markdown.write_text(self.markdown([c.name for c in charts]))
        written = [path, markdown, *charts]
        if latest is not None:
            rel = [Path(_relative(c, latest.parent)) for c in charts]
            latest.write_text(self.markdown([str(r) for r in rel], source=_relative(path, latest.parent)))
            written.append(latest)
        return written

    def markdown(self, charts: list[str] | None = None, source: str | None = None) -> str:
        """A readable summary: when, where, the command, the table, the charts."""
        m = self.machine
        lines = [
            f"# headwater bench {self.suite}: {self.started_at}",
            "",
            f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GiB, "
            f"{m.get('os')}, Python {m.get('python')}",
            f"- commit: `{m.get('git_commit')}`",
            f"- command: `{self.command}`",
        ]
        if source:
            lines.append(f"- raw results: [{Path(source).name}]({source})")
        lines += ["", table(self.results), ""]
        lines += ratio_lines(self.results)
        for what, why in self.skipped.items():
            lines.append(f"- not run: **{what}**: {why}")
        for chart in charts or []:
            lines += ["", f"![{Path(chart).stem}]({chart})"]
        return "\n".join(lines) + "\n"


COLUMNS = ("workload", "engine", "workers", "guarantee", "events", "events_per_s", "p50_ms",
           "p95_ms", "p99_ms", "cpu_s_per_million", "peak_rss_mb", "agrees")


def table(rows: list[ResultRow]) -> str:
    """The rows as a Markdown table."""
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(getattr(r, c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def ratio_lines(rows: list[ResultRow]) -> list[str]:
    """headwater / peer throughput ratios per workload and workers, and the exactly-once cost."""
    out: list[str] = []
    key = {(r.workload, r.engine, r.workers, r.guarantee): r for r in rows if r.events_per_s}
    for (workload, engine, workers, guarantee), row in sorted(key.items(), key=str):
        if engine == "headwater" or guarantee == "exactly-once" or not row.events_per_s:
            continue
        ours = key.get((workload, "headwater", workers, guarantee))
        if ours and ours.events_per_s:
            out.append(f"- {workload}, {workers} worker(s): headwater / {engine} = "
                       f"**{ours.events_per_s / row.events_per_s:.1f}x**")
    for (workload, engine, workers, guarantee), row in sorted(key.items(), key=str):
        if engine == "headwater" and guarantee == "exactly-once":
            alos = key.get((workload, engine, workers, "at-least-once"))
            if alos and alos.events_per_s and row.events_per_s:
                cost = 1 - row.events_per_s / alos.events_per_s
                out.append(f"- {workload}, {workers} worker(s): exactly-once costs "
                           f"**{cost:.0%}** of at-least-once throughput")
    return out + ([""] if out else [])


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(timezone.utc)


def default_path(results_dir: Path, suite: str) -> Path:
    """``<results_dir>/<suite>-<UTC timestamp>.json``."""
    return results_dir / f"{suite}-{utc_now().strftime('%Y%m%dT%H%M%SZ')}.json"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())

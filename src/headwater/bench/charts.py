"""PNG charts of a report: throughput per workload, engines side by side; latency percentiles.

Read at a glance: one panel per workload (at most three per row) titled with what the workload
does, one colour per engine throughout (exactly-once bars hatched), axis units, the value on every
bar, and for each peer its ratio to headwater with the same workers and guarantee.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headwater.bench.report import BenchReport, ResultRow

ENGINE_COLORS = {"headwater": "#1f77b4", "quixstreams": "#ff7f0e", "faust": "#2ca02c",
                 "bytewax": "#9467bd", "pathway": "#d62728", "confluent-kafka": "#7f7f7f"}
PERCENTILE_COLORS = {"p50": "#9ecae1", "p95": "#4292c6", "p99": "#08519c"}


def write_charts(report: BenchReport, stem: Path) -> list[Path]:
    """``<stem>-throughput.png`` and (when latencies were measured) ``<stem>-latency.png``.

    Returns the files written; none when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    rows = [r for r in report.results if r.events_per_s]
    if rows:
        path = stem.with_name(stem.name + "-throughput.png")
        _throughput(plt, rows, f"headwater bench {report.suite}: throughput (higher is better)",
                    path)
        written.append(path)
    lat = [r for r in report.results if r.p50_ms is not None]
    if lat:
        path = stem.with_name(stem.name + "-latency.png")
        _latency(plt, lat, f"headwater bench {report.suite}: end-to-end latency (lower is better)",
                 path)
        written.append(path)
    return written


def _color(engine: str) -> str:
    base = "headwater" if engine.startswith("headwater") else (
        "confluent-kafka" if engine.startswith("confluent") else engine)
    return ENGINE_COLORS.get(base, "#bcbd22")


def _label(row: ResultRow) -> str:
    label = f"{row.engine}\n{row.workers} worker{'s' if row.workers > 1 else ''}"
    return label + "\nexactly-once" if row.guarantee == "exactly-once" else label


def _title(workload: str) -> str:
    from headwater.bench.workloads import WORKLOAD_TITLES

    what = WORKLOAD_TITLES.get(workload)
    op, _, batch = workload.partition("@")
    if batch.isdigit():  # the serde suite
        return f"Avro {op}, batches of {int(batch):,} records (one core)"
    return textwrap.fill(f"{workload}: {what}" if what else workload, 46)


def _grid(plt: Any, groups: dict[str, list], height: float) -> tuple[Any, list]:
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    widest = max(len(m) for m in groups.values())
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 0.95 * widest + 1.6) * cols,
                                                  height * rows), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[len(groups):]:
        ax.set_visible(False)
    return fig, flat


def _by_workload(rows: list[ResultRow]) -> dict[str, list[ResultRow]]:
    groups: dict[str, list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[row.workload].append(row)
    return groups


def _ratio(row: ResultRow, members: list[ResultRow]) -> str:
    ours = next((r for r in members if r.engine == "headwater" and r.workers == row.workers
                 and r.guarantee == row.guarantee), None)
    if row.engine == "headwater" or ours is None or not row.events_per_s:
        return ""
    return f"\n(headwater {ours.events_per_s / row.events_per_s:.1f}x)"


def _throughput(plt: Any, rows: list[ResultRow], title: str, path: Path) -> None:
    groups = _by_workload(rows)
    fig, axes = _grid(plt, groups, 4.6)
    for ax, (workload, members) in zip(axes, groups.items()):
        ys = [r.events_per_s / 1000 for r in members]
        bars = ax.bar(range(len(members)), ys,
                      color=[_color(r.engine) for r in members],
                      hatch=[("//" if r.guarantee == "exactly-once" else "") for r in members],
                      edgecolor="white")
        ax.bar_label(bars, labels=[f"{y:,.0f}k{_ratio(r, members)}" for y, r in zip(ys, members)],
                     fontsize=8, padding=2)
        ax.set_ylim(0, max(ys) * 1.25)
        _axis(ax, workload, members, "events per second (thousands)")
    _save(plt, fig, title, path)


def _latency(plt: Any, rows: list[ResultRow], title: str, path: Path) -> None:
    groups = _by_workload(rows)
    fig, axes = _grid(plt, groups, 4.6)
    series = ("p50", "p95", "p99")
    width = 0.8 / len(series)
    for ax, (workload, members) in zip(axes, groups.items()):
        for i, name in enumerate(series):
            ys = [getattr(r, f"{name}_ms") or 0 for r in members]
            xs = [x + (i - 1) * width for x in range(len(members))]
            bars = ax.bar(xs, ys, width, label=name, color=PERCENTILE_COLORS[name])
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.legend(fontsize=8, title="percentile", title_fontsize=8)
        _axis(ax, workload, members, "milliseconds")
    _save(plt, fig, title, path)


def _axis(ax: Any, workload: str, members: list[ResultRow], unit: str) -> None:
    ax.set_xticks(range(len(members)), [_label(r) for r in members], fontsize=8)
    ax.set_ylabel(unit, fontsize=9)
    ax.set_title(_title(workload), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _save(plt: Any, fig: Any, title: str, path: Path) -> None:
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""PNG charts of a report: throughput per workload per engine; latency percentiles."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headwater.bench.report import BenchReport, ResultRow


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
        _bars(plt, rows, lambda r: [r.events_per_s / 1000], ["events/s (thousands)"],
              f"headwater bench {report.suite}: throughput", path)
        written.append(path)
    lat = [r for r in report.results if r.p50_ms is not None]
    if lat:
        path = stem.with_name(stem.name + "-latency.png")
        _bars(plt, lat, lambda r: [r.p50_ms, r.p95_ms, r.p99_ms], ["p50", "p95", "p99"],
              f"headwater bench {report.suite}: end-to-end latency (ms)", path)
        written.append(path)
    return written


def _label(row: ResultRow) -> str:
    label = f"{row.engine} x{row.workers}"
    return label + " EOS" if row.guarantee == "exactly-once" else label


def _bars(plt, rows, values, series: list[str], title: str, path: Path) -> None:  # noqa: ANN001
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[row.workload].append(row)
    fig, axes = plt.subplots(1, len(groups), figsize=(max(6, 4.5 * len(groups)), 4.5), squeeze=False)
    for ax, (workload, members) in zip(axes[0], groups.items()):
        labels = [_label(r) for r in members]
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            ys = [values(r)[i] or 0 for r in members]
            xs = [x + i * width for x in range(len(members))]
            bars = ax.bar(xs, ys, width, label=name)
            if len(series) == 1:
                ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(members))])
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(workload, fontsize=9)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

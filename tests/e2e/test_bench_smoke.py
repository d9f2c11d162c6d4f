"""`headwater bench engine --quick` end to end: the suite runs, writes its JSON with the required
fields, and every engine's output agrees with the expected results. No timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"suite", "workload", "engine", "workers", "events", "events_per_s", "p50_ms", "p99_ms",
            "cpu_s_per_million", "peak_rss_mb", "agrees"}


def test_quick_engine_suite_runs_and_results_agree(kafka_bootstrap: str, schema_registry_url: str,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    env = {**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url}
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "bench", "engine", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and report["command"].startswith("headwater bench engine")
    rows = report["results"]
    assert {(r["workload"], r["engine"]) for r in rows} >= {
        ("W0", "confluent-kafka"), ("W1", "headwater"), ("W1", "quixstreams"),
        ("W2", "headwater"), ("W2", "quixstreams"), ("W3", "headwater"), ("W3", "quixstreams"),
        ("W3h", "headwater"), ("W3h", "quixstreams")}
    for row in rows:
        assert REQUIRED <= set(row), row
        assert row["events"] > 0 and row["events_per_s"], row
        if row["workload"] != "W0":
            assert row["agrees"] is True, row
    assert out.with_suffix(".md").exists()


def test_quick_opt_in_peers_run_or_are_skipped_with_a_reason(kafka_bootstrap: str, schema_registry_url: str,
                                                             tmp_path: Path) -> None:
    """Faust and Bytewax (opt-in peers): each either produces agreeing W1/W2 rows or is listed in
    ``skipped`` with a reason; Bytewax's runs end on its own ``done`` event (no group offsets)."""
    out = tmp_path / "peers.json"
    env = {**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url}
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "bench", "engine", "--quick", "--engines", "faust,bytewax",
         "--workloads", "W1,W2", "--no-latency", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    rows = report["results"]
    for engine in ("faust", "bytewax"):
        mine = [r for r in rows if r["engine"] == engine]
        if engine in report["skipped"]:
            assert report["skipped"][engine] and not mine
            continue
        assert {r["workload"] for r in mine} == {"W1", "W2"}, mine
        for row in mine:
            assert REQUIRED <= set(row), row
            assert row["events_per_s"] and row["agrees"] is True, row


def test_quick_pathway_peer_agrees_on_json_input(kafka_bootstrap: str, schema_registry_url: str,
                                                 tmp_path: Path) -> None:
    """Pathway (opt-in, its own venv, which the test builds with ``make pathway-venv``): W1j, W2
    and W3 on JSON input agree with the expected results (its update stream read as a final
    state). Without the venv the command names the reason and exits 2 (unit-tested)."""
    subprocess.run(["make", "pathway-venv"], cwd=ROOT, check=True, timeout=1500,
                   capture_output=True)
    out = tmp_path / "pathway.json"
    env = {**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url}
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "bench", "engine", "--quick", "--engines", "pathway",
         "--input-format", "json", "--workloads", "W1j,W2,W3", "--no-latency", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())["results"]
    assert {r["workload"] for r in rows} == {"W1j", "W2", "W3"}, rows
    for row in rows:
        assert row["engine"] == "pathway" and row["events_per_s"] and row["agrees"] is True, row


def test_quick_join_workloads_agree_between_headwater_and_quix(kafka_bootstrap: str,
                                                               schema_registry_url: str,
                                                               tmp_path: Path) -> None:
    """W4 (interval join) and W4t (stream-table join), opt-in: both engines' outputs equal the
    harness's rows (same checksum in the notes); the inputs are the workloads' own topics."""
    out = tmp_path / "joins.json"
    env = {**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url}
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "bench", "engine", "--quick", "--workloads", "W4,W4t",
         "--no-latency", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {(r["workload"], r["engine"]) for r in rows} == {
        ("W4", "headwater"), ("W4", "quixstreams"), ("W4t", "headwater"), ("W4t", "quixstreams")}
    for row in rows:
        assert REQUIRED <= set(row) and row["events_per_s"] and row["agrees"] is True, row
    for workload in ("W4", "W4t"):
        checksums = {r["notes"].split("checksum ")[1][:12] for r in rows if r["workload"] == workload}
        assert len(checksums) == 1, rows
    assert set(report["config"]["join_input_topics"]) == {"W4", "W4t"}

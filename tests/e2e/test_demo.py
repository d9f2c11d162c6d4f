"""`headwater demo` (what `make demo` runs) works end to end and reports what it saw."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from headwater.schemas.catalog import catalog
from tests.e2e.runtime_support import ROOT

pytestmark = pytest.mark.e2e


def test_demo_generates_reads_back_and_aggregates(
    kafka_bootstrap: str, schema_registry_url: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headwater", "demo", "--events", "8000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HEADWATER_KAFKA_BOOTSTRAP": kafka_bootstrap,
             "HEADWATER_SCHEMA_REGISTRY_URL": schema_registry_url},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    produced = int(re.search(r"produced (\d+) events", out).group(1))
    assert produced == 8000
    table = {m.group(1): (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
             for m in re.finditer(r"^\s+([a-z.]+)\s+([\d,]+)\s+([\d,]+)$", out, re.M)}
    assert set(table) == set(catalog())
    assert sum(d + r for d, r in table.values()) == produced
    assert 0 < sum(r for _, r in table.values()) < produced * 0.02
    assert re.search(r"[\d,]+ users with valid orders", out)
    dead = int(re.search(r"dead letters: (\d+)", out).group(1))
    assert dead == table["order.created"][1]

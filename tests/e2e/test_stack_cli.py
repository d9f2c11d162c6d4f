"""`headwater stack` end to end: a second, private stack started and stopped by the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.devstack import LocalStack, default_home
from headwater.devstack.assets import fetch_jars

pytestmark = pytest.mark.e2e


def headwater(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater", "stack", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def private_home(tmp_path: Path) -> Iterator[Path]:
    """A stack home of its own that shares the already-fetched jars."""
    home = tmp_path / "stack-home"
    home.mkdir()
    shared = default_home()
    fetch_jars(shared, shared / "stack" / "logs" / "fetch.log")
    (home / "jars").symlink_to((shared / "jars").resolve())
    yield home
    LocalStack(home).down(timeout_s=10)  # never leave JVMs behind, whatever the test did


def test_up_status_env_up_again_down_leaves_no_process(private_home: Path) -> None:
    up = headwater(private_home, "up")
    assert up.returncode == 0, up.stderr
    assert "stack started" in up.stdout
    state = LocalStack(private_home).read_state()
    assert state is not None
    assert state.kafka_bootstrap in up.stdout and state.schema_registry_url in up.stdout

    status = headwater(private_home, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" ready ") == 2
    assert state.logs["kafka"] in status.stdout and state.logs["registry"] in status.stdout

    env = headwater(private_home, "env")
    assert env.returncode == 0
    assert f"export HEADWATER_KAFKA_BOOTSTRAP={state.kafka_bootstrap}" in env.stdout
    assert f"export HEADWATER_SCHEMA_REGISTRY_URL={state.schema_registry_url}" in env.stdout

    again = headwater(private_home, "up")
    assert again.returncode == 0 and "already running" in again.stdout
    assert LocalStack(private_home).read_state().pids == state.pids

    pids = sorted(state.pids.values())
    assert sorted(LocalStack(private_home).processes()) == pids

    down = headwater(private_home, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert LocalStack(private_home).processes() == []
    assert not any(Path(f"/proc/{pid}").exists() and _is_java(pid) for pid in pids)

    after = headwater(private_home, "status")
    assert after.returncode == 3 and "stopped" in after.stdout
    assert headwater(private_home, "env").returncode == 3


def test_a_taken_port_fails_fast_naming_the_cause(private_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = headwater(private_home, "up", "--kafka-port", str(port), timeout=60)
    assert result.returncode == 1
    assert "port-taken" in result.stderr and str(port) in result.stderr
    assert LocalStack(private_home).processes() == []


def test_a_failing_jvm_is_reported_with_its_log(private_home: Path, tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    java = fake_bin / "java"
    java.write_text("#!/bin/sh\necho 'fake java: refusing to start' >&2\nexit 1\n")
    java.chmod(0o755)
    env_path = f"{fake_bin}:{os.environ['PATH']}"
    result = subprocess.run(
        [sys.executable, "-m", "headwater", "stack", "--home", str(private_home), "up"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": env_path},
    )
    assert result.returncode == 1
    assert "exited" in result.stderr and "kafka.log" in result.stderr


def test_missing_java_is_named(private_home: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headwater", "stack", "--home", str(private_home), "up"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
    )
    assert result.returncode == 1
    assert "no-java" in result.stderr


def _is_java(pid: int) -> bool:
    try:
        return b"java" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False

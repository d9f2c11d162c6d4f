"""Files users rely on without running them here: docker-compose and config profiles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from headwater.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_declares_kafka_registry_and_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "schema-registry", "prometheus"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ccompat" in services["schema-registry"].get("healthcheck", {}).get("test", [""])[-1]
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        result = subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_every_shipped_profile_loads() -> None:
    profiles = sorted((ROOT / "config").glob("*.yaml"))
    assert profiles, "config/ ships at least one profile"
    for profile in profiles:
        load_settings(config_file=profile)

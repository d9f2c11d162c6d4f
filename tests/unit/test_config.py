"""Settings: precedence of sources, validation naming the setting, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.cli import main
from headwater.config import load_settings
from headwater.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HEADWATER_"):
            monkeypatch.delenv(name)


def write_profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_at_least_once() -> None:
    settings = load_settings()
    assert settings.workers == 1
    assert settings.processing_guarantee == "at-least-once"
    assert settings.kafka_client_config()["bootstrap.servers"] == "127.0.0.1:9092"


def test_sources_apply_in_order_flags_env_profile_stack_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = write_profile(
        tmp_path, "workers: 3\nkafka:\n  bootstrap: profile:9092\n  client_id: from-profile\n"
    )
    stack = {"kafka_bootstrap": "stack:9092", "schema_registry_url": "http://stack:8081"}
    monkeypatch.setenv("HEADWATER_WORKERS", "5")

    settings = load_settings({"workers": 7}, profile, stack)
    assert settings.workers == 7  # flag beats env
    assert load_settings({}, profile, stack).workers == 5  # env beats profile
    assert settings.kafka_bootstrap == "profile:9092"  # profile beats stack
    assert settings.kafka_client_id == "from-profile"  # sections are flattened
    assert settings.schema_registry_url == "http://stack:8081"  # stack beats defaults


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception):
        settings.workers = 2  # type: ignore[misc]


def test_bad_env_value_names_the_setting_and_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_WORKERS", "zero")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "workers"
    assert info.value.source == "env HEADWATER_WORKERS"
    assert "'zero'" in info.value.one_line()


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"processing_guarantee": "maybe-once"}, "processing_guarantee"),
        ({"kafka_bootstrap": "no-port-here"}, "kafka_bootstrap"),
        ({"schema_registry_url": "ftp://x"}, "schema_registry_url"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"workers": 0}, "workers"),
    ],
)
def test_each_invalid_value_is_rejected_by_name(overrides: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)
    assert info.value.setting == setting
    assert info.value.source == f"--{setting.replace('_', '-')}"


def test_kafka_extra_cannot_override_what_the_runtime_relies_on(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, "kafka_extra:\n  partition.assignment.strategy: "
                                      "cooperative-sticky\n  linger.ms: '20'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=profile)
    assert info.value.setting == "kafka_extra"
    assert "partition.assignment.strategy" in info.value.reason
    tuning = write_profile(tmp_path, "kafka_extra:\n  linger.ms: '20'\n")
    assert load_settings(config_file=tuning).kafka_client_config()["linger.ms"] == "20"


def test_unknown_profile_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=write_profile(tmp_path, "wrokers: 2\n"))
    assert info.value.setting == "wrokers"
    assert "unknown setting" in info.value.reason


def test_missing_profile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read profile"):
        load_settings(config_file=tmp_path / "nope.yaml")


def test_secrets_reach_librdkafka_but_never_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("HEADWATER_SCHEMA_REGISTRY_BASIC_AUTH", "u:p4ss")
    settings = load_settings()
    assert settings.kafka_client_config()["sasl.password"] == "hunter2"
    assert settings.schema_registry_config()["basic.auth.user.info"] == "u:p4ss"
    shown = repr(settings) + str(settings) + str(settings.describe())
    assert "hunter2" not in shown and "p4ss" not in shown


def test_cli_exits_2_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEADWATER_WORKERS", "zero")
    assert main(["config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "workers" in err and "HEADWATER_WORKERS" in err


def test_cli_config_prints_effective_values_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_PASSWORD", "hunter2")
    assert main(["config", "--workers", "4", "--bootstrap", "broker:9093"]) == 0
    out = capsys.readouterr().out
    assert "workers = 4" in out
    assert "kafka_bootstrap = broker:9093" in out
    assert "kafka_sasl_password = **********" in out and "hunter2" not in out

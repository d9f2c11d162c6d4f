"""headwater's one settings model and how it is loaded.

Sources, highest precedence first:

1. explicit overrides (CLI flags), passed to :func:`load_settings` as ``overrides``;
2. environment variables ``HEADWATER_<SETTING>`` (e.g. ``HEADWATER_WORKERS=4``);
3. a YAML profile (``--config FILE``, or ``HEADWATER_CONFIG``); keys are setting names, and
   one level of sections is flattened (``kafka: {bootstrap: ...}`` is ``kafka_bootstrap``);
4. the local dev stack's state file, if ``headwater stack up`` wrote one (only
   ``kafka_bootstrap`` and ``schema_registry_url``);
5. the defaults below.

A bad value raises :class:`headwater.errors.ConfigError` naming the setting and where the value
came from. Secrets are ``SecretStr`` and never appear in ``repr``/``str`` or ``headwater config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from headwater.errors import ConfigError

ENV_PREFIX = "HEADWATER_"
CONFIG_FILE_ENV = "HEADWATER_CONFIG"

ProcessingGuarantee = Literal["at-least-once", "exactly-once"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


RUNTIME_OWNED_PROPERTIES = frozenset({
    "group.id", "group.instance.id", "enable.auto.commit", "enable.auto.offset.store",
    "isolation.level", "partition.assignment.strategy", "group.protocol", "transactional.id",
    "enable.idempotence",
})


class Settings(BaseSettings):
    """Every setting of a headwater process. Immutable once loaded.

    Use :func:`load_settings` rather than the constructor: it applies the documented source order
    and turns validation failures into one-line :class:`ConfigError` messages.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False
    )

    # --- Kafka connection -------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    kafka_client_id: str = Field("headwater", description="client.id sent to the brokers.")
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="librdkafka security.protocol."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="sasl.mechanism.")
    kafka_sasl_username: str | None = Field(None, description="sasl.username.")
    kafka_sasl_password: SecretStr | None = Field(None, description="sasl.password (secret).")
    kafka_ssl_ca_location: Path | None = Field(None, description="CA bundle for TLS.")
    kafka_ssl_certificate_location: Path | None = Field(None, description="Client certificate.")
    kafka_ssl_key_location: Path | None = Field(None, description="Client private key.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Private key password.")
    kafka_extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties applied to every client (e.g. tuning).",
    )

    # --- Schema Registry --------------------------------------------------------------------
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081", description="Confluent-compatible Schema Registry base URL."
    )
    schema_registry_basic_auth: SecretStr | None = Field(
        None, description="'user:password' for registry basic auth (secret)."
    )

    # --- Processing -------------------------------------------------------------------------
    application_id: str = Field(
        "headwater", min_length=1, description="Consumer group id and prefix of internal topics."
    )
    state_dir: Path = Field(Path("state"), description="Directory of local RocksDB stores.")
    processing_guarantee: ProcessingGuarantee = Field(
        "at-least-once", description="at-least-once, or exactly-once via Kafka transactions."
    )
    workers: int = Field(1, ge=1, le=256, description="Worker processes started by `run`.")
    commit_interval_ms: int = Field(
        1000, ge=10, description="Checkpoint at least this often (milliseconds)."
    )
    session_timeout_ms: int = Field(
        45_000, ge=6_000, le=300_000,
        description="Consumer group session timeout: how soon a crashed worker's partitions move.",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus exporter port; 0 disables it."
    )

    # --- Topics -----------------------------------------------------------------------------
    auto_create_topics: bool = Field(
        True,
        description="Create missing output topics at start (partitions like the input); "
        "off: a missing output topic fails the run at start, naming it.",
    )
    internal_replication_factor: int = Field(
        -1, ge=-1, le=32,
        description="Replication factor of internal topics (changelogs, repartition, DLQ) and "
        "auto-created outputs; -1 takes the broker's default.replication.factor.",
    )

    # --- Failure handling -------------------------------------------------------------------
    max_restarts: int = Field(
        5, ge=0, le=1000,
        description="Consecutive failed attempts of one worker (at the same input positions) "
        "before `run` gives up and exits non-zero; 0 never restarts.",
    )
    restart_backoff_ms: int = Field(
        1000, ge=0, le=600_000,
        description="First restart delay; doubles per consecutive failure (capped at 60 s).",
    )
    transient_retry_ms: int = Field(
        30_000, ge=0, le=3_600_000,
        description="How long broker/registry/producer errors are retried with backoff before "
        "the worker fails (they never dead-letter records).",
    )
    static_membership: bool = Field(
        True,
        description="Set group.instance.id = <application_id>-<host>-<worker> so a restarted "
        "worker gets its partitions back at once instead of after the session timeout.",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_is_host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_is_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("kafka_extra")
    @classmethod
    def _no_properties_the_runtime_owns(cls, value: dict[str, str]) -> dict[str, str]:
        owned = sorted(k for k in value if k in RUNTIME_OWNED_PROPERTIES)
        if owned:
            raise ValueError(
                f"{', '.join(owned)} cannot be set: the runtime relies on its own value "
                "(manual commits, eager rebalancing, read_committed, transactions)"
            )
        return value

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties shared by every consumer, producer and admin client."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "client.id": self.kafka_client_id,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _reveal(self.kafka_sasl_password),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": _reveal(self.kafka_ssl_key_password),
        }
        conf.update({k: str(v) for k, v in optional.items() if v is not None})
        conf.update(self.kafka_extra)
        return conf

    def schema_registry_config(self) -> dict[str, str]:
        """Configuration for ``confluent_kafka.schema_registry.SchemaRegistryClient``."""
        conf = {"url": self.schema_registry_url}
        if self.schema_registry_basic_auth is not None:
            conf["basic.auth.user.info"] = self.schema_registry_basic_auth.get_secret_value()
        return conf

    def describe(self) -> dict[str, str]:
        """Every setting as display text, secrets masked (for ``headwater config``)."""
        return {name: _display(getattr(self, name)) for name in type(self).model_fields}


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _display(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    return "" if value is None else str(value)


class _MappingSource(PydanticBaseSettingsSource):
    """A settings source over an already-read mapping (a YAML profile, the stack state file)."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


def read_profile(path: Path) -> dict[str, Any]:
    """Read a YAML profile into flat setting names (one level of sections is flattened).

    Raises:
        ConfigError: the file is missing, not YAML, not a mapping, or names an unknown setting.
    """
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError("config", f"cannot read profile: {exc.strerror}", str(path)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"not valid YAML: {exc}", str(path)) from exc
    if not isinstance(raw, dict):
        raise ConfigError("config", "a profile must be a mapping of settings", str(path))
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_").lower()
        if isinstance(value, dict) and name not in Settings.model_fields:
            flat.update({f"{name}_{str(k).replace('-', '_').lower()}": v for k, v in value.items()})
        else:
            flat[name] = value
    unknown = sorted(set(flat) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(unknown[0], "unknown setting", str(path))
    return flat


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | str | None = None,
    stack_values: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from every source in the documented precedence order.

    Args:
        overrides: values from CLI flags (``None`` values are ignored).
        config_file: a YAML profile; defaults to ``$HEADWATER_CONFIG`` when set.
        stack_values: the local stack's endpoints (lowest precedence before defaults).

    Raises:
        ConfigError: naming the first invalid setting and where its value came from.
    """
    env = os.environ
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    profile_path = config_file or env.get(CONFIG_FILE_ENV)
    profile = read_profile(Path(profile_path)) if profile_path else {}
    stack = dict(stack_values or {})

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                _MappingSource(settings_cls, profile),
                _MappingSource(settings_cls, stack),
            )

    try:
        loaded = _Loaded(**cli)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigError(
            setting,
            _reason(first),
            _source_of(setting, cli, env, profile_path and str(profile_path), profile),
        ) from None
    # A plain Settings (validated above) so it pickles into worker processes.
    return Settings.model_construct(**{k: getattr(loaded, k) for k in Settings.model_fields})


def _reason(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "extra_forbidden":
        return "unknown setting"
    value = error.get("input")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{message} (got {value!r})"
    return message


def _source_of(
    setting: str,
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    profile_path: str | None,
    profile: Mapping[str, Any],
) -> str:
    env_name = f"{ENV_PREFIX}{setting.upper()}"
    if setting in cli:
        return f"--{setting.replace('_', '-')}"
    if any(k.upper() == env_name for k in env):
        return f"env {env_name}"
    if setting in profile and profile_path:
        return profile_path
    return "defaults"

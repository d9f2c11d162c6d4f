"""Options shared by commands that talk to Kafka: ``--config`` and connection overrides."""

from __future__ import annotations

import argparse
from typing import Any

from headwater.config import Settings, load_settings
from headwater.devstack import LocalStack, default_home
from headwater.errors import StackError


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--bootstrap`` and ``--registry`` (they override env and profile)."""
    parser.add_argument("--config", metavar="FILE", help="YAML profile (see config/*.yaml)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--registry", metavar="URL", help="Schema Registry URL")


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings with CLI flags > env > profile > the local stack's state file > defaults."""
    overrides = {
        "kafka_bootstrap": getattr(args, "bootstrap", None),
        "schema_registry_url": getattr(args, "registry", None),
        **extra,
    }
    return load_settings(overrides, getattr(args, "config", None), local_stack_endpoints())


def local_stack_endpoints() -> dict[str, str]:
    """The running local stack's endpoints, or nothing when there is none."""
    try:
        state = LocalStack(default_home()).read_state()
    except StackError:
        return {}
    if state is None:
        return {}
    return {
        "kafka_bootstrap": state.kafka_bootstrap,
        "schema_registry_url": state.schema_registry_url,
    }

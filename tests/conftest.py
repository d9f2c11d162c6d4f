"""Shared fixtures.

The ``stack`` session fixture points integration tests at a real Kafka broker and Schema Registry:
1. ``HEADWATER_KAFKA_BOOTSTRAP`` and ``HEADWATER_SCHEMA_REGISTRY_URL`` when both are set;
2. else the local stack if ``headwater stack up`` is running (its state file);
3. else it starts the local stack itself and stops it at the end of the session.
Unit tests never request it, so ``pytest tests/unit`` needs no broker.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.devstack import LocalStack, default_home


@dataclass(frozen=True)
class StackEndpoints:
    """Where the real services of this test session are."""

    kafka_bootstrap: str
    schema_registry_url: str
    started_here: bool


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEndpoints]:
    """The real Kafka + Schema Registry of this session (see the module docstring)."""
    bootstrap = os.environ.get("HEADWATER_KAFKA_BOOTSTRAP")
    registry = os.environ.get("HEADWATER_SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield StackEndpoints(bootstrap, registry, started_here=False)
        return
    local = LocalStack(default_home())
    state, started = local.up(progress=lambda msg: print(f"[stack] {msg}", flush=True))
    try:
        yield StackEndpoints(state.kafka_bootstrap, state.schema_registry_url, started)
    finally:
        if started:
            local.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: StackEndpoints) -> str:
    """Bootstrap servers of the real broker."""
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def schema_registry_url(stack: StackEndpoints) -> str:
    """Base URL of the real Confluent-compatible Schema Registry."""
    return stack.schema_registry_url


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> dict[str, str]:
    """Minimal librdkafka config for clients in tests (copy before adding keys)."""
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture(scope="session")
def admin(kafka_config: dict[str, str]) -> AdminClient:
    """An AdminClient on the real broker."""
    return AdminClient(dict(kafka_config))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of names unique to this test run (topics, groups, subjects)."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")

    def make(prefix: str = "t") -> str:
        return f"{prefix}.{test}.{uuid.uuid4().hex[:10]}"

    return make


def _wait_until_listed(admin: AdminClient, topic: str, partitions: int,
                       timeout_s: float = 60.0) -> None:
    """Block until the broker's metadata lists ``topic`` with its partitions, each with a
    leader: a created topic
    can take seconds to appear there on a loaded machine, and an engine started before that
    rightly fails (a missing source is a start-up error)."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if (meta is not None and meta.error is None and len(meta.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in meta.partitions.values())):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"topic {topic} created but not listed after {timeout_s:.0f} s")
        time.sleep(0.1)


@pytest.fixture
def new_topic(
    admin: AdminClient, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Factory creating uniquely named topics; every topic is deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=30)
        created.append(name)
        _wait_until_listed(admin, name, partitions)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
                pass

"""What the generator is told (:class:`GeneratorConfig`) and what it yields (:class:`GeneratedEvent`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from headwater.errors import ConfigError


class KeyChoice(str, Enum):
    """Which value becomes the Kafka record key.

    ``default``: the catalog's per-type key (correlationId for the order flow, userId for users,
    productId for inventory, serviceName, webhook source, modelId); ``event-id``, ``user-id``,
    ``correlation-id``: that envelope field for every type (null key when the field is null);
    ``none``: no key (the producer spreads records over partitions).
    """

    DEFAULT = "default"
    EVENT_ID = "event-id"
    USER_ID = "user-id"
    CORRELATION_ID = "correlation-id"
    NONE = "none"


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes the generated stream; equal configs give equal streams.

    Attributes:
        seed: seeds every random choice (ids included).
        start_ms: event time of the first event, epoch millis.
        event_rate: events per second of *event time* (how fast the simulated clock runs per
            event); independent of the produce rate.
        users: size of the user population (each registers before its first order).
        products: size of the product catalog.
        invalid_fraction: fraction of events carrying one business-rule violation (still
            schema-valid).
        malformed_fraction: fraction of records whose bytes are malformed when encoded.
        out_of_order_fraction: fraction of events emitted after newer events, by up to
            ``max_disorder_ms`` of event time.
        late_fraction: fraction of events emitted after the stream moved ``late_by_ms`` to
            ``1.5 * late_by_ms`` past them.
        max_disorder_ms: bound of the small disorder.
        late_by_ms: how late late events are (at least).
        key: key choice (see :class:`KeyChoice`).
        environment: envelope ``environment`` value.
    """

    seed: int = 0
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    event_rate: float = 1000.0
    users: int = 1000
    products: int = 200
    invalid_fraction: float = 0.0
    malformed_fraction: float = 0.0
    out_of_order_fraction: float = 0.0
    late_fraction: float = 0.0
    max_disorder_ms: int = 2_000
    late_by_ms: int = 60_000
    key: KeyChoice = KeyChoice.DEFAULT
    environment: str = "dev"

    def __post_init__(self) -> None:
        for name in ("invalid_fraction", "malformed_fraction", "out_of_order_fraction", "late_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be within [0, 1], got {value}")
        if self.out_of_order_fraction + self.late_fraction > 1.0:
            raise ConfigError("late_fraction", "out-of-order + late fractions exceed 1")
        for name in ("users", "products"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.event_rate <= 0:
            raise ConfigError("event_rate", f"must be > 0, got {self.event_rate}")
        if self.max_disorder_ms < 1 or self.late_by_ms < 1:
            raise ConfigError("late_by_ms", "max_disorder_ms and late_by_ms must be >= 1")


class GeneratedEvent:
    """One generated event and how it was tampered with.

    Attributes:
        event_type: catalog name, e.g. ``order.created``.
        event: the event as a dict matching the type's schema (timestamps as epoch millis).
        invalid: name of the business rule it violates (e.g. ``empty-items``), or None.
        malformed: how its bytes are broken (``random-bytes``, ``unknown-schema-id``,
            ``truncated``), or None; set by the encoder stage.
        delayed: ``out-of-order`` or ``late`` when deliberately emitted after newer events.
        lateness_ms: max event time emitted before it minus its own (0 when in order).
    """

    __slots__ = ("event_type", "event", "invalid", "malformed", "delayed", "lateness_ms")

    def __init__(self, event_type: str, event: dict[str, Any]) -> None:
        self.event_type = event_type
        self.event = event
        self.invalid: str | None = None
        self.malformed: str | None = None
        self.delayed: str | None = None
        self.lateness_ms = 0

    @property
    def timestamp(self) -> int:
        """Event time, epoch millis."""
        return self.event["timestamp"]

    def __repr__(self) -> str:
        flags = [f for f in (self.invalid, self.malformed, self.delayed) if f]
        return f"GeneratedEvent({self.event_type} @{self.timestamp} {' '.join(flags)})"

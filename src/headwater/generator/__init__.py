"""Realistic, deterministic domain traffic for tests, demos and benchmarks.

``generate_batches(GeneratorConfig(seed=...), limit)`` yields the stream as columnar
:class:`EventBatch` es (what the producer encodes); ``generate`` yields the same stream as
:class:`GeneratedEvent` objects (event dicts with flags for injected faults); ``produce_generated``
publishes it to Kafka in Confluent wire format. See docs/catalog.md for the flows and the options.
"""

from headwater.generator.model import GeneratedEvent, GeneratorConfig, KeyChoice
from headwater.generator.pipeline import EventBatch, generate, generate_batches
from headwater.generator.producer import (
    ProduceError,
    ProduceOptions,
    ProduceReport,
    ensure_topics,
    key_function,
    produce_generated,
)

__all__ = [
    "EventBatch",
    "GeneratedEvent",
    "GeneratorConfig",
    "KeyChoice",
    "ProduceError",
    "ProduceOptions",
    "ProduceReport",
    "ensure_topics",
    "generate",
    "generate_batches",
    "key_function",
    "produce_generated",
]

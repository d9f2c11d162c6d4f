"""Realistic, deterministic domain traffic for tests, demos and benchmarks.

``generate(GeneratorConfig(seed=...), limit)`` yields :class:`GeneratedEvent` objects (event dicts
matching the catalog schemas, with flags for injected faults); ``produce_generated`` publishes them
to Kafka in Confluent wire format. See docs/catalog.md for the flows and the options.
"""

from headwater.generator.model import GeneratedEvent, GeneratorConfig, KeyChoice
from headwater.generator.pipeline import generate
from headwater.generator.producer import (
    ProduceError,
    ProduceOptions,
    ProduceReport,
    ensure_topics,
    key_function,
    produce_generated,
)

__all__ = [
    "GeneratedEvent",
    "GeneratorConfig",
    "KeyChoice",
    "ProduceError",
    "ProduceOptions",
    "ProduceReport",
    "ensure_topics",
    "generate",
    "key_function",
    "produce_generated",
]

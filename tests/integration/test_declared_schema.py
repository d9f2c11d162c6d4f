"""Declared source schemas and registry failures against the real Schema Registry."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from headwater.config import Settings
from headwater.schemas import (
    SchemaCache,
    SchemaMismatch,
    SchemaRegistryUnavailable,
    SubjectNotFound,
    UnknownSchemaId,
)
from headwater.schemas.catalog import event_type
from headwater.streams.records import RecordBatch
from headwater.streams.runtime.avro import AvroCodec
from headwater.streams.topology import SourceSpec
from tests.unit.serde_support import catalog_events

pytestmark = pytest.mark.integration

ORDER, USER = event_type("order.created"), event_type("user.registered")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def framed(schema_id: int, name: str, n: int) -> list[bytes]:
    from headwater.generator.encode import WireEncoder

    return WireEncoder({name: schema_id}).encode(name, catalog_events(name, n))


def test_a_foreign_type_is_rejected_against_the_subjects_latest_schema(
    schema_registry_url: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("orders")
    codec = AvroCodec(Settings(schema_registry_url=schema_registry_url))
    order_id = codec.cache.register(f"{topic}-value", ORDER.schema_str)
    user_id = codec.cache.register(f"{unique_name('users')}-value", USER.schema_str)
    values = framed(order_id, "order.created", 35) + framed(user_id, "user.registered", 2)
    n = len(values)
    batch = RecordBatch(topic, [0] * n, list(range(n)), [0] * n, [None] * n, values, [None] * n)

    frame, rejected = codec.decoder(SourceSpec(topic, "avro")).decode(batch)

    assert frame.height == 35 and [r.index for r in rejected] == [35, 36]
    error = rejected[0].error
    assert isinstance(error, SchemaMismatch)
    assert (error.schema_id, error.reader_subject) == (user_id, f"{topic}-value")


def test_not_found_is_told_apart_from_unreachable(
    schema_registry_url: str, unique_name: Callable[[str], str]
) -> None:
    real = SchemaCache.from_url(schema_registry_url)
    with pytest.raises(UnknownSchemaId, match="registry: "):
        real.writer(2**31 - 7)
    with pytest.raises(SubjectNotFound):
        real.latest(f"{unique_name('none')}-value")

    down = SchemaCache.from_url(f"http://127.0.0.1:{closed_port()}", transient_retry_ms=400)
    with pytest.raises(SchemaRegistryUnavailable, match=r"get schema 1: .* attempt\(s\) in 0.4s"):
        down.writer(1)
    with pytest.raises(SchemaRegistryUnavailable, match="get latest of"):
        AvroCodec(Settings(), cache=down).decoder(SourceSpec("orders", "avro"))

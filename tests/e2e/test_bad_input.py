"""Bad input, always accounted for: every record of an Avro source is counted or dead-lettered
with its error class, the run completes, and a record too large for the DLQ is dead-lettered
without its value but replayable from its source."""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer

from headwater.cli import main
from headwater.connectors.dlq import read_dead_letters
from headwater.generator.encode import WireEncoder
from headwater.generator.model import GeneratorConfig
from headwater.generator.pipeline import generate
from headwater.schemas import SchemaCache, UnknownSchemaId
from headwater.schemas.catalog import event_type
from tests.e2e.runtime_support import IDLE, Job, latest_by_key, read_topic

pytestmark = pytest.mark.e2e

ORDER, USER = event_type("order.created"), event_type("user.registered")
UNKNOWN_ID = 2**31 - 11
NEAR_LIMIT = 1_040_000  # under the broker's default max.message.bytes (1 048 588), over 1 000 000
KEYS = [f"user-{i}" for i in range(7)]


def events(name: str, n: int) -> list[dict]:
    """The first ``n`` generated events of catalog type ``name`` (the stream is endless)."""
    out: list[dict] = []
    for generated in generate(GeneratorConfig(seed=23, users=50)):
        if generated.event_type == name:
            out.append(generated.event)
            if len(out) == n:
                return out
    raise AssertionError("unreachable: the generator is endless")


def fails_to_decode(payload: bytes, schema: dict) -> bool:
    """Whether fastavro (strict: every byte used) rejects the datum of a framed payload."""
    bio = io.BytesIO(payload[5:])
    try:
        fastavro.schemaless_reader(bio, fastavro.parse_schema(schema))
    except Exception:  # noqa: BLE001 - any decode failure counts
        return True
    return bio.tell() != len(payload) - 5


class Inputs:
    """What the test produced: valid keys, and per bad record its key, value and expected class."""

    def __init__(self) -> None:
        self.valid: Counter[str] = Counter()
        self.bad: dict[str, tuple[bytes | None, str]] = {}
        self.coordinates: dict[str, tuple[int, int]] = {}  # bad key -> (partition, offset)
        self.produced = 0

    def delivered(self, err: object, msg: object) -> None:
        assert err is None, err
        key = msg.key().decode()  # type: ignore[attr-defined]
        if key in self.bad:
            self.coordinates[key] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]


def bad_records(order: list[bytes], user: bytes) -> dict[str, tuple[bytes | None, str]]:
    rng = random.Random(31)
    truncated = order[0][: len(order[0]) // 2]
    # eventId's length varint (72 = 36 chars) gets its continuation bit: a length of ~3600 chars
    flipped = bytearray(order[1])
    assert flipped[5] == 0x48
    flipped[5] ^= 0x80
    for broken in (truncated, bytes(flipped)):
        assert fails_to_decode(broken, ORDER.schema)
    return {
        "random-bytes": (b"\x9f" + rng.randbytes(60), "MalformedFraming"),
        "truncated": (truncated, "UndecodableDatum"),
        "bit-flipped": (bytes(flipped), "UndecodableDatum"),
        "wrong-magic": (b"\x01" + order[2][1:], "MalformedFraming"),
        "unknown-id": (b"\x00" + UNKNOWN_ID.to_bytes(4, "big") + order[3][5:], "UnknownSchemaId"),
        "other-type": (user, "SchemaMismatch"),
        "empty": (b"", "MalformedFraming"),
        "tombstone": (None, "EmptyValueError"),
        "near-limit": (b"\x9f" + rng.randbytes(NEAR_LIMIT), "MalformedFraming"),
    }


def produce_inputs(job: Job, registry: SchemaCache, users_subject: str) -> Inputs:
    order_id = registry.register(f"{job.input}-value", ORDER.schema_str)
    user_id = registry.register(users_subject, USER.schema_str)
    with pytest.raises(UnknownSchemaId):
        registry.writer(UNKNOWN_ID)
    orders = events("order.created", 400)
    big = orders[-1]
    big["data"]["metadata"]["attributes"] = {"blob": "x" * (NEAR_LIMIT - 2_000)}
    encoded = WireEncoder({"order.created": order_id}).encode("order.created", orders)
    user = WireEncoder({"user.registered": user_id}).encode("user.registered", events(
        "user.registered", 1))[0]
    inputs = Inputs()
    bad = [(f"bad-{kind}-{copy}", value, error)
           for kind, (value, error) in bad_records(encoded, user).items() for copy in range(2)]
    producer = Producer({**job.config, "message.max.bytes": 2_000_000, "linger.ms": 20})
    for i, payload in enumerate(encoded):
        key = KEYS[i % len(KEYS)]
        producer.produce(job.input, payload, key.encode())
        inputs.valid[key] += 1
        if i % 20 == 10 and bad:
            key, value, error = bad.pop()
            inputs.bad[key] = (value, error)
            producer.produce(job.input, value, key.encode(), on_delivery=inputs.delivered)
    assert not bad
    assert producer.flush(60) == 0
    inputs.produced = len(encoded) + len(inputs.bad)
    assert len(encoded[-1]) > NEAR_LIMIT - 2_000  # the large valid record really is large
    return inputs


@pytest.fixture
def job(new_topic, unique_name, tmp_path: Path, kafka_bootstrap, schema_registry_url) -> Job:
    return Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url,
               topology="tests.topologies:orders_count_per_key")


def test_every_bad_record_is_dead_lettered_with_its_class_and_valid_ones_are_counted_exactly(
    job: Job, new_topic: Callable[..., str], unique_name: Callable[[str], str],
    schema_registry_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    registry = SchemaCache.from_url(schema_registry_url)
    inputs = produce_inputs(job, registry, f"{unique_name('users')}-value")

    job.run(*IDLE)

    counts = {k: v["n"] for k, v in latest_by_key(read_topic(job.config, job.output)).items()}
    assert counts == dict(inputs.valid), job.log_tail()
    dlq = f"{job.application_id}.dlq"
    letters = {letter.key.decode(): letter for letter in read_dead_letters(job.config, dlq)}
    assert sum(counts.values()) + len(letters) == inputs.produced  # nothing vanished
    assert {k: lt.error_class for k, lt in letters.items()} == {
        k: error for k, (_, error) in inputs.bad.items()}
    for key, letter in letters.items():
        value, _ = inputs.bad[key]
        assert (letter.operator, letter.source_topic) == ("decode", job.input)
        assert (letter.source_partition, letter.source_offset) == inputs.coordinates[key]
        if key.startswith("bad-near-limit"):
            assert letter.value is None and letter.dropped == {"value": len(value)}
        else:
            assert letter.value == value and letter.dropped == {}

    assert main(["dlq", "inspect", dlq, "--error-class", "MalformedFraming",
                 "--bootstrap", job.config["bootstrap.servers"]]) == 0
    shown = capsys.readouterr().out
    assert f"value:    (not in the dead letter: {NEAR_LIMIT + 1} bytes, too large for the DLQ" in shown
    assert "8 of 18 entries read" in shown

    target = new_topic("replayed")
    assert main(["dlq", "replay", dlq, "--to", target, "--error-class", "MalformedFraming",
                 "--bootstrap", job.config["bootstrap.servers"]]) == 0
    assert "2 re-read from their source" in capsys.readouterr().out
    replayed = {m.key().decode(): m.value() for m in read_topic(job.config, target)}
    assert replayed == {k: v for k, (v, error) in inputs.bad.items() if error == "MalformedFraming"}

"""Poison pills never stop the engine: they land in the DLQ, readable and replayable."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from headwater.cli import main
from headwater.connectors.dlq import read_dead_letters
from tests.e2e.runtime_support import IDLE, Job, read_topic

pytestmark = pytest.mark.e2e


@pytest.fixture
def job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url) -> Job:
    return Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url,
               topology="tests.topologies:poison_aware")


def test_poison_pills_go_to_the_dlq_and_the_run_completes(
    job: Job, new_topic, capsys: pytest.CaptureFixture[str]
) -> None:
    producer = Producer(job.config)
    good = 0
    for i in range(1_000):
        if i % 100 == 7:
            producer.produce(job.input, b"\x00\x00\x00\x00\x2a garbage " + bytes([i % 256]),
                             f"bad-{i}".encode(), headers=[("origin", b"fuzz")])
        elif i % 100 == 42:
            producer.produce(job.input, orjson.dumps({"id": i, "kind": "poison"}), b"p")
        else:
            producer.produce(job.input, orjson.dumps({"id": i, "kind": "ok"}), b"k")
            good += 1
    assert producer.flush(30) == 0

    job.run(*IDLE)

    assert len(read_topic(job.config, job.output)) == good
    dlq = f"{job.application_id}.dlq"
    letters = list(read_dead_letters(job.config, dlq, limit=None))
    assert len(letters) == 20
    by_class = {}
    for letter in letters:
        by_class.setdefault(letter.error_class, []).append(letter)
    assert len(by_class["JSONDecodeError"]) == 10
    assert len(by_class["ValueError"]) == 10
    garbage = by_class["JSONDecodeError"][0]
    assert garbage.operator == "decode" and garbage.source_topic == job.input
    assert garbage.value.startswith(b"\x00\x00\x00\x00\x2a garbage")
    assert ("origin", b"fuzz") in garbage.headers
    poison = by_class["ValueError"][0]
    assert poison.operator == "check" and "poison row" in poison.error_message

    assert main(["dlq", "inspect", dlq, "--bootstrap", job.config["bootstrap.servers"]]) == 0
    shown = capsys.readouterr().out
    assert "ValueError" in shown and "JSONDecodeError" in shown and job.input in shown

    target = new_topic("replayed")
    assert main(["dlq", "replay", dlq, "--to", target, "--error-class", "ValueError",
                 "--bootstrap", job.config["bootstrap.servers"]]) == 0
    replayed = read_topic(job.config, target)
    assert sorted(orjson.loads(m.value())["id"] for m in replayed) == sorted(
        orjson.loads(letter.value)["id"] for letter in by_class["ValueError"]
    )

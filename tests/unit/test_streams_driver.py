"""The topology DSL and operators, specified through the in-process test driver (no broker)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from headwater.streams import InProcessTestDriver, Topology, TopologyError, agg
from headwater.streams.execution import OperatorError


def orders_topology(on_error: str = "dlq") -> Topology:
    topology = Topology("orders", on_error=on_error)  # type: ignore[arg-type]
    orders = topology.source("orders", value_format="json")
    orders.filter(pl.col("amount") > 0).with_columns(
        doubled=pl.col("amount") * 2
    ).select("user", "doubled").to_topic("doubled")
    orders.aggregate("per-user", orders=agg.count(), spent=agg.sum("amount"),
                     biggest=agg.max("amount")).to_topic("per-user")
    return topology


def test_stateless_chain_filters_maps_and_keeps_keys() -> None:
    driver = InProcessTestDriver(orders_topology())
    driver.pipe("orders", [{"user": "a", "amount": 5}, {"user": "b", "amount": -1}],
                keys=["a", "b"])
    assert driver.read_json("doubled") == [{"user": "a", "doubled": 10}]
    assert [r.key for r in driver.read("doubled")] == [b"a"]


def test_aggregate_accumulates_across_batches_and_emits_updates() -> None:
    driver = InProcessTestDriver(orders_topology())
    driver.pipe("orders", [{"user": "a", "amount": 5}, {"user": "a", "amount": 7},
                           {"user": "b", "amount": 1}], keys=["a", "a", "b"])
    driver.pipe("orders", [{"user": "a", "amount": 2}], keys=["a"])
    updates = driver.read_json("per-user")
    assert updates[:2] == [{"orders": 2, "spent": 12.0, "biggest": 7.0},
                           {"orders": 1, "spent": 1.0, "biggest": 1.0}]
    assert updates[2] == {"orders": 3, "spent": 14.0, "biggest": 7.0}
    stored = driver.store("per-user")
    assert stored[b"a"][0] == 2  # format byte "aggregate rows v1", then a 4-byte fingerprint
    row = np.frombuffer(stored[b"a"][5:], dtype=[("orders", "<i8"), ("spent", "<f8"), ("biggest", "<f8")])
    assert row["orders"][0] == 3 and row["spent"][0] == 14.0


def test_state_is_kept_per_input_partition() -> None:
    driver = InProcessTestDriver(orders_topology())
    driver.pipe("orders", [{"user": "a", "amount": 1}], keys=["a"], partition=0)
    driver.pipe("orders", [{"user": "a", "amount": 1}], keys=["a"], partition=1)
    assert set(driver.store("per-user", 0)) == {b"a"}
    assert set(driver.store("per-user", 1)) == {b"a"}
    assert [u["orders"] for u in driver.read_json("per-user")] == [1, 1]


def test_undecodable_values_go_to_the_dlq_and_the_rest_is_processed() -> None:
    driver = InProcessTestDriver(orders_topology())
    driver.pipe("orders", [{"user": "a", "amount": 3}, b"\xff not json", {"user": "c", "amount": 4}],
                keys=["a", "x", "c"])
    assert [u["doubled"] for u in driver.read_json("doubled")] == [6, 8]
    [letter] = driver.dead_letters
    assert letter.value == b"\xff not json" and letter.key == b"x"
    assert letter.operator == "decode" and letter.source_offset == 1
    assert letter.source_topic == "orders"


def test_a_raising_row_function_dead_letters_only_its_row() -> None:
    def enrich(row: dict) -> dict:
        if row["user"] == "poison":
            raise ValueError("cannot enrich poison")
        return {**row, "tier": "gold"}

    topology = Topology("enrich")
    topology.source("in", value_format="json").map_rows(enrich, name="enrich").to_topic("out")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"user": "a"}, {"user": "poison"}, {"user": "b"}], keys=["a", "p", "b"])
    assert [r["user"] for r in driver.read_json("out")] == ["a", "b"]
    [letter] = driver.dead_letters
    assert (letter.operator, letter.error_class, letter.source_offset) == ("enrich", "ValueError", 1)
    assert "cannot enrich poison" in letter.error_message


def test_fail_policy_stops_with_the_operator_and_offset() -> None:
    topology = Topology("strict", on_error="fail")
    topology.source("in", value_format="json").map_rows(lambda r: 1 / 0, name="boom").to_topic("o")
    driver = InProcessTestDriver(topology)
    with pytest.raises(OperatorError, match="'boom' failed at in offset 0: ZeroDivisionError"):
        driver.pipe("in", [{"x": 1}])


def test_skip_policy_drops_failing_rows_without_dead_letters() -> None:
    topology = Topology("lenient")
    topology.source("in", value_format="json").filter_rows(
        lambda r: 1 / r["x"] > 0, on_error="skip"
    ).to_topic("out")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"x": 1}, {"x": 0}, {"x": 2}])
    assert driver.read_json("out") == [{"x": 1}, {"x": 2}]
    assert driver.dead_letters == []


def test_split_routes_each_row_to_exactly_one_branch() -> None:
    topology = Topology("router")
    big, small = topology.source("in", value_format="json").split(pl.col("n") >= 10)
    big.to_topic("big")
    small.to_topic("small")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"n": 1}, {"n": 10}, {"n": None}, {"n": 50}])
    assert driver.read_json("big") == [{"n": 10}, {"n": 50}]
    assert driver.read_json("small") == [{"n": 1}, {"n": None}]


def test_explode_and_key_by_rekey_rows() -> None:
    topology = Topology("items")
    topology.source("in", value_format="json").explode("items").key_by(
        pl.col("items").struct.field("sku")
    ).to_topic("items")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"items": [{"sku": "A", "q": 1}, {"sku": "B", "q": 2}]}])
    assert [r.key for r in driver.read("items")] == [b"A", b"B"]


def test_keyless_records_reaching_an_aggregate_are_dead_lettered() -> None:
    driver = InProcessTestDriver(orders_topology())
    driver.pipe("orders", [{"user": "a", "amount": 1}, {"user": "?", "amount": 1}], keys=["a", None])
    assert [u["orders"] for u in driver.read_json("per-user")] == [1]
    [letter] = driver.dead_letters
    assert letter.error_class == "MissingKeyError" and letter.source_offset == 1


def test_process_keeps_python_state_per_key() -> None:
    def sessionize(key: str, rows: list[dict], state: dict | None) -> tuple[dict, list[dict]]:
        seen = (state or {"events": 0})["events"] + len(rows)
        return {"events": seen}, [{"user": key, "events_so_far": seen}]

    topology = Topology("sessions")
    topology.source("in", value_format="json").process(sessionize, store="sessions").to_topic("out")
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"e": 1}, {"e": 2}], keys=["u", "u"])
    driver.pipe("in", [{"e": 3}], keys=["u"])
    assert [r["events_so_far"] for r in driver.read_json("out")] == [2, 3]


def test_avro_output_round_trips_through_the_driver_registry() -> None:
    schema = ('{"type":"record","name":"Out","fields":[{"name":"user","type":"string"},'
              '{"name":"n","type":"long"}]}')
    topology = Topology("avro-out")
    topology.source("in", value_format="json").select("user", "n").to_topic(
        "out", value_format="avro", schema=schema)
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"user": "a", "n": 1, "extra": True}])
    assert driver.read_avro("out") == [{"user": "a", "n": 1}]


def test_declaration_errors_are_caught_when_building() -> None:
    topology = Topology("bad")
    stream = topology.source("in", value_format="json")
    with pytest.raises(TopologyError, match="no aggregates"):
        stream.aggregate("s1")
    stream.aggregate("s2", n=agg.count())
    with pytest.raises(TopologyError, match="used by two operators"):
        stream.aggregate("s2", n=agg.count())
    with pytest.raises(TopologyError, match="needs a schema"):
        stream.to_topic("x", value_format="avro")
    with pytest.raises(TopologyError, match="twice"):
        topology.source("in")


def test_key_by_before_aggregate_goes_through_a_repartition_topic() -> None:
    topology = Topology("by-product")
    topology.source("orders", value_format="json").explode("items").key_by(
        pl.col("items").struct.field("sku")
    ).aggregate("per-sku", lines=agg.count()).select("lines", sku=pl.col("_key")).to_topic("out")
    assert topology.sources["per-sku-repartition"].internal
    driver = InProcessTestDriver(topology)
    driver.pipe("orders", [{"items": [{"sku": "A"}, {"sku": "B"}]}, {"items": [{"sku": "A"}]}],
                keys=["o1", "o2"], timestamps_ms=[1_000, 2_000])
    assert driver.read_json("out") == [{"lines": 2, "sku": "A"}, {"lines": 1, "sku": "B"}]
    assert set(driver.store("per-sku")) == {b"A", b"B"}


def test_repartition_needs_avro_compatible_column_names() -> None:
    topology = Topology("bad-names")
    topology.source("in", value_format="json").key_by("user").aggregate("s", n=agg.count())
    driver = InProcessTestDriver(topology)
    driver.pipe("in", [{"user": "a", "bad name": 1}], keys=["a"])
    [letter] = driver.dead_letters
    assert letter.error_class == "UnsupportedColumnType" and "bad name" in letter.error_message


def test_co_partitioned_input_skips_the_repartition_topic() -> None:
    topology = Topology("copart")
    topology.source("in", value_format="json").key_by("user").aggregate(
        "s", n=agg.count(), co_partitioned=True)
    assert list(topology.sources) == ["in"]

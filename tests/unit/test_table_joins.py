"""Tables and stream-table joins in the in-process driver: a property test against a
brute-force oracle (latest and as-of-event-time, inner and left, updates and tombstones in
order), global tables, stream tables, restarts, dead letters and declaration errors."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.streams import InProcessTestDriver, Topology, TopologyError
from headwater.streams.partitioner import partition_for
from headwater.streams.tables import (
    add_version, decode_versions, encode_versions, prune_versions, version_as_of,
)

PARTITIONS = 2
KEYS = [f"k{i}" for i in range(5)]
BY_PARTITION = {p: [k for k in KEYS if partition_for(k.encode(), PARTITIONS) == p]
                for p in range(PARTITIONS)}


def enrich(how: str, as_of: str, versioned: bool) -> Topology:
    topology = Topology("enrich")
    table = topology.table("table", store="t", value_format="json",
                           versioned="100d" if versioned else None)
    stream = topology.source("stream", value_format="json")
    # (no select: before any value is found, a JSON table's columns are unknown, so absent)
    stream.join_table(table, how=how, as_of=as_of).to_topic("out")
    return topology


# A batch: (topic, partition, records); table records (key, value or None, ts), stream
# records (key, ts). All records of a batch are on one partition (their keys hash there).
record_ts = st.integers(0, 50)


@st.composite
def batches(draw) -> list[tuple[str, int, list]]:
    out = []
    for _ in range(draw(st.integers(1, 25))):
        partition = draw(st.sampled_from([p for p in BY_PARTITION if BY_PARTITION[p]]))
        key = st.sampled_from(BY_PARTITION[partition])
        if draw(st.booleans()):
            records = draw(st.lists(st.tuples(key, st.one_of(st.none(), st.integers(0, 99)),
                                              record_ts), min_size=1, max_size=4))
            out.append(("table", partition, records))
        else:
            records = draw(st.lists(st.tuples(key, record_ts), min_size=1, max_size=4))
            out.append(("stream", partition, records))
    return out


def oracle(feed: list, how: str, as_of: str, versioned: bool) -> list[dict]:
    """Brute force: the table's history per key in processing order; each stream row looks up
    the state before its batch."""
    history: dict[str, list[tuple[int, int, int | None]]] = {}  # key -> (ts, seq, value)
    out, seq, next_id = [], 0, 0
    for topic, _, records in feed:
        if topic == "table":
            for key, value, ts in records:
                seq += 1
                history.setdefault(key, []).append((ts, seq, value))
            continue
        for key, ts in records:
            versions = history.get(key, [])
            if not versioned:
                found = versions[-1][2] if versions else None  # last processed
            else:
                eligible = [v for v in versions if as_of == "latest" or v[0] <= ts]
                # newest timestamp; among equal timestamps the later write replaced the earlier
                found = max(eligible, key=lambda v: (v[0], v[1]))[2] if eligible else None
            if found is not None or how == "left":
                out.append({"id": next_id, "v": found})
            next_id += 1
    return out


def run(feed: list, how: str, as_of: str, versioned: bool) -> list[dict]:
    driver = InProcessTestDriver(enrich(how, as_of, versioned), partitions=PARTITIONS)
    next_id = 0
    for topic, partition, records in feed:
        if topic == "table":
            driver.pipe("table", [None if v is None else {"v": v} for _, v, _ in records],
                        keys=[k for k, _, _ in records], partition=partition,
                        timestamps_ms=[ts for _, _, ts in records])
        else:
            values = [{"id": next_id + i} for i in range(len(records))]
            next_id += len(records)
            driver.pipe("stream", values, keys=[k for k, _ in records], partition=partition,
                        timestamps_ms=[ts for _, ts in records])
    assert not driver.dead_letters
    return sorted(({"id": r["id"], "v": r.get("v")} for r in driver.read_json("out")),
                  key=lambda r: r["id"])


@pytest.mark.parametrize(("how", "as_of", "versioned"), [
    ("left", "latest", False), ("inner", "latest", False),
    ("left", "latest", True), ("inner", "event_time", True), ("left", "event_time", True),
])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed=batches())
def test_joins_equal_a_brute_force_oracle(feed, how, as_of, versioned) -> None:
    assert run(feed, how, as_of, versioned) == oracle(feed, how, as_of, versioned)


def users_orders(**join) -> tuple[Topology, str]:
    topology = Topology("orders-enriched")
    users = topology.table("users", store="users", value_format="json")
    orders = topology.source("orders", value_format="json")
    orders.join_table(users, on="userId", **join).to_topic("enriched")
    return topology, "enriched"


def pipe_user(driver: InProcessTestDriver, user: str, value: dict | None, partitions: int = 2):
    driver.pipe("users", [value], keys=[user], partition=partition_for(user.encode(), partitions))


def test_updates_and_tombstones_apply_in_order_and_a_lookup_by_column_repartitions() -> None:
    topology, out = users_orders()
    assert [s.source_topics for s in topology.subtopologies] == [
        ("users", "users-join_table-repartition"), ("orders",)]
    driver = InProcessTestDriver(topology, partitions=2)
    pipe_user(driver, "u1", {"name": "Ann", "tier": "gold"})
    driver.pipe("orders", [{"orderId": "o1", "userId": "u1"}], keys=["o1"], partition=1)
    pipe_user(driver, "u1", {"name": "Ann", "tier": "platinum"})
    driver.pipe("orders", [{"orderId": "o2", "userId": "u1"}], keys=["o2"], partition=0)
    pipe_user(driver, "u1", None)
    driver.pipe("orders", [{"orderId": "o3", "userId": "u1"}, {"orderId": "o4", "userId": None}],
                keys=["o3", "o4"], partition=0)
    rows = driver.read_json(out)
    assert [(r["orderId"], r["tier"]) for r in rows] == [
        ("o1", "gold"), ("o2", "platinum"), ("o3", None), ("o4", None)]
    assert [r.key for r in driver.read(out)][:3] == [b"u1"] * 3  # re-keyed by the lookup key


def test_a_batch_with_several_updates_of_a_key_keeps_the_last() -> None:
    topology, out = users_orders(how="inner")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("users", [{"n": 1}, None, {"n": 3}, {"n": 4}, None],
                keys=["a", "a", "a", "b", "b"])
    driver.pipe("orders", [{"userId": "a"}, {"userId": "b"}])
    assert driver.read_json(out) == [{"userId": "a", "n": 3}]
    assert driver.store("users", 0) == {b"a": b'{"n":3}'}


def test_the_table_survives_crashes_before_and_after_its_checkpoint() -> None:
    topology, out = users_orders()
    driver = InProcessTestDriver(topology, partitions=2, auto_checkpoint=False)
    pipe_user(driver, "u1", {"name": "Ann"})
    driver.checkpoint()
    pipe_user(driver, "u2", {"name": "Bob"})
    driver.crash(after="processing")  # u2's record is replayed after the restart
    driver.crash(after="pre_commit")
    driver.pipe("orders", [{"userId": "u1"}, {"userId": "u2"}], keys=["o1", "o2"])
    driver.checkpoint()
    assert [r["name"] for r in driver.read_json(out)] == ["Ann", "Bob"]


def test_stream_time_of_the_task_follows_the_table_records() -> None:
    topology, _ = users_orders()
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("users", [{"n": 1}, None], keys=["a", "a"], timestamps_ms=[500, 900])
    from headwater.streams.task import TaskId

    assert driver.stream_time(TaskId(0, 0)) == 900


def test_undecodable_and_keyless_table_records_are_dead_lettered_and_not_stored() -> None:
    topology, out = users_orders()
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("users", [b"{not json", {"name": "keyless"}, {"name": "Ann"}],
                keys=["bad", None, "good"])
    assert [(d.operator, d.source_offset) for d in driver.dead_letters] == [
        ("table", 1), ("decode", 0)]
    assert driver.store("users", 0) == {b"good": b'{"name":"Ann"}'}


def test_versioned_table_event_time_from_the_value() -> None:
    topology = Topology("versioned")
    table = topology.table("prices", store="prices", value_format="json", versioned="1h",
                           event_time="at")
    sales = topology.source("sales", value_format="json", event_time="at")
    sales.join_table(table, on="sku", as_of="event_time", how="left").select(
        "id", "price").to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("prices", [{"at": 1_000, "price": 1.0}, {"at": 3_000, "price": 3.0},
                           {"at": 2_000, "price": 2.0}], keys=["x", "x", "x"])
    driver.pipe("sales", [{"id": i, "sku": "x", "at": at}
                          for i, at in enumerate([500, 1_000, 2_500, 9_000])])
    assert [r["price"] for r in driver.read_json("out")] == [None, 1.0, 2.0, 3.0]


def test_versions_are_pruned_behind_the_retention_keeping_the_one_in_force() -> None:
    versions: list = []
    for ts, value in [(10, b"a"), (30, None), (20, b"b"), (40, b"c"), (20, b"B")]:
        add_version(versions, ts, value)
    assert versions == [(10, b"a"), (20, b"B"), (30, None), (40, b"c")]
    assert decode_versions(encode_versions(versions)) == versions
    assert prune_versions(versions, 25) == [(20, b"B"), (30, None), (40, b"c")]
    assert prune_versions(versions, 35) == [(40, b"c")]  # the tombstone in force is dropped
    assert version_as_of(versions, 35) is None and version_as_of(versions, 25) == b"B"
    assert version_as_of(versions, None) == b"c" and version_as_of(versions, 5) is None


def test_versioned_store_prunes_on_write_with_the_task_stream_time() -> None:
    topology = Topology("pruned")
    table = topology.table("t", store="t", value_format="json", versioned=100)
    topology.source("s", value_format="json").join_table(
        table, as_of="event_time").to_topic("out")
    driver = InProcessTestDriver(topology, partitions=1)
    driver.pipe("t", [{"v": 1}, {"v": 2}, {"v": 3}], keys=["k"] * 3,
                timestamps_ms=[0, 50, 300])
    assert [ts for ts, _ in decode_versions(driver.store("t", 0)[b"k"])] == [50, 300]


def test_global_table_joins_any_expression_without_repartitioning() -> None:
    topology = Topology("global")
    users = topology.global_table("users", store="users", value_format="json")
    orders = topology.source("orders", value_format="json")
    orders.join_table(users, on=pl.col("user").str.to_lowercase(), how="inner").to_topic("out")
    assert [s.source_topics for s in topology.subtopologies] == [("orders",)]
    assert topology.copartition_groups() == []
    driver = InProcessTestDriver(topology, partitions={"orders": 3})
    driver.pipe("users", [{"name": "Ann"}], keys=["u1"], partition=4)  # any partition count
    driver.pipe("orders", [{"id": 1, "user": "U1"}, {"id": 2, "user": "u2"}], partition=2)
    driver.pipe("users", [{"name": "Bob"}, {"name": "Ann B."}], keys=["u2", "u1"], partition=0)
    driver.pipe("orders", [{"id": 3, "user": "u1"}, {"id": 4, "user": "u2"}], partition=1)
    driver.pipe("users", [None], keys=["u1"], partition=4)
    driver.pipe("orders", [{"id": 5, "user": "u1"}], partition=0)
    assert [(r["id"], r["name"]) for r in driver.read_json("out")] == [
        (1, "Ann"), (3, "Ann B."), (4, "Bob")]
    driver.crash()  # local, not changelogged: a restarted "process" keeps it
    driver.pipe("orders", [{"id": 6, "user": "u2"}], partition=0)
    assert driver.read_json("out")[-1]["name"] == "Bob"


def test_stream_table_keeps_the_latest_row_per_key_with_exact_dtypes() -> None:
    topology = Topology("stream-table")
    profiles = topology.source("profiles", value_format="json").with_columns(
        score=pl.col("score").cast(pl.Int16))
    table = profiles.to_table("profiles")
    orders = topology.source("orders", value_format="json")
    orders.join_table(table, on="userId", suffix="_p").to_topic("out")
    driver = InProcessTestDriver(topology, partitions=2)
    for name, score in [("ann", 1), ("Ann", 2)]:
        driver.pipe("profiles", [{"name": name, "score": score}], keys=["u1"],
                    partition=partition_for(b"u1", 2))
    driver.pipe("orders", [{"userId": "u1", "name": "order"}], keys=["o1"])
    assert driver.read_json("out") == [{"userId": "u1", "name": "order", "score": 2,
                                        "name_p": "Ann"}]
    store = driver.store("profiles", partition_for(b"u1", 2))
    decoded = driver.decode_avro(list(store.values()))
    assert decoded.schema == pl.Schema({"name": pl.String, "score": pl.Int32})


def test_declaration_errors_are_topology_errors() -> None:
    topology = Topology("bad")
    table = topology.table("users", store="users", value_format="json")
    orders = topology.source("orders", value_format="json")
    with pytest.raises(TopologyError, match="versioned"):
        orders.join_table(table, as_of="event_time")
    with pytest.raises(TopologyError, match="used twice"):
        topology.table("users2", store="users", value_format="json")
    with pytest.raises(TopologyError, match="used twice"):
        orders.to_table("users")
    with pytest.raises(TopologyError, match="source twice"):
        topology.global_table("orders", store="g")
    with pytest.raises(TopologyError, match="how"):
        orders.join_table(table, how="outer")  # type: ignore[arg-type]
    other = Topology("other")
    foreign = other.table("t", store="t", value_format="json")
    with pytest.raises(TopologyError, match="belongs to topology"):
        orders.join_table(foreign)
    glob = topology.global_table("g", store="g", value_format="json")
    with pytest.raises(TopologyError, match="versioned"):
        orders.join_table(glob, as_of="event_time")
    with pytest.raises(TopologyError, match="versioned"):
        topology.table("v", store="v", versioned="soon")


def test_unequal_partition_counts_of_a_co_partitioned_join_are_refused() -> None:
    topology = Topology("copart")
    table = topology.table("users", store="users", value_format="json")
    topology.source("orders", value_format="json").join_table(table).to_topic("out")
    assert topology.copartition_groups() == [frozenset({"users", "orders"})]
    with pytest.raises(TopologyError, match="differ in partitions"):
        InProcessTestDriver(topology, partitions={"users": 3, "orders": 4})


def test_repartition_topic_of_a_join_takes_the_table_partition_count() -> None:
    topology, out = users_orders()
    driver = InProcessTestDriver(topology, partitions={"users": 3, "orders": 5})
    assert driver._counts["users-join_table-repartition"] == 3
    pipe_user(driver, "u7", {"name": "Zed"}, partitions=3)
    driver.pipe("orders", [{"userId": "u7"}], partition=4)
    assert driver.read_json(out)[0]["name"] == "Zed"

"""Fault injection on the real stack: a failure at any checkpoint step, inside a batch or inside
the revoke callback commits nothing; after the restart at-least-once loses nothing and
exactly-once shows every input exactly once with exact state.

Failures are injected with failpoints (``headwater.failpoints``): each fires once, on a chosen
hit, in the worker process, so where the run is when it fails is decided by the test, not by
timing. ``--commit-every-records`` makes the number of checkpoints a function of the input.
"""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from tests.e2e.runtime_support import (
    IDLE,
    Inputs,
    Job,
    kill_group,
    merge,
    produce_events,
    read_topic,
    wait_for_output,
)

pytestmark = pytest.mark.e2e

CHECKPOINT_EVERY = ["--batch-size", "500", "--commit-every-records", "2000"]


def _job(request, guarantee: str, tmp_path) -> Job:
    fx = request.getfixturevalue
    job = Job(fx("new_topic"), fx("unique_name"), tmp_path, fx("kafka_bootstrap"),
              fx("schema_registry_url"), guarantee=guarantee)
    job.env.update({"HEADWATER_RESTART_BACKOFF_MS": "200",
                    "HEADWATER_FAILPOINTS_FIRED": str(tmp_path / "fired")})
    return job


def echoed_ids(job: Job) -> list[int]:
    return sorted(int(m.value().split(b":")[1].rstrip(b"}")) for m in read_topic(job.config, job.echo))


def assert_outcome(job: Job, expected: Inputs) -> None:
    """Exactly-once: every input once, counts exact. At-least-once: nothing lost."""
    ids = echoed_ids(job)
    if job.env["HEADWATER_PROCESSING_GUARANTEE"] == "exactly-once":
        assert ids == expected.ids, job.log_tail()
        job.assert_exact(expected)
    else:
        assert set(ids) == set(expected.ids), job.log_tail()
        final = job.final_counts()
        assert set(final) == set(expected.counts)
        assert all(final[k] >= n for k, n in expected.counts.items()), job.log_tail()


def fired(job: Job, tmp_path, name: str) -> None:
    assert (tmp_path / "fired" / name).exists(), f"failpoint {name} never fired\n{job.log_tail()}"
    assert "failed" in job.log.read_text()


STEPS = [
    "batch.after_operators",
    "checkpoint.after_changelogs",
    "checkpoint.after_flush_sinks",
    "checkpoint.after_flush",
    "checkpoint.after_commit",
    "checkpoint.after_write_stores",
]


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_checkpoint_step_commits_nothing_and_the_restart_is_exact(
    request, tmp_path, step: str, guarantee: str
) -> None:
    job = _job(request, guarantee, tmp_path)
    # exactly-once crashes with kill -9 (nothing runs after it); at-least-once raises, which
    # also exercises the close path that used to commit after a failed checkpoint
    action = "kill" if guarantee == "exactly-once" else "raise"
    job.env["HEADWATER_FAILPOINTS"] = f"{step}={action}@3"
    expected = produce_events(job.config, job.input, 20_000, keys=97)
    job.run(*IDLE, *CHECKPOINT_EVERY)
    fired(job, tmp_path, step)
    assert_outcome(job, expected)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_failure_inside_the_revoke_callback_commits_nothing(request, tmp_path, guarantee) -> None:
    job = _job(request, guarantee, tmp_path)
    first = produce_events(job.config, job.input, 10_000, keys=97)
    # a long interval: when the second worker joins, the first holds uncommitted work
    slow = {"HEADWATER_COMMIT_INTERVAL_MS": "600000",
            "HEADWATER_FAILPOINTS": "rebalance.on_revoke=raise@1"}
    first_worker = job.run("--batch-size", "500", "--worker-id-base", "0", "--until-idle", "15",
                           wait=False, env=slow)
    wait_for_output(job.config, job.echo, 2_000)
    second_worker = job.run("--batch-size", "500", "--worker-id-base", "1", "--until-idle", "15",
                            wait=False)
    second = produce_events(job.config, job.input, 5_000, keys=97, start_id=10_000)
    assert first_worker.wait(180) == 0, job.log_tail()
    assert second_worker.wait(180) == 0, job.log_tail()
    fired(job, tmp_path, "rebalance.on_revoke")
    assert_outcome(job, merge(first, second))


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_an_output_topic_deleted_mid_run_fails_the_worker_and_nothing_is_lost(
    request, tmp_path, guarantee
) -> None:
    job = _job(request, guarantee, tmp_path)
    job.env["HEADWATER_TRANSIENT_RETRY_MS"] = "3000"
    first = produce_events(job.config, job.input, 5_000, keys=97)
    proc = job.run("--batch-size", "500", "--until-idle", "20", wait=False)
    wait_for_output(job.config, job.echo, 5_000)
    admin = AdminClient(job.config)
    admin.delete_topics([job.output])[job.output].result(30)
    second = produce_events(job.config, job.input, 5_000, keys=97, start_id=5_000)
    assert proc.wait(240) == 0, job.log_tail()
    log = job.log.read_text()
    # the deliveries (or the produce calls) failed, the worker failed, its successor recreated
    # the output at start and re-processed everything after the last commit
    assert "worker failed" in log and "created output topic" in log, job.log_tail()
    expected = merge(first, second)
    ids = echoed_ids(job)
    if guarantee == "exactly-once":
        assert ids == expected.ids
        job.assert_exact(expected)  # the recreated output ends with every key's exact count
    else:
        assert set(ids) == set(expected.ids)
        assert set(job.final_counts()) == set(expected.counts)


def test_a_missing_output_topic_is_created_at_start(request, tmp_path) -> None:
    job = _job(request, "at-least-once", tmp_path)
    admin = AdminClient(job.config)
    admin.delete_topics([job.output])[job.output].result(30)
    expected = produce_events(job.config, job.input, 3_000, keys=97)
    job.run(*IDLE)
    job.assert_exact(expected)


def test_a_missing_output_topic_fails_at_start_naming_it_when_auto_create_is_off(
    request, tmp_path
) -> None:
    job = _job(request, "at-least-once", tmp_path)
    admin = AdminClient(job.config)
    admin.delete_topics([job.output])[job.output].result(30)
    job.env["HEADWATER_AUTO_CREATE_TOPICS"] = "false"
    produce_events(job.config, job.input, 100)
    proc = job.run(*IDLE, wait=False)
    assert proc.wait(120) == 2, job.log_tail()
    assert job.output in job.log.read_text() and "auto_create_topics" in job.log.read_text()


def test_a_worker_that_keeps_failing_at_the_same_offsets_is_given_up_with_its_cause(
    request, tmp_path
) -> None:
    job = _job(request, "at-least-once", tmp_path)
    job.env.update({"HEADWATER_MAX_RESTARTS": "2", "HEADWATER_TRANSIENT_RETRY_MS": "2000"})
    # an output that refuses every record: the broker rejects records above max.message.bytes
    admin = AdminClient(job.config)
    resource = ConfigResource("topic", job.echo, incremental_configs=[
        ConfigEntry("max.message.bytes", "10", incremental_operation=AlterConfigOpType.SET)])
    list(admin.incremental_alter_configs([resource]).values())[0].result(30)
    produce_events(job.config, job.input, 1_000)
    proc = job.run(*IDLE, wait=False)
    assert proc.wait(180) == 1, job.log_tail()
    log = job.log.read_text()
    assert "giving up (max_restarts=2)" in log, job.log_tail()
    assert "MSG_SIZE_TOO_LARGE" in log or "too large" in log.lower(), job.log_tail()
    assert log.count("failed (") == 2  # two restarts, the third failure gives up
    group = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(job.application_id)])
    committed = group[job.application_id].result(30).topic_partitions
    assert all(tp.offset < 0 for tp in committed), committed  # nothing was ever committed


def test_kill_9_of_the_supervisor_group_under_at_least_once_loses_nothing(request, tmp_path):
    job = _job(request, "at-least-once", tmp_path)
    expected = produce_events(job.config, job.input, 20_000, keys=97)
    proc = job.run(*CHECKPOINT_EVERY, wait=False)
    wait_for_output(job.config, job.echo, 5_000)
    kill_group(proc, signal.SIGKILL)
    job.run(*IDLE)
    assert_outcome(job, expected)


def test_each_partitions_stream_time_is_committed_with_its_offset(request, tmp_path) -> None:
    job = _job(request, "exactly-once", tmp_path)
    produce_events(job.config, job.input, 4_000, keys=97)
    job.run(*IDLE)
    latest: dict[int, int] = {}
    for msg in read_topic(job.config, job.input):
        latest[msg.partition()] = max(latest.get(msg.partition(), 0), msg.timestamp()[1])
    admin = AdminClient(job.config)
    group = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(job.application_id)])
    committed = group[job.application_id].result(30).topic_partitions
    stream_times = {tp.partition: orjson.loads(tp.metadata)["st"] for tp in committed
                    if tp.topic == job.input}
    assert stream_times == latest


def _group_members(admin: AdminClient, group: str) -> int:
    return len(admin.describe_consumer_groups([group])[group].result(30).members)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_worker_stalled_past_its_session_drops_the_lost_work_and_reprocesses_it(
    request, tmp_path, guarantee
) -> None:
    from tests.e2e.test_chaos import worker_pids

    job = _job(request, guarantee, tmp_path)
    first = produce_events(job.config, job.input, 10_000, keys=97)
    # a long interval: the stalled worker holds uncommitted work when it loses its partitions
    proc = job.run("--batch-size", "500", "--until-idle", "15", wait=False,
                   env={"HEADWATER_COMMIT_INTERVAL_MS": "600000"})
    admin = AdminClient(job.config)
    wait_for_output(job.config, job.echo, 2_000)
    (worker,) = worker_pids(proc.pid)
    os.kill(worker, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while _group_members(admin, job.application_id):  # the broker expires its session
            assert time.monotonic() < deadline, "the stalled member was never expired"
            time.sleep(0.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    second = produce_events(job.config, job.input, 5_000, keys=97, start_id=10_000)
    assert proc.wait(180) == 0, job.log_tail()
    assert "lost " in job.log.read_text(), job.log_tail()
    assert_outcome(job, merge(first, second))


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
@pytest.mark.parametrize("step", ["checkpoint.after_flush_sinks", "checkpoint.after_commit"])
def test_a_two_phase_sink_keeps_what_a_failed_checkpoint_may_have_committed(
    request, tmp_path, step: str, guarantee: str
) -> None:
    """A failure before the commit request discards the staged files; a failure after it (the
    commit happened, or its outcome is unknown) leaves them for the successor's recover, which
    publishes exactly those of committed checkpoints: every input ends up in the directory,
    exactly once under exactly-once."""
    import polars as pl

    job = _job(request, guarantee, tmp_path)
    job.topology = "tests.topologies:count_per_key_to_directory"
    directory = tmp_path / "sink"
    job.env.update({"HW_TEST_SINK_DIR": str(directory), "HEADWATER_FAILPOINTS": f"{step}=raise@3"})
    expected = produce_events(job.config, job.input, 20_000, keys=97)
    job.run(*IDLE, *CHECKPOINT_EVERY)
    fired(job, tmp_path, step)
    published = sorted(directory.glob("*.parquet"))
    ids = sorted(pl.concat([pl.read_parquet(p) for p in published])["id"].to_list())
    assert not list((directory / "_staging").glob("*.parquet")), "staged files left behind"
    if guarantee == "exactly-once":
        assert ids == expected.ids, job.log_tail()
        job.assert_exact(expected)
    else:
        assert set(ids) == set(expected.ids), job.log_tail()

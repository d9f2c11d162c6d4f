"""`headwater run` end to end on the real broker: exact state across restarts, crashes,
state loss and rebalances; exactly-once outputs; graceful shutdown; poison pills to the DLQ."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.e2e.runtime_support import (
    IDLE,
    EventFeeder,
    Job,
    kill_group,
    latest_by_key,
    merge,
    produce_events,
    read_topic,
    wait_for_output,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url) -> Job:
    return Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url)


@pytest.fixture
def eos_job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url) -> Job:
    return Job(new_topic, unique_name, tmp_path, kafka_bootstrap, schema_registry_url,
               guarantee="exactly-once")


def test_counts_per_key_equal_an_independent_count(job: Job) -> None:
    expected = produce_events(job.config, job.input, 20_000, keys=97)
    job.run(*IDLE)
    job.assert_exact(expected)


def test_sigterm_checkpoints_and_exits_0_then_a_restart_continues_exactly(job: Job) -> None:
    later = 2_000
    with EventFeeder(job.config, job.input) as feeder:  # input keeps arriving until after the exit
        proc = job.run("--batch-size", "300", wait=False)
        wait_for_output(job.config, job.echo, 3_000)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, job.log_tail()
        stopped_in = time.monotonic() - began
        produced = feeder.stop(more=later)  # written after the exit: only the restart can see them
    assert stopped_in < 30, "a graceful stop is prompt (the bound is generous for a loaded CI)"
    echoed = len(read_topic(job.config, job.echo))
    assert 3_000 <= echoed <= len(produced.ids) - later, "stopped mid-stream"

    job.run(*IDLE)
    job.assert_exact(produced)


def test_state_is_restored_from_the_changelog_when_the_local_dir_is_lost(job: Job) -> None:
    first = produce_events(job.config, job.input, 10_000)
    job.run(*IDLE)
    assert any(job.state_dir.iterdir())
    shutil.rmtree(job.state_dir)

    second = produce_events(job.config, job.input, 10_000, start_id=10_000)
    job.run(*IDLE)
    job.assert_exact(merge(first, second))
    assert "restored" in job.log.read_text()


def test_exactly_once_survives_kill_9(eos_job: Job) -> None:
    job = eos_job
    expected = produce_events(job.config, job.input, 30_000)
    proc = job.run("--batch-size", "300", wait=False)
    wait_for_output(job.config, job.echo, 5_000)
    kill_group(proc, signal.SIGKILL)

    uncommitted = len(read_topic(job.config, job.echo, committed_only=False))
    job.run(*IDLE)

    echoed = sorted(int(m.value().split(b":")[1].rstrip(b"}")) for m in read_topic(job.config, job.echo))
    assert echoed == expected.ids  # every input exactly once, as a read_committed consumer sees it
    job.assert_exact(expected)
    everything = len(read_topic(job.config, job.echo, committed_only=False))
    assert everything >= uncommitted >= 5_000  # the killed run's records are in the log, aborted


def test_partitions_and_their_state_move_when_a_worker_leaves(job: Job) -> None:
    first = produce_events(job.config, job.input, 20_000)
    staying = job.run("--batch-size", "300", "--worker-id-base", "0", "--until-idle", "20",
                      wait=False)
    leaving = job.run("--batch-size", "300", "--worker-id-base", "1", wait=False)
    wait_for_output(job.config, job.echo, 4_000)
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(30) == 0, job.log_tail()

    second = produce_events(job.config, job.input, 5_000, start_id=20_000)
    assert staying.wait(120) == 0, job.log_tail()
    job.assert_exact(merge(first, second))
    log = job.log.read_text()
    assert "worker-1" in log and "worker-0" in log

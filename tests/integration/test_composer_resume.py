"""Real Composer runs over StreamMixDataset: resume, ranks, workers, kills, remote cache.

Each test launches the training script in fresh processes (``composer -n 2`` for two ranks
on gloo/CPU) and compares the (domain, uid) of every sample of every global batch.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runs import TOTAL, checkpoint, global_batches, train  # noqa: E402


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[int, list]:
    run = tmp_path_factory.mktemp("reference") / "run"
    train(data, run, "--save-interval", "4")
    batches = global_batches(run)
    assert sorted(batches) == list(range(TOTAL))
    return batches


def test_checkpoint_and_resume_in_a_new_process_equals_uninterrupted(data, reference, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(data, first, "--save-interval", "4", batches=TOTAL // 2)
    train(data, second, "--load", checkpoint(first, TOTAL // 2))
    joined = {**global_batches(first), **global_batches(second)}
    assert joined == reference


def test_two_ranks_and_elastic_resume_on_one_rank(data, reference, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    train(data, two, "--save-interval", "4", ranks=2, batches=TOTAL // 2)
    two_ranks = global_batches(two)
    assert two_ranks == {b: reference[b] for b in range(TOTAL // 2)}
    train(data, one, "--load", checkpoint(two, TOTAL // 2))
    assert global_batches(one) == {b: reference[b] for b in range(TOTAL // 2, TOTAL)}


def test_dataloader_workers_give_the_same_batches(data, reference, tmp_path):
    run = tmp_path / "workers"
    train(data, run, "--workers", "2", "--save-interval", "100")
    assert global_batches(run) == reference


def test_sigkilled_run_resumed_from_its_last_checkpoint_follows_the_plan(data, reference,
                                                                           tmp_path):
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    proc = train(data, killed, "--save-interval", "2", "--workers", "2", wait=False)
    record = killed / "record.rank0.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if record.exists() and len(record.read_text().splitlines()) >= 5:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Composer writes a checkpoint in place and points ``latest`` at it only once it is
    # complete; the kill may land mid-write, so resume from ``latest`` as autoresume does.
    latest = killed / "checkpoints" / "latest-rank0.pt"
    assert latest.exists(), "no checkpoint was written before the kill"
    last = int(latest.resolve().name.split("-ba")[1].split("-")[0])
    train(data, resumed, "--load", str(latest.resolve()), "--workers", "2")
    seen = global_batches(killed)
    trained = {b: seen[b] for b in range(last)} | global_batches(resumed)
    assert trained == reference  # nothing lost, nothing repeated relative to the plan


def test_remote_with_small_cache_limit_trains_the_same_batches(data, reference, tmp_path):
    run = tmp_path / "remote"
    shard = max(p.stat().st_size for p in data.glob("*/shard.*.mds"))
    train(data, run, "--remote", "--cache", str(tmp_path / "cache"),
           "--cache-limit", str(6 * shard + 4096), "--save-interval", "100")
    assert global_batches(run) == reference

"""Real Composer runs that cross epochs: resume at every kind of checkpoint Composer writes.

The data has 24 samples per domain, so with a global batch of 8 an epoch is 6 batches and
an 18-batch run crosses two epoch boundaries. Checkpoints are written every 4 batches and
at every epoch end (Composer's ``EPOCH_CHECKPOINT``, written after it moved to the next
epoch; where a batch checkpoint falls on an epoch's last batch, Composer writes that one
instead, with the whole epoch counted). Online mixing is ODM deciding every 3 batches, so weights change inside epochs
and a resumed run must also restore the decisions.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from streammix.composer.history import read_history

sys.path.insert(0, str(Path(__file__).parent))
from runs import SCRIPT, epoch_checkpoint, global_batches, kill_at_batch, records, train  # noqa: E402

BATCHES = 18
ODM = ("--policy", "odm", "--policy-options", json.dumps({"interval": 3}))
SAVES = ("--save-interval", "4", "--save-epochs")


@pytest.fixture(scope="module")
def epoch_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("epoch-tokens")
    subprocess.run([sys.executable, str(SCRIPT), "make-data", str(out), "--train", "24"],
                   check=True)
    return out


def _weights(run: Path) -> list[tuple[int, list[float]]]:
    _, history = read_history(run / "history.jsonl")
    return [(r["step"], r["weights"]) for r in history]


@pytest.fixture(scope="module")
def odm_reference(epoch_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("odm-reference") / "run"
    train(epoch_data, run, *ODM, *SAVES, "--workers", "2", batches=BATCHES)
    assert sorted(global_batches(run)) == list(range(BATCHES))
    return run


@pytest.mark.parametrize("checkpoint", [(1, 6), (1, 8), (1, 12)],
                         ids=["epoch-end", "mid-epoch-then-boundary", "last-batch-of-epoch"])
def test_resume_across_epochs_equals_the_uninterrupted_run(epoch_data, odm_reference, tmp_path,
                                                           checkpoint) -> None:
    epoch, batch = checkpoint
    path = epoch_checkpoint(odm_reference, epoch, batch)
    assert Path(path).exists(), sorted(p.name for p in (odm_reference / "checkpoints").iterdir())
    resumed = tmp_path / "resumed"
    train(epoch_data, resumed, *ODM, *SAVES, "--workers", "2", "--load", path, batches=BATCHES)
    reference = global_batches(odm_reference)
    after = global_batches(resumed)
    assert sorted(after) == list(range(batch, BATCHES))
    assert after == {b: reference[b] for b in after}
    assert _weights(resumed) == _weights(odm_reference)


def _killed_and_resumed(data: Path, run: Path, kills: list[int], *extra: str) -> None:
    """Train on 2 ranks, SIGKILL at each batch of ``kills``, resume from the latest checkpoint."""
    load: tuple[str, ...] = ()
    for kill in kills:
        record = run / "record.rank0.jsonl"
        done = len(record.read_text().splitlines()) if record.exists() else 0
        proc = train(data, run, *extra, *load, ranks=2, batches=BATCHES, wait=False)
        kill_at_batch(proc, run, kill, skip_lines=done)
        latest = run / "checkpoints" / "latest-rank0.pt"
        assert latest.exists(), f"no checkpoint before the kill at batch {kill}"
        load = ("--load", str(latest.resolve()))
    train(data, run, *extra, *load, ranks=2, batches=BATCHES)


def _check_against(run: Path, reference: Path, *, online: bool = True) -> None:
    planned = global_batches(reference)
    served = records(run)
    assert sorted(served) == list(range(BATCHES))
    for batch, copies in served.items():
        for copy in copies:
            assert copy == planned[batch], f"batch {batch} differs from the uninterrupted run"
    if online:
        assert _weights(run) == _weights(reference)


@pytest.fixture(scope="module")
def odm_two_ranks(epoch_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("odm-two-ranks") / "run"
    train(epoch_data, run, *ODM, *SAVES, "--workers", "2", ranks=2, batches=BATCHES)
    return run


def test_two_ranks_killed_at_an_epoch_end_and_mid_epoch(epoch_data, odm_two_ranks,
                                                        tmp_path) -> None:
    """Killed at batch 7 (latest checkpoint: the end of epoch 0) and at batch 10 (latest:
    batch 8, so the resume crosses the boundary at 12)."""
    run = tmp_path / "killed"
    _killed_and_resumed(epoch_data, run, [7, 10], *ODM, *SAVES, "--workers", "2")
    _check_against(run, odm_two_ranks)


@pytest.mark.slow
def test_two_ranks_killed_at_five_random_batches(epoch_data, odm_two_ranks, tmp_path) -> None:
    kills = sorted(random.Random(2024).sample(range(3, BATCHES), 5))
    run = tmp_path / "killed5"
    _killed_and_resumed(epoch_data, run, kills, *ODM, *SAVES, "--workers", "2")
    _check_against(run, odm_two_ranks)


def test_two_ranks_to_one_across_an_epoch_boundary(epoch_data, tmp_path) -> None:
    """Static weights (decisions on 2 ranks and on 1 differ numerically, the order does not)."""
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    train(epoch_data, one, "--workers", "2", "--save-interval", "100", batches=BATCHES)
    train(epoch_data, two, *SAVES, ranks=2, batches=8)
    train(epoch_data, resumed, "--workers", "2", "--save-interval", "100",
          "--load", epoch_checkpoint(two, 1, 6), batches=BATCHES)
    reference = global_batches(one)
    assert global_batches(two) == {b: reference[b] for b in range(8)}
    assert global_batches(resumed) == {b: reference[b] for b in range(6, BATCHES)}


def _find(state: object, key: str) -> list:
    """Every value stored under ``key`` anywhere in a nested checkpoint."""
    if isinstance(state, dict):
        found = [state[key]] if key in state else []
        return found + [v for value in state.values() for v in _find(value, key)]
    if isinstance(state, list | tuple):
        return [v for value in state for v in _find(value, key)]
    return []


def test_one_pass_epochs_two_ranks_killed_at_an_epoch_end_and_mid_epoch(epoch_data,
                                                                        tmp_path) -> None:
    """Natural proportions with 2 canonical nodes (one-pass epochs): 2 ranks with DataLoader
    workers, SIGKILLed at batch 7 (latest checkpoint: the end of epoch 0) and at batch 10
    (latest: batch 8), resumed each time, serve the uninterrupted 1-rank run's batches, and
    every epoch serves each sample once."""
    import torch

    nodes = ("--canonical-nodes", "2")
    reference, run = tmp_path / "reference", tmp_path / "killed"
    train(epoch_data, reference, *nodes, *SAVES, "--workers", "2", batches=BATCHES)
    checkpoint = torch.load(run_checkpoint := reference / "checkpoints" / "latest-rank0.pt",
                            map_location="cpu", weights_only=False)
    assert set(_find(checkpoint, "epoch_order")) == {"one_pass"}, run_checkpoint
    _killed_and_resumed(epoch_data, run, [7, 10], *nodes, *SAVES, "--workers", "2")
    _check_against(run, reference, online=False)
    planned = global_batches(reference)
    epoch_size = int(_find(checkpoint, "epoch_size")[0])
    assert 0 < epoch_size <= BATCHES * 8 // 2  # at least two whole epochs are checked
    samples = [s for b in range(BATCHES) for s in planned[b]]
    for start in range(0, len(samples) - epoch_size + 1, epoch_size):
        epoch = samples[start:start + epoch_size]
        assert len(set(map(str, epoch))) == epoch_size, "an epoch served a sample twice"

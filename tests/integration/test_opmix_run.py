"""OP-Mix in real Composer runs: weight moves off the noise domain, resume, rank agreement.

Two domains (composer_train.py's data): ``pattern`` (learnable counting sequences) and
``noise`` (uniform random tokens, whose loss cannot go below log(vocab)).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streammix.composer.history import read_history

sys.path.insert(0, str(Path(__file__).parent))
from runs import checkpoint, free_port, global_batches  # noqa: E402

SCRIPT = Path(__file__).with_name("opmix_train.py")
BATCHES = 30  # the decision point is 20% of it: batch 6


def train(data: Path, run: Path, *extra: str, ranks: int = 1, batches: int = BATCHES,
          expect: int = 0) -> None:
    args = ["--data", str(data), "--run", str(run), "--batches", str(batches), "--probe-steps",
            "10", *extra]
    if ranks == 1:
        cmd = [sys.executable, str(SCRIPT), *args]
    else:
        cmd = [sys.executable, "-m", "composer.cli.launcher", "-n", str(ranks),
               "--master_port", str(free_port()), str(SCRIPT), *args]
    log = run.parent / f"{run.name}.log"
    with open(log, "w") as stream:
        code = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT, timeout=600,
                              env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
    assert code == expect, log.read_text()[-4000:]


def history(run: Path) -> list[dict]:
    return read_history(run / "history.jsonl")[1]


@pytest.fixture(scope="module")
def opmix_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("opmix") / "run"
    train(data, run)
    return run


def test_opmix_moves_weight_away_from_the_noise_domain(opmix_run) -> None:
    records = history(opmix_run)
    assert [(r["step"], r["phase"]) for r in records] == [(0, "prior"), (6, "opmix")]
    assert records[0]["weights"] == [0.5, 0.5]  # natural proportions: 160 samples each
    decision = records[1]
    pattern, noise = decision["weights"]
    assert pattern > 0.55 > 0.45 > noise, decision
    assert decision["num_steps"] == BATCHES - 6
    assert len(decision["proxy_mixtures"]) == 2 + 4 and decision["info"]["kkt_residual"] < 1e-8
    info = decision["info"]
    assert info["probe_train_steps"] == 2 * 10
    # shares of the run's 30 x 8 training samples: 2 x 10 x 8 LoRA samples, and 7 forwards
    # (snapshot + 6 proxies) over 2 x 16 held-out samples at a third of a training sample each
    assert info["probe_train_share"] == pytest.approx(160 / 240)
    assert info["probe_eval_share"] == pytest.approx(7 * 32 / (3 * 240))
    assert info["probe_compute_share"] == pytest.approx(160 / 240 + 7 * 32 / 720)
    # the batches after the decision follow the published weights
    batches = global_batches(opmix_run)
    assert sorted(batches) == list(range(BATCHES))
    after = [d for b in range(6, BATCHES) for d, _ in batches[b]]
    assert abs(after.count(1) / len(after) - noise) < 0.05


@pytest.mark.slow
def test_killed_while_probing_resumes_to_the_same_decision_and_order(data, opmix_run,
                                                                    tmp_path) -> None:
    """SIGKILL while the proxies are evaluated (batch 6's BATCH_END); the run restarts from
    its last checkpoint (batch 5), probes again from the same state and decides the same."""
    first, second = tmp_path / "first", tmp_path / "second"
    train(data, first, "--save-interval", "5", "--kill-in-probe", expect=-9)
    assert not (first / "history.jsonl").exists() or len(history(first)) == 1
    train(data, second, "--load", checkpoint(first, 5))
    assert history(second) == history(opmix_run)
    joined = {**{b: s for b, s in global_batches(first).items() if b < 5},
              **global_batches(second)}
    assert joined == global_batches(opmix_run)


@pytest.mark.slow
def test_two_ranks_publish_identical_weights(data, tmp_path) -> None:
    """Rank 1 is fed mirrored probe results (``--skew-rank1``), which alone would favour the
    noise; both ranks still publish rank 0's decision, which favours the pattern."""
    run = tmp_path / "two"
    train(data, run, "--skew-rank1", ranks=2)
    updates = [json.loads(p.read_text()) for p in sorted(run.glob("record.rank*.updates.json"))]
    assert len(updates) == 2 and len(updates[0]) == 2
    assert updates[0] == updates[1]
    assert updates[0][1][1][0] > updates[0][1][1][1]  # pattern over noise on 2 ranks too


@pytest.mark.slow
def test_probe_every_decides_again_from_the_current_weights(data, tmp_path) -> None:
    run = tmp_path / "every"
    train(data, run, "--probe-every", "8")
    records = history(run)
    assert [(r["step"], r["phase"], r["num_steps"]) for r in records] == [
        (0, "prior", 6), (6, "opmix", 8), (14, "opmix", 8), (22, "opmix", 8)]
    for record in records[1:]:
        assert record["weights"][0] > record["weights"][1], record
        assert record["info"]["round"] == records.index(record) - 1
    updates = json.loads(next(run.glob("record.rank0.updates.json")).read_text())
    assert [start for start, _ in updates] == [0, 6, 14, 22]

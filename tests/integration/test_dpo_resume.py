"""DPO with SimpleMix weights in real Composer runs on 2 ranks, resumed in the middle.

An uninterrupted 2-rank run and a 2-rank run stopped at a checkpoint and resumed in new
processes must train the same global batches (same pairs, 0.5/0.5 over the two domains),
with the same losses and the same final policy; the reference never changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runs import free_port  # noqa: E402

SCRIPT = Path(__file__).with_name("dpo_train.py")
TOTAL = 8


def _train(data: Path, run: Path, *extra: str, batches: int) -> None:
    cmd = [sys.executable, "-m", "composer.cli.launcher", "-n", "2", "--master_port",
           str(free_port()), str(SCRIPT), "train", "--data", str(data), "--run", str(run),
           "--batches", str(batches), *extra]
    log = run.parent / f"{run.name}.log"
    with open(log, "w") as stream:
        code = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT, timeout=600,
                              env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
    assert code == 0, log.read_text()[-4000:]


def _batches(run: Path) -> dict[int, dict]:
    """Global batch -> {"samples": all ranks' pairs in rank order, "loss": per-rank losses}."""
    joined: dict[int, dict] = {}
    for path in sorted(run.glob("record.rank*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            entry = joined.setdefault(record["batch"], {"samples": [], "loss": []})
            entry["samples"] += record["samples"]
            entry["loss"].append(record["loss"])
    return joined


@pytest.mark.slow
def test_two_rank_dpo_resumed_in_the_middle_equals_uninterrupted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(SCRIPT), "make-data", str(data)], check=True)
    whole, first, second = tmp_path / "whole", tmp_path / "first", tmp_path / "second"
    _train(data, whole, batches=TOTAL)
    _train(data, first, batches=TOTAL // 2)
    _train(data, second, "--load", str(first / "checkpoints" / f"ep0-ba{TOTAL // 2}-rank0.pt"),
           batches=TOTAL)

    reference = _batches(whole)
    assert sorted(reference) == list(range(TOTAL))
    for batch in reference.values():
        domains = [domain for domain, _ in batch["samples"]]
        assert len(domains) == 8 and domains.count(0) == domains.count(1) == 4  # 0.5/0.5
    resumed = {**_batches(first), **_batches(second)}
    assert sorted(resumed) == list(range(TOTAL))
    for index in range(TOTAL):
        assert resumed[index]["samples"] == reference[index]["samples"], index
        assert resumed[index]["loss"] == pytest.approx(reference[index]["loss"], abs=1e-5)
    assert reference[0]["loss"] == pytest.approx([0.6931472] * 2, abs=1e-5)  # log 2 at start

    end_whole = json.loads((whole / "params.json").read_text())
    end_resumed = json.loads((second / "params.json").read_text())
    assert end_resumed["sums"]["policy"] == pytest.approx(end_whole["sums"]["policy"], rel=1e-6)
    assert end_resumed["sums"]["reference"] == end_whole["sums"]["reference"]
    assert end_whole["sums"]["policy"] != end_whole["sums"]["reference"]
    assert set(end_whole["metrics"]) >= {"DPORewardAccuracy", "DPORewardAccuracy/on",
                                         "DPORewardMargin/off"}

"""The pathology mixing benchmark: its corpus generators, statistics and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_pathology",
                                                  ROOT / "benchmarks" / "bench_pathology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()
SOURCES = ["alpha beta gamma delta epsilon zeta eta theta iota kappa " * 20,
           "one two three four five six seven eight nine ten " * 20]


def test_near_duplicates_are_near_copies_of_their_sources() -> None:
    copies = bench.near_duplicates(SOURCES, 40, seed=3, change_rate=0.05)
    assert len(copies) == 40
    changed = []
    for i, copy in enumerate(copies):
        base, words = SOURCES[i % 2].split(" "), copy.split(" ")
        assert len(words) == len(base)
        assert set(words) <= set(base)  # replacements come from the same source
        changed.append(sum(a != b for a, b in zip(base, words)) / len(base))
    assert 0 < sum(changed) / len(changed) < 0.05  # at most change_rate, some changed
    assert bench.near_duplicates(SOURCES, 40, seed=3, change_rate=0.05) == copies
    assert bench.near_duplicates(SOURCES, 40, seed=4, change_rate=0.05) != copies


def test_boilerplate_pages_are_mostly_template() -> None:
    texts = ["The first sentence. The second one. A third."] * 3
    pages = bench.boilerplate_documents(texts, 10, seed=1)
    assert len(pages) == 10 and pages == bench.boilerplate_documents(texts, 10, seed=1)
    for page in pages:
        assert "All rights reserved" in page and "We use cookies" in page
        assert "The first sentence." in page and "A third" not in page
        body = [line for line in page.split("\n") if line.startswith("The first")]
        assert len(body) == 1 and len(body[0]) < len(page) / 3


def test_t_interval_matches_a_hand_computation() -> None:
    mean, low, high = bench.t_interval([-0.1, -0.3, -0.2])
    # mean -0.2, sd 0.1, t(0.975, 2) = 4.302653, half width 4.302653 * 0.1 / sqrt(3)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(-0.2)
    assert (low, high) == (pytest.approx(-0.2 - half, abs=1e-6), pytest.approx(-0.2 + half,
                                                                              abs=1e-6))
    assert math.isnan(bench.t_interval([0.5])[1])


def test_mean_weights_weighs_decisions_by_the_steps_they_trained() -> None:
    history = [{"step": 0, "num_steps": 10, "weights": [1.0, 0.0]},
               {"step": 10, "num_steps": 0, "weights": [0.5, 0.5]},  # probe without training
               {"step": 10, "num_steps": 30, "weights": [0.0, 1.0]},
               {"step": 40, "num_steps": 10, "weights": [1.0, 0.0]}]  # after the run's end
    # a run of 30 steps: 10 steps on [1, 0], the last 20 on [0, 1] (cut at the end)
    assert bench.mean_weights(history, 30) == pytest.approx([1 / 3, 2 / 3])
    assert bench.mean_weights([], 30) is None


def test_paired_summary_says_which_recipes_differ() -> None:
    results = []
    for seed, base in enumerate([5.0, 5.2, 4.9]):
        for recipe, delta in (("stratified", 0.0), ("natural", 0.3 + 0.01 * seed),
                              ("odm", 0.02 * (-1) ** seed)):
            results.append({"recipe": recipe, "seed": seed, "domains": ["code"],
                            "held_out_loss": {"code": base + delta},
                            "target_loss": base + delta, "train_seconds": 1.0})
    table = bench.summarize(results, [0, 1, 2])
    against_stratified = table.split("against natural")[0].splitlines()
    natural = next(line for line in against_stratified if line.startswith("| natural | 3 |"))
    assert natural == ("| natural | 3 | +0.3000, +0.3100, +0.3200 | +0.3100 | "
                       "[+0.2852, +0.3348] | worse |")
    odm = next(line for line in against_stratified if line.startswith("| odm | 3 |"))
    assert odm.endswith("| not distinguishable |")


def test_summary_reports_opmix_decision_and_probe_cost() -> None:
    info = {"probe_train_steps": 12.0, "probe_train_share": 0.5, "probe_eval_share": 0.125,
            "probe_compute_share": 0.625}
    results = [{"recipe": "stratified", "seed": 0, "domains": ["code", "junk"],
                "held_out_loss": {"code": 5.0, "junk": 4.0}, "target_loss": 5.0,
                "train_seconds": 10.0},
               {"recipe": "opmix", "seed": 0, "domains": ["code", "junk"],
                "held_out_loss": {"code": 4.9, "junk": 4.5}, "target_loss": 4.9,
                "train_seconds": 15.0,
                "decision": {"step": 4, "weights": [0.75, 0.25], "info": info}}]
    table = bench.summarize(results, [0])
    assert "| opmix | 0 | 4 | 0.750 | 0.250 | 12 | 50% | 12% | 62% |" in table
    assert "OP-Mix's wall-time overhead over static mixing" in table
    assert "15.0 s / 10.0 s = 1.50x" in table
    assert "| opmix | 1 | -0.1000 |" in table


def test_replay_points_follow_the_history_deduplicated(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "pathology_replay", ROOT / "benchmarks" / "pathology_replay.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    records = [{"step": 0, "weights": [0.5, 0.5]}, {"step": 4, "weights": [0.9, 0.1]},
               {"step": 0, "weights": [0.5, 0.5]},  # a second writer's copy
               {"step": 8, "weights": [0.2, 0.8]}, {"step": 12, "weights": [0.3, 0.7]}]
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(r) for r in [{"streammix_history": 1}, *records]))
    assert replay.replay_points(history, 12, "aioli", 2) == [
        (0, (0.5, 0.5)), (4, (0.9, 0.1)), (8, (0.2, 0.8))]
    assert replay.replay_points(history, 12, "uniform", 2) == [
        (0, (1.0, 1.0)), (4, (1.0, 1.0)), (8, (1.0, 1.0))]
    assert replay.replay_points(history, 12, "single", 2) == [(0, (1.0, 1.0))]


@pytest.mark.slow
def test_gpu_script_smoke_runs_the_whole_pipeline_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pathology.sh"), str(out), "--smoke"],
                   check=True, timeout=1800)
    results = json.loads((out / "results.json").read_text())
    assert {(r["recipe"], r["seed"]) for r in results} == {
        (recipe, seed) for recipe in bench.RECIPES for seed in bench.PRESETS["smoke"].seeds}
    preset = bench.PRESETS["smoke"]
    assert {r["tokens"] for r in results} == {preset.steps * preset.batch_size * preset.seq_len}
    # the decayed schedule was applied: after the last step every run's rate is near the floor
    assert {r["lr_schedule"] for r in results} == {"cosine"}
    assert all(r["final_lr"] < 1.25 * preset.lr_final_fraction * preset.lr for r in results)
    summary = (out / "results.md").read_text()
    assert "Paired difference of the target against stratified" in summary
    assert "preset: smoke" in (out / "machine.txt").read_text()

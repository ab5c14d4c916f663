"""Replay an online recipe's published weights without the policy (a diagnostic of bench_pathology).

For one seed of a finished ``bench_pathology.py`` output folder, train the same model on the
same build with the ``scheduled`` policy whose piecewise points are the weights an ``aioli``
run published (its ``history.jsonl``), and print the held-out target beside Aioli's and
stratified's. The model, run length and learning-rate schedule are those in the folder's
``results.md`` header (folders from before the schedule existed: a constant rate). Variants:

* ``aioli``: Aioli's own weights at Aioli's steps: no held-out evaluations, no policy; equal
  losses mean Aioli's measurements have no side effect on training;
* ``uniform``: uniform weights at Aioli's decision steps (the same piece boundaries);
* ``single``: one uniform piece (the scheduled policy's periodic re-decisions only).

    python3 benchmarks/pathology_replay.py --out /tmp/h17d-cpu --seed 0 --variant uniform
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CLEAN = ("code", "docs", "packages")


def replay_points(history: Path, steps: int, variant: str, num_domains: int
                  ) -> list[tuple[int, tuple[float, ...]]]:
    """The piecewise schedule: one point per decision step before ``steps`` (a history
    written twice by two processes at once is deduplicated by step)."""
    rows = [json.loads(line) for line in history.read_text().splitlines()[1:]]
    points = dict(sorted((int(r["step"]), tuple(r["weights"])) for r in rows
                         if int(r["step"]) < steps))
    uniform = (1.0,) * num_domains
    if variant == "single":
        return [(0, uniform)]
    if variant == "uniform":
        return [(step, uniform) for step in points]
    return sorted(points.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="bench_pathology's folder")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--variant", choices=("aioli", "uniform", "single"), default="aioli")
    parser.add_argument("--recipe", default="aioli", help="the online run to replay")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from streammix.composer.experiment import ExperimentConfig, run_experiment
    from streammix.format.manifest import read_manifest

    preset = json.loads((args.out / "results.md").read_text().split("\n", 1)[0]
                        .removeprefix("preset cpu: "))
    torch.set_num_threads(1)
    build = args.out / "build"
    names = read_manifest(build).domain_names
    steps = preset["steps"]
    points = replay_points(args.out / f"run-{args.recipe}-seed{args.seed}" / "history.jsonl",
                           steps, args.variant, len(names))
    tokenizer = AutoTokenizer.from_pretrained(str(args.out / "tokenizer"), local_files_only=True)
    result = run_experiment(ExperimentConfig(
        build=build, out=args.out / f"replay-{args.variant}-seed{args.seed}", steps=steps,
        seed=args.seed, seq_len=preset["seq_len"], batch_size=preset["batch_size"],
        vocab_size=len(tokenizer), pad_id=int(tokenizer.pad_token_id),
        n_layer=preset["n_layer"], n_embd=preset["n_embd"], n_head=preset["n_head"],
        lr=preset["lr"], lr_schedule=preset.get("lr_schedule", "constant"),
        lr_warmup_fraction=preset.get("lr_warmup_fraction", 0.0),
        lr_final_fraction=preset.get("lr_final_fraction", 0.1), val_samples=preset["val_samples"], packed=True,
        separator_id=int(tokenizer.eos_token_id), device="cpu", precision=None,
        policy="scheduled", weights={n: 1.0 for n in names},
        policy_options={"points": points, "mode": "piecewise"}))
    target = statistics.fmean(result["held_out_loss"][n] for n in CLEAN)
    peers = {r: json.loads((args.out / f"result-{r}-seed{args.seed}.json").read_text())
             for r in (args.recipe, "stratified")}
    print(json.dumps({"seed": args.seed, "variant": args.variant, "pieces": len(points),
                      "lr_schedule": result["lr_schedule"],
                      "target": target,
                      **{f"{r}_target": peers[r]["target_loss"] for r in peers},
                      "held_out_loss": result["held_out_loss"]}))


if __name__ == "__main__":
    main()

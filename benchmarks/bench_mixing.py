"""Does the mixing improve the model? Held-out perplexity per domain under each recipe.

On a real three-domain corpus built from files on this machine (the demo corpus: Python
standard-library code, Python documentation topics, installed packages' descriptions), the
same model, token budget and seeds are trained under each recipe:

* ``stratified``: uniform static domain weights;
* ``natural``: static weights proportional to domain sizes;
* ``aioli``: Aioli online mixing (probe rounds sized to the short run, see AIOLI below);
* ``odm``: ODM (Exp3 on per-domain training loss);
* ``opmix``: OP-Mix (LoRA probes of the model at 20% of the run, interpolated into proxies,
  a log-linear law per domain and the KL-regularized proposer; see OPMIX_PROBE below),
  then the proposed weights for the rest of the run;
* ``samplemix-a0``, ``samplemix-a0.8``, ``samplemix-a1``: SampleMix repeat counts for the
  run's token budget (alpha 0 = quality only, 1 = diversity only), natural domain weights.

Reported: held-out perplexity per domain and their mean, for every seed, and Aioli's and
OP-Mix's wall-clock overhead over static mixing (same steps), with OP-Mix's probe cost
(LoRA steps as a share of the run's steps, held-out batches evaluated) and its weights. Results go to a JSON file and a
markdown table; the plot to a PNG.

    python3 benchmarks/bench_mixing.py --out bench-mixing          # full (about 30+ min)
    python3 benchmarks/bench_mixing.py --out bench-mixing --quick  # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = ("stratified", "natural", "aioli", "odm", "opmix", "samplemix-a0", "samplemix-a0.8",
           "samplemix-a1")
AIOLI = {"lp_rounds": 1, "lp_steps": 4, "update_steps": 60}
# OP-Mix's probes: the reference's r=16, alpha=32; 20 steps per domain at the main run's
# batch size and learning rate; 32 held-out samples per domain, as Aioli's evaluations.
OPMIX_PROBE = {"r": 16, "alpha": 32.0, "steps": 20, "lr": 3e-3, "batch_size": 16,
               "train_samples": 256, "val_samples": 32, "val_batch_size": 16}


def prepare_corpus(work: Path, *, chunks_per_domain: int, vocab_size: int) -> tuple[Path, Path]:
    """The demo's corpus, tokenizer and build (reused if already there)."""
    from streammix.demo.local_corpus import collect_local_corpus, read_jsonl_texts
    from streammix.demo.run import chunk_corpus
    from streammix.demo.tokenizer import train_tokenizer
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.local import run_build

    build, tokenizer = work / "build", work / "tokenizer"
    if (build / "streammix.yaml").exists() and tokenizer.exists():
        return build, tokenizer
    raw = collect_local_corpus(work / "raw")
    corpus = chunk_corpus(raw, work / "corpus", per_domain=chunks_per_domain)
    train_tokenizer([t for p in corpus.values() for t in read_jsonl_texts(p)], tokenizer,
                    vocab_size=vocab_size)
    run_build(BuildConfig(domains=tuple(DomainSpec(name=n, source=str(p))
                                        for n, p in corpus.items()),
                          out=str(build), id_field="id", tokenizer=str(tokenizer),
                          val_samples=64, workers=2, progress=False))
    return build, tokenizer


def run_recipe(recipe: str, *, seed: int, build: Path, work: Path, steps: int,
               vocab_size: int, pad_id: int, seq_len: int, n_embd: int) -> dict:
    from streammix.composer.experiment import ExperimentConfig, run_experiment
    from streammix.composer.lora_probes import ProbeConfig
    from streammix.format.manifest import read_manifest
    from streammix.metadata.samplemix import SampleMixConfig
    from streammix.pipeline.samplemix_plan import plan_build, save_build_plan

    batch = 16
    names = read_manifest(build).domain_names
    options: dict = {"policy": "static"}
    if recipe == "stratified":
        options["weights"] = {n: 1.0 for n in names}
    elif recipe in ("aioli", "odm"):
        options["policy"] = recipe
        options["policy_options"] = AIOLI if recipe == "aioli" else {"interval": 10}
    elif recipe == "opmix":
        options.update(policy="opmix", policy_options={"seed": seed},
                       probe=ProbeConfig(**OPMIX_PROBE, seed=seed))
    elif recipe.startswith("samplemix-a"):
        alpha = float(recipe.removeprefix("samplemix-a"))
        config = SampleMixConfig(alpha=alpha, token_budget=steps * batch * seq_len,
                                 max_repeats_per_sample=4, seed=seed)
        plan_file = work / f"plan-{recipe}-seed{seed}.npz"
        save_build_plan(plan_build(build, config), plan_file, config)
        options["sample_counts"] = plan_file
    return run_experiment(ExperimentConfig(
        build=build, out=work / f"run-{recipe}-seed{seed}", steps=steps, seed=seed,
        seq_len=seq_len, batch_size=batch, vocab_size=vocab_size, pad_id=pad_id, n_embd=n_embd,
        n_head=4, **options))


def markdown(results: list[dict], names: list[str]) -> str:
    lines = ["| recipe | seed | " + " | ".join(f"{n} ppl" for n in names)
             + " | mean ppl | train s |", "|" + "---|" * (len(names) + 4)]
    for r in results:
        lines.append(f"| {r['recipe']} | {r['seed']} | "
                     + " | ".join(f"{r['perplexity'][n]:.2f}" for n in names)
                     + f" | {r['mean_perplexity']:.2f} | {r['train_seconds']:.0f} |")
    lines += ["", "| recipe | median mean ppl over seeds | min - max | seeds where mean ppl "
              "< stratified | < natural |", "|---|---|---|---|---|"]
    peers = {peer: {r["seed"]: r["mean_perplexity"] for r in results if r["recipe"] == peer}
             for peer in ("stratified", "natural")}
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        rows = [r for r in results if r["recipe"] == recipe]
        values = [r["mean_perplexity"] for r in rows]
        wins = []
        for peer in ("stratified", "natural"):
            paired = [r for r in rows if r["seed"] in peers[peer]]
            better = sum(r["mean_perplexity"] < peers[peer][r["seed"]] for r in paired)
            wins.append(f"{better}/{len(paired)}")
        lines.append(f"| {recipe} | {statistics.median(values):.2f} | {min(values):.2f} - "
                     f"{max(values):.2f} | {wins[0]} | {wins[1]} |")
    static = [r["train_seconds"] for r in results if r["recipe"] in ("stratified", "natural")]
    for recipe, label in (("aioli", "Aioli"), ("opmix", "OP-Mix")):
        seconds = [r["train_seconds"] for r in results if r["recipe"] == recipe]
        if static and seconds:
            lines.append(f"\n{label} wall-clock overhead over static mixing (median train "
                         f"seconds {statistics.median(seconds):.0f} vs "
                         f"{statistics.median(static):.0f}): "
                         f"{statistics.median(seconds) / statistics.median(static):.2f}x")
    for r in results:
        if r["recipe"] == "opmix" and r.get("decision"):
            info = r["decision"]["info"]
            lines.append(f"\nOP-Mix seed {r['seed']}: weights from step {r['decision']['step']} "
                         + ", ".join(f"{n} {w:.3f}" for n, w in zip(names,
                                                                     r["decision"]["weights"]))
                         + f"; probe LoRA steps {info['probe_train_steps']:.0f} "
                         f"({info['probe_train_share']:.0%} of the run's steps), held-out "
                         f"batches {info['probe_eval_batches']:.0f}, law-fit Huber "
                         + ", ".join(f"{info[f'huber_{i}']:.2g}" for i in range(len(names))))
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recipes = list(dict.fromkeys(r["recipe"] for r in results))
    figure = Figure(figsize=(9, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for i, recipe in enumerate(recipes):
        values = [r["mean_perplexity"] for r in results if r["recipe"] == recipe]
        ax.scatter([i] * len(values), values, color="tab:blue")
        ax.hlines(statistics.median(values), i - 0.3, i + 0.3, color="tab:red")
    ax.set_xticks(range(len(recipes)), recipes, rotation=20)
    ax.set(ylabel="mean held-out perplexity (lower is better)",
           title="mixing recipes: each dot a seed, red line the median")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-mixing"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--quick", action="store_true", help="20 steps, one seed")
    parser.add_argument("--one", choices=RECIPES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = 20, [0]
    from transformers import AutoTokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    build, tokenizer_dir = prepare_corpus(args.out, chunks_per_domain=2500, vocab_size=4096)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["recipe"], r["seed"], r["steps"]) for r in results}
    if args.one is not None:  # a single run, in this (child) process
        result = run_recipe(args.one, seed=args.seeds[0], build=build, work=args.out,
                            steps=args.steps, vocab_size=len(tokenizer),
                            pad_id=int(tokenizer.pad_token_id), seq_len=args.seq_len,
                            n_embd=args.n_embd)
        result["recipe"] = args.one
        history = result.pop("history", None) or []
        if args.one == "opmix":  # the decision after probing, with its cost
            result["decision"] = next((h for h in history if h["phase"] == "opmix"), None)
        Path(args.result).write_text(json.dumps(result))
        return
    for seed in args.seeds:
        for recipe in args.recipes:
            if (recipe, seed, args.steps) in done:
                continue
            started = time.perf_counter()
            # One process per run, like separate training jobs (and upstream StreamingDataset
            # leaks shared-memory handles per instance, which adds up over many runs).
            child = args.out / f"result-{recipe}-seed{seed}.json"
            subprocess.run([sys.executable, __file__, "--out", str(args.out), "--steps",
                            str(args.steps), "--seeds", str(seed), "--seq-len", str(args.seq_len),
                            "--n-embd", str(args.n_embd), "--one", recipe, "--result",
                            str(child)], check=True)
            result = json.loads(child.read_text())
            results.append(result)
            results_file.write_text(json.dumps(results, indent=1))
            print(f"{recipe:<16} seed {seed}: mean ppl {result['mean_perplexity']:.2f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    rows = [r for r in results if r["steps"] == args.steps and r["seed"] in args.seeds]
    names = sorted(rows[0]["perplexity"])
    table = markdown(rows, names)
    (args.out / "results.md").write_text(table + "\n")
    plot(rows, args.out / "mixing.png")
    print(table)


if __name__ == "__main__":
    main()

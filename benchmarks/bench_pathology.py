"""A mixing benchmark with something to find: a corpus with designed pathologies of web data.

Six domains built from text on this machine (``streammix.demo.local_corpus``: Python
standard-library code, Python documentation topics, installed packages' descriptions):

* ``code``, ``docs``: clean text;
* ``packages``: a small, high-value domain (few training documents, about 2% of the
  training tokens) that the held-out target mix over-represents (a third of it);
* ``junk``: random-character junk (real chunks with their characters shuffled: learnable
  character frequencies, nothing else);
* ``boilerplate``: pages that are mostly templated navigation, cookie, newsletter and
  copyright text with a sentence or two of real text;
* ``dups``: a near-duplicate flood: a handful of documentation chunks copied thousands of
  times with a few words changed.

The three pathological domains hold most of the tokens, so natural proportions spend most
of the budget on them, and stratified (uniform) sampling half of it. **The target** is the
held-out mix of the clean domains: the mean of the held-out loss (nats per token) of
``code``, ``docs`` and ``packages``, equal weights. The pathological domains' held-out losses
are reported but are not part of the target.

Every recipe trains the same model from the same initialisation for the same number of
steps on packed ``seq_len``-token blocks (``MixingConfig(sequence_length=...)``), so every
recipe gets exactly ``steps * batch * seq_len`` training tokens:

Every preset trains with a decayed learning rate (``lr_schedule="cosine"``: linear warmup
over the first 5% of the steps, then a cosine decay to 10% of ``lr`` at the last step, as
pretraining runs do; ``ExperimentConfig.lr_schedule``; ``--lr-schedule constant`` gives the
constant rate this benchmark used first). **Run length decides whether the benchmark can
tell recipes apart.** At 240 steps (the CPU preset until 2026-11-28; ``--steps 240``) the
2-layer model is still near its unigram stage (target about 6 nats) and the data order alone
moved the target by about 0.2 nats sd, as much as the gaps between recipes; at 1,200 steps
(the CPU preset now, 1.23M tokens, about 1.5 minutes a run on one core) stratified's seed
spread is 0.038 nats sd and 5 seeds give paired intervals of +-0.02 to +-0.2 nats
(RESULTS.md).
Results record their schedule, and a rerun into a folder only reuses runs of the same
steps and schedule.

* ``natural``: static weights by token share; ``stratified``: uniform static weights;
* ``clean-only``: an oracle, not a mixer: uniform over the clean domains, 0 elsewhere (how
  much there is to find);
* online policies start from uniform weights (DoReMi's paper starts from uniform);
* ``aioli``: Aioli (short rounds, see ``AIOLI``), held-out losses of every domain;
* ``odm``: ODM (Exp3 on per-domain training loss, decisions every 10 steps);
* ``opmix``: OP-Mix (``OpMixProbing``): trains on the uniform prior for the first 20% of the
  run, then probes the model with one LoRA adapter per domain (``r = 16``, ``alpha = 32``,
  ``opmix_probe_steps`` steps at the run's batch size and learning rate), interpolates them
  into proxies, fits the log-linear law on every domain's held-out loss (as Aioli's signal)
  and trains the rest of the run on the KL-regularized proposal (``lambda = 0.05``, prior =
  uniform, the weights it trained on). The probes' LoRA steps and held-out passes are not
  training steps: the token budget is the same, and their cost is reported as a share of
  the run's compute (``probe_compute_share``, from the decision's ``info``);
* ``aioli-target``, ``opmix-target``: the same policies told the target
  (``target_weights``: a third on each clean domain's held-out loss, 0 on the pathological
  ones), as a user who knows the held-out mix they train for would run them; ``aioli`` and
  ``opmix`` minimize the equal-weight mean of all six held-out losses, as the references do;
* ``doremi``: online DoReMi, resampling form, eta 1, interval 10, on held-out losses, with
  the reference losses of the same seed's stratified model (the paper's reference model:
  trained on the reference mixture for the same budget; its compute is not counted);
* ``samplemix-a0.8``: SampleMix repeat counts (alpha 0.8) for the run's token budget, the
  domain weights those counts imply;
* ``samplemix-shares``: a diagnostic, not a recipe of its own: static domain weights equal to
  the token shares of the same seed's SampleMix plan, samples drawn uniformly inside each
  domain (separates SampleMix's choice of domain shares from its choice of samples).

For every recipe and seed the script records the held-out losses; the summary gives the
mean paired difference (same seed) of the target loss against ``stratified`` and against
``natural`` with a 95% Student-t interval over seeds, and says which differences exclude 0.
Each run is its own process (``--jobs`` of them at a time); results accumulate in
``OUT/results.json`` (a rerun skips finished runs) and the summary goes to
``OUT/results.md``.

    python3 benchmarks/bench_pathology.py --out /tmp/bp                  # CPU preset (~50 min, 2 cores)
    python3 benchmarks/bench_pathology.py --out /tmp/bp --preset smoke   # seconds, a smoke test
    python3 benchmarks/bench_pathology.py --out /tmp/bp --preset gpu     # one GPU, ~30M params

``benchmarks/gpu_pathology.sh`` runs the GPU preset and records the machine and timing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

CLEAN = ("code", "docs", "packages")
PATHOLOGICAL = ("junk", "boilerplate", "dups")
RECIPES = ("stratified", "natural", "clean-only", "aioli", "aioli-target", "odm", "doremi",
           "opmix", "opmix-target", "samplemix-a0.8", "samplemix-shares")
BASELINES = ("stratified", "natural")


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Corpus size, model and run length of one configuration."""

    # corpus: training chunks per domain (plus val_samples held out per domain)
    code_chunks: int
    docs_chunks: int
    packages_chunks: int
    junk_chunks: int
    boilerplate_chunks: int
    dups_chunks: int
    dups_sources: int
    vocab_size: int
    val_samples: int
    # model and run
    steps: int
    batch_size: int
    seq_len: int
    n_layer: int
    n_embd: int
    n_head: int
    lr: float
    lr_schedule: str           # ExperimentConfig.lr_schedule
    lr_warmup_fraction: float  # share of the steps warming up
    lr_final_fraction: float   # lr at the last step / lr
    aioli_lp_steps: int
    aioli_update_steps: int
    opmix_probe_steps: int  # LoRA steps per domain's probe
    device: str
    precision: str | None
    seeds: tuple[int, ...]
    jobs: int
    threads: int


PRESETS = {
    "cpu": Preset(code_chunks=1500, docs_chunks=900, packages_chunks=150, junk_chunks=1500,
                  boilerplate_chunks=1500, dups_chunks=1500, dups_sources=8, vocab_size=2048,
                  val_samples=32, steps=1200, batch_size=16, seq_len=64, n_layer=2, n_embd=64,
                  n_head=4, lr=3e-3, lr_schedule="cosine", lr_warmup_fraction=0.05, lr_final_fraction=0.1,
                  aioli_lp_steps=4, aioli_update_steps=60, opmix_probe_steps=20, device="cpu", precision=None,
                  seeds=(0, 1, 2, 3, 4), jobs=2, threads=1),
    # One GPU: GPT-2 with 8 layers, width 512 and a 8192-token vocabulary (about 30M
    # parameters), 256-token blocks, batch 32, 1200 steps (9.8M tokens per run).
    "gpu": Preset(code_chunks=20000, docs_chunks=950, packages_chunks=400, junk_chunks=20000,
                  boilerplate_chunks=20000, dups_chunks=20000, dups_sources=40, vocab_size=8192,
                  val_samples=64, steps=1200, batch_size=32, seq_len=256, n_layer=8,
                  n_embd=512, n_head=8, lr=1e-3, lr_schedule="cosine", lr_warmup_fraction=0.05, lr_final_fraction=0.1,
                  aioli_lp_steps=10, aioli_update_steps=150, opmix_probe_steps=40, device="gpu",
                  precision="amp_bf16", seeds=(0, 1, 2, 3, 4), jobs=4, threads=2),
    # A smoke test of the whole pipeline in seconds of training (numbers mean nothing).
    "smoke": Preset(code_chunks=120, docs_chunks=90, packages_chunks=30, junk_chunks=120,
                    boilerplate_chunks=120, dups_chunks=120, dups_sources=3, vocab_size=512,
                    val_samples=8, steps=12, batch_size=4, seq_len=32, n_layer=1, n_embd=32,
                    n_head=2, lr=3e-3, lr_schedule="cosine", lr_warmup_fraction=0.05, lr_final_fraction=0.1,
                  aioli_lp_steps=1, aioli_update_steps=12, opmix_probe_steps=2, device="cpu", precision=None,
                    seeds=(0, 1), jobs=1, threads=1),
}

BOILERPLATE_BLOCKS = (
    "Home | About | Products | Blog | Contact | Login | Sign up",
    "We use cookies to improve your experience on {site}. By continuing to browse you agree "
    "to our use of cookies. Accept all | Manage preferences",
    "Subscribe to the {site} newsletter and never miss an update! Enter your email address "
    "below. We respect your privacy and you can unsubscribe at any time.",
    "Share this page: Facebook Twitter LinkedIn Email Print",
    "Related posts | Popular posts | Archives | Categories | Tags",
    "Copyright (c) {year} {site}. All rights reserved. Privacy policy | Terms of use | "
    "Sitemap | Accessibility",
)
SITES = tuple(f"{a}{b}.example" for a in ("tech", "code", "dev", "py", "data", "web")
              for b in ("hub", "zone", "world", "daily", "central"))


def boilerplate_documents(texts: list[str], count: int, *, seed: int) -> list[str]:
    """``count`` pages: the templated blocks around one or two sentences of real text."""
    rng = np.random.Generator(np.random.PCG64(seed))
    pages = []
    for i in range(count):
        site = SITES[int(rng.integers(len(SITES)))]
        year = int(rng.integers(2005, 2025))
        blocks = [b.format(site=site, year=year) for b in BOILERPLATE_BLOCKS]
        sentences = [s.strip() for s in texts[i % len(texts)].split(".") if s.strip()]
        body = ". ".join(sentences[:int(rng.integers(1, 3))]) + "."
        pages.append("\n".join(blocks[:3] + [body] + blocks[3:]))
    return pages


def near_duplicates(sources: list[str], count: int, *, seed: int,
                    change_rate: float = 0.03) -> list[str]:
    """``count`` copies of the ``sources`` in turn, each word replaced with probability
    ``change_rate`` by another word of the same source (a near-duplicate flood)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    words = [s.split(" ") for s in sources]
    copies = []
    for i in range(count):
        base = words[i % len(words)]
        changed = rng.random(len(base)) < change_rate
        picks = rng.integers(len(base), size=len(base))
        copies.append(" ".join(base[int(picks[j])] if changed[j] else w
                               for j, w in enumerate(base)))
    return copies


def prepare_corpus(work: Path, preset: Preset) -> tuple[Path, Path]:
    """Write the six domains, train the tokenizer and build (reused if already there)."""
    from streammix.demo.local_corpus import (
        collect_local_corpus,
        junk_documents,
        read_jsonl_texts,
        split_into_sections,
    )
    from streammix.demo.run import CHUNK_MAX_CHARS, CHUNK_MIN_CHARS
    from streammix.demo.tokenizer import train_tokenizer
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.local import run_build

    build, tokenizer = work / "build", work / "tokenizer"
    if (build / "streammix.yaml").exists() and tokenizer.exists():
        return build, tokenizer
    raw = collect_local_corpus(work / "raw")
    chunks = {name: [c for text in read_jsonl_texts(path)
                     for c in split_into_sections(text, min_chars=CHUNK_MIN_CHARS,
                                                  max_chars=CHUNK_MAX_CHARS)]
              for name, path in raw.items()}
    extra = preset.val_samples

    def spread(items: list[str], n: int) -> list[str]:
        if len(items) < n:
            raise SystemExit(f"only {len(items)} chunks on this machine, {n} needed")
        return [items[int(i)] for i in np.linspace(0, len(items) - 1, n)]

    code = spread(chunks["code"], preset.code_chunks + extra)
    docs_all = spread(chunks["docs"], min(len(chunks["docs"]),
                                          preset.docs_chunks + extra + preset.dups_sources))
    docs, dup_sources = docs_all[:preset.docs_chunks + extra], docs_all[-preset.dups_sources:]
    domains = {
        "code": code,
        "docs": docs,
        "packages": spread(chunks["packages"], preset.packages_chunks + extra),
        "junk": junk_documents(code + docs, preset.junk_chunks + extra, seed=11),
        "boilerplate": boilerplate_documents(docs, preset.boilerplate_chunks + extra, seed=12),
        "dups": near_duplicates(dup_sources, preset.dups_chunks + extra, seed=13),
    }
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, texts in domains.items():
        with open(corpus / f"{name}.jsonl", "w", encoding="utf-8") as stream:
            for i, text in enumerate(texts):
                stream.write(json.dumps({"text": text, "id": f"{name}-{i}"}) + "\n")
    # The tokenizer sees the real-text domains (boilerplate included, junk not).
    train_tokenizer([t for n in ("code", "docs", "packages", "boilerplate") for t in domains[n]],
                    tokenizer, vocab_size=preset.vocab_size)
    run_build(BuildConfig(domains=tuple(DomainSpec(name=n, source=str(corpus / f"{n}.jsonl"))
                                        for n in domains),
                          out=str(build), id_field="id", tokenizer=str(tokenizer),
                          val_samples=preset.val_samples, workers=2, progress=False))
    return build, tokenizer


def mean_weights(history: list[dict], steps: int) -> list[float] | None:
    """Step-weighted mean of the training weights of an online run's decisions."""
    total, acc = 0, None
    for record in history:
        start = int(record["step"])
        length = min(int(record.get("num_steps") or 0), steps - start)
        if length <= 0 or not record.get("weights"):
            continue
        w = np.asarray(record["weights"], dtype=float) * length
        acc = w if acc is None else acc + w
        total += length
    return None if acc is None else [float(x) for x in acc / total]


def same_training(result: dict, preset: Preset) -> bool:
    """Whether a stored result was trained for the preset's steps and lr schedule (results
    from before the schedule was recorded were trained at a constant rate)."""
    return (result["steps"] == preset.steps
            and result.get("lr_schedule", "constant") == preset.lr_schedule)


def run_one(recipe: str, seed: int, preset: Preset, build: Path, work: Path,
            tokenizer_dir: Path) -> dict:
    """One training run (called in a child process)."""
    import torch
    from transformers import AutoTokenizer

    from streammix.composer.experiment import ExperimentConfig, run_experiment
    from streammix.composer.lora_probes import ProbeConfig
    from streammix.format.manifest import read_manifest
    from streammix.metadata.samplemix import SampleMixConfig
    from streammix.pipeline.samplemix_plan import plan_build, save_build_plan

    torch.set_num_threads(preset.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    names = read_manifest(build).domain_names
    budget = preset.steps * preset.batch_size * preset.seq_len
    # Online policies start from the stratified (uniform) mixture, as DoReMi's paper does.
    options: dict = {"policy": "static", "weights": {n: 1.0 for n in names}}
    if recipe == "natural" or recipe.startswith("samplemix-a"):
        options["weights"] = None  # token shares of the build or of the SampleMix counts
    if recipe == "clean-only":
        options["weights"] = dict(zip(names, target_weights(names)))
    elif recipe in ("aioli", "aioli-target"):
        options["policy"] = "aioli"
        options["policy_options"] = {"lp_rounds": 1, "lp_steps": preset.aioli_lp_steps,
                                     "update_steps": preset.aioli_update_steps, "seed": seed}
        if recipe == "aioli-target":
            options["policy_options"]["target_weights"] = target_weights(names)
    elif recipe == "odm":
        options["policy"] = "odm"
        options["policy_options"] = {"interval": 10}
    elif recipe in ("opmix", "opmix-target"):
        # The prior q is the initial (uniform) weights, as the other online recipes start.
        policy_options = {"seed": seed, "prior": "initial"}
        if recipe == "opmix-target":
            policy_options["target_weights"] = target_weights(names)
        options.update(policy="opmix", policy_options=policy_options,
                       probe=ProbeConfig(r=16, alpha=32.0, steps=preset.opmix_probe_steps,
                                         lr=preset.lr, batch_size=preset.batch_size,
                                         train_samples=256, val_samples=preset.val_samples,
                                         val_batch_size=16, seed=seed))
    elif recipe == "doremi":
        reference = json.loads((work / f"result-stratified-seed{seed}.json").read_text())
        options["policy"] = "doremi"
        options["policy_options"] = {
            "reference_loss": [reference["held_out_loss"][n] for n in names],
            "signal": "val", "eta": 1.0, "interval": 10}
    elif recipe.startswith("samplemix-a") or recipe == "samplemix-shares":
        alpha = 0.8 if recipe == "samplemix-shares" else float(recipe.removeprefix("samplemix-a"))
        config = SampleMixConfig(alpha=alpha, token_budget=budget, max_repeats_per_sample=4,
                                 seed=seed)
        plan_file = work / f"plan-{recipe}-seed{seed}.npz"
        save_build_plan(plan_build(build, config), plan_file, config)
        if recipe == "samplemix-shares":
            options["weights"] = dict(zip(names, plan_shares(build, plan_file)))
        else:
            options["sample_counts"] = plan_file
    result = run_experiment(ExperimentConfig(
        build=build, out=work / f"run-{recipe}-seed{seed}", steps=preset.steps, seed=seed,
        seq_len=preset.seq_len, batch_size=preset.batch_size, vocab_size=len(tokenizer),
        pad_id=int(tokenizer.pad_token_id), n_layer=preset.n_layer, n_embd=preset.n_embd,
        n_head=preset.n_head, lr=preset.lr, lr_schedule=preset.lr_schedule,
        lr_warmup_fraction=preset.lr_warmup_fraction,
        lr_final_fraction=preset.lr_final_fraction, val_samples=preset.val_samples, packed=True,
        separator_id=int(tokenizer.eos_token_id), device=preset.device,
        precision=preset.precision, **options))
    result["recipe"] = recipe
    result["domains"] = list(names)
    result["tokens"] = budget
    result["target_loss"] = statistics.fmean(result["held_out_loss"][n] for n in CLEAN)
    history = result.pop("history")
    result["mean_weights"] = mean_weights(history, preset.steps)
    if recipe.startswith("opmix"):  # the decision after probing, with its cost
        result["decision"] = next((h for h in history if h["phase"] == "opmix"), None)
    return result


def target_weights(names: list[str]) -> list[float]:
    """The target's weights on the domains' held-out losses: equal on the clean domains."""
    return [float(n in CLEAN) / len(CLEAN) for n in names]


def static_shares(recipe: str, seed: int, build: Path, work: Path) -> list[float] | None:
    """The token share of each domain a static recipe trains on (documents' tokens; the
    separators packing adds are not counted); None for online recipes."""
    from streammix.format.manifest import read_manifest

    names = read_manifest(build).domain_names
    if recipe == "stratified":
        return [1.0 / len(names)] * len(names)
    if recipe == "clean-only":
        return target_weights(names)
    if recipe.startswith("samplemix-"):
        return plan_shares(build, work / f"plan-{recipe}-seed{seed}.npz")
    if recipe != "natural":
        return None
    return plan_shares(build, None)


def plan_shares(build: Path, plan_file: Path | None) -> list[float]:
    """Each domain's share of the documents' tokens, every sample once (``None``) or as
    often as a SampleMix plan's repeat counts say."""
    from streammix.format.manifest import read_manifest
    from streammix.format.plan import read_plan

    names = read_manifest(build).domain_names
    tokens = [np.load(build / n / "streammix.tokens.npy").astype(np.int64) for n in names]
    if plan_file is not None:
        _, counts = read_plan(plan_file)
        tokens = [t * counts[n] for t, n in zip(tokens, names)]
    totals = np.array([t.sum() for t in tokens], dtype=float)
    return [float(x) for x in totals / totals.sum()]


def t_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean of paired differences."""
    from scipy.stats import t

    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarize(results: list[dict], seeds: list[int]) -> str:
    by = {(r["recipe"], r["seed"]): r for r in results}
    recipes = [r for r in RECIPES if any((r, s) in by for s in seeds)]
    names = list(results[0]["domains"])
    lines = ["Target = mean held-out loss (nats/token) over " + ", ".join(CLEAN)
             + "; lower is better.", "",
             "| recipe | seed | target | " + " | ".join(names) + " | train s |",
             "|" + "---|" * (len(names) + 4)]
    for recipe in recipes:
        for seed in seeds:
            r = by.get((recipe, seed))
            if r is not None:
                lines.append(f"| {recipe} | {seed} | {r['target_loss']:.4f} | "
                             + " | ".join(f"{r['held_out_loss'][n]:.3f}" for n in names)
                             + f" | {r['train_seconds']:.0f} |")
    lines += ["", "Training token shares, seed 0 (static recipes: their weights; SampleMix: its "
              "repeat counts' tokens; online recipes: the step-weighted mean of their "
              "decisions' weights, probes included):", "", "| recipe | " + " | ".join(names) + " |",
              "|" + "---|" * (len(names) + 1)]
    for recipe in recipes:
        r = by.get((recipe, seeds[0]))
        if r is not None and r.get("mean_weights"):
            lines.append(f"| {recipe} | " + " | ".join(f"{w:.3f}" for w in r["mean_weights"])
                         + " |")
    spread = [by[("stratified", s)]["target_loss"] for s in seeds if ("stratified", s) in by]
    if len(spread) > 1:
        lines += ["", f"Seed spread of stratified's target: {min(spread):.4f} to "
                  f"{max(spread):.4f} (sd {statistics.stdev(spread):.4f})."]
    for baseline in BASELINES:
        lines += ["", f"Paired difference of the target against {baseline} (recipe minus "
                  f"{baseline}, same seed; negative = better), mean and 95% t-interval:", "",
                  "| recipe | seeds | per-seed differences | mean | 95% CI | verdict |",
                  "|---|---|---|---|---|---|"]
        for recipe in recipes:
            if recipe == baseline:
                continue
            pairs = [s for s in seeds if (recipe, s) in by and (baseline, s) in by]
            if not pairs:
                continue
            diffs = [by[(recipe, s)]["target_loss"] - by[(baseline, s)]["target_loss"]
                     for s in pairs]
            mean, low, high = t_interval(diffs)
            verdict = ("better" if high < 0 else "worse" if low > 0
                       else "not distinguishable") if len(pairs) > 1 else "one seed"
            lines.append(f"| {recipe} | {len(pairs)} | "
                         + ", ".join(f"{d:+.4f}" for d in diffs)
                         + f" | {mean:+.4f} | [{low:+.4f}, {high:+.4f}] | {verdict} |")
    static = [by[(r, s)]["train_seconds"] for r in ("stratified", "natural") for s in seeds
              if (r, s) in by]
    for recipe, label in (("aioli", "Aioli"), ("aioli-target", "Aioli (target)"),
                          ("opmix", "OP-Mix"), ("opmix-target", "OP-Mix (target)")):
        online = [by[(recipe, s)]["train_seconds"] for s in seeds if (recipe, s) in by]
        if static and online:
            lines += ["", f"{label}'s wall-time overhead over static mixing (median train "
                      f"seconds, same steps): {statistics.median(online):.1f} s / "
                      f"{statistics.median(static):.1f} s = "
                      f"{statistics.median(online) / statistics.median(static):.2f}x"]
    decisions = [(r, s, by[(r, s)].get("decision")) for r in ("opmix", "opmix-target")
                 for s in seeds if (r, s) in by]
    if any(d for _, _, d in decisions):
        lines += ["", "OP-Mix's decision per seed (weights for the rest of the run) and its probe "
                  "cost as a share of the run's training compute (LoRA samples counted as full "
                  "training samples, held-out forwards as a third of one):", "",
                  "| recipe | seed | step | " + " | ".join(names) + " | LoRA steps | "
                  "train share | eval share | compute share |", "|" + "---|" * (len(names) + 7)]
        for recipe, seed, d in decisions:
            if d:
                info = d["info"]
                lines.append(f"| {recipe} | {seed} | {d['step']} | "
                             + " | ".join(f"{w:.3f}" for w in d["weights"])
                             + f" | {info['probe_train_steps']:.0f} | "
                             f"{info['probe_train_share']:.0%} | {info['probe_eval_share']:.0%} | "
                             f"{info['probe_compute_share']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-pathology"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine", "linear"), default=None,
                        help="override the preset's learning-rate schedule")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build the corpus, tokenizer and streammix build, then stop")
    parser.add_argument("--one", nargs=2, default=None, metavar=("RECIPE", "SEED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    overrides = {k: v for k, v in (("steps", args.steps), ("jobs", args.jobs),
                                   ("threads", args.threads),
                                   ("lr_schedule", args.lr_schedule)) if v is not None}
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    preset = replace(preset, **overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    build, tokenizer_dir = prepare_corpus(args.out, preset)
    if args.prepare_only:
        return
    if args.one is not None:  # a single run, in this (child) process
        recipe, seed = args.one[0], int(args.one[1])
        result = run_one(recipe, seed, preset, build, args.out, tokenizer_dir)
        (args.out / f"result-{recipe}-seed{seed}.json").write_text(json.dumps(result))
        return
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    results = [r for r in results if same_training(r, preset)]
    done = {(r["recipe"], r["seed"]) for r in results}

    def launch(job: tuple[str, int]) -> dict:
        recipe, seed = job
        started = time.perf_counter()
        child = args.out / f"result-{recipe}-seed{seed}.json"
        if child.exists() and same_training(json.loads(child.read_text()), preset):
            return json.loads(child.read_text())  # finished before an interruption
        command = [sys.executable, __file__, "--out", str(args.out), "--preset", args.preset,
                   "--steps", str(preset.steps), "--threads", str(preset.threads),
                   "--lr-schedule", preset.lr_schedule,
                   "--one", recipe, str(seed)]
        # Upstream StreamingDataset's shared-memory names can collide between processes
        # that start at the same moment (FileExistsError '/00xxxx_locals'): retry.
        for attempt in range(3):
            run = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
            if run.returncode == 0:
                break
            print(f"{recipe} seed {seed}: attempt {attempt + 1} failed:\n{run.stderr[-2000:]}",
                  file=sys.stderr, flush=True)
        else:
            raise RuntimeError(f"{recipe} seed {seed} failed three times")
        result = json.loads(child.read_text())
        print(f"{recipe:<15} seed {seed}: target {result['target_loss']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        return result

    # DoReMi's reference is the same seed's stratified model: those runs go first.
    first = [(r, s) for s in preset.seeds for r in args.recipes if r == "stratified"]
    rest = [(r, s) for s in preset.seeds for r in args.recipes if r != "stratified"]
    for phase in (first, rest):
        todo = [job for job in phase if job not in done]
        with ThreadPoolExecutor(max_workers=preset.jobs) as pool:
            for result in pool.map(launch, todo):
                results.append(result)
                results_file.write_text(json.dumps(results, indent=1))
    for result in results:
        if result.get("mean_weights") is None:
            result["mean_weights"] = static_shares(result["recipe"], result["seed"], build,
                                                   args.out)
    table = summarize(results, list(preset.seeds))
    header = (f"preset {args.preset}: {json.dumps(asdict(preset))}\n\n")
    (args.out / "results.md").write_text(header + table + "\n")
    print(table)


if __name__ == "__main__":
    main()

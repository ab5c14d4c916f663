"""The one-command demo: real text from this machine to a GPT-2 trained with online mixing.

Steps (each prints what it did and how long it took):

1. **Corpus.** Three domains of text already on the machine (``streammix.demo.local_corpus``:
   standard-library code, Python documentation topics, installed packages' descriptions),
   cut into chunks of a few hundred characters at paragraph/line breaks so that a short
   training context sees whole chunks; at most ``chunks_per_domain`` chunks per domain,
   taken evenly across the domain. A fourth domain, ``junk``, holds as many chunks of
   real text with their characters shuffled (``junk_documents``, seeded): a model learns
   its character frequencies in a few steps and nothing after that, so a good mixer
   should move weight away from it.
2. **Tokenizer.** A byte-level BPE trained on those chunks (``streammix.demo.tokenizer``).
3. **Build.** ``streammix-build`` with tokenization, heuristic quality, MinHash clusters and
   diversity, and a held-out split per domain.
4. **SampleMix plan.** Repeat counts from quality and diversity for the training token
   budget, printed per domain and plotted.
5. **Training.** A small GPT-2 on the CPU with Composer: ``StreamMixDataset`` packing each
   domain's documents (SampleMix counts inside the domain) into blocks of ``seq_len`` tokens,
   every block from one domain, while ``OnlineMixing`` (Aioli by default) sets the domain
   weights online; the weights and the shares printed are token shares. Torch uses ``threads`` threads (default: the free cores, see
   ``streammix.demo.sizing``); without ``steps`` the run is sized to ``train_budget_s``
   from a measured step time. Progress (step, loss, tokens/s, ETA) is printed every few
   seconds, each decision's weights with the losses behind it, and at the end the held-out
   loss per domain, how much it fell since the first decision, and each domain's share of
   the tokens trained (of the samples, with ``packed=False``).
6. **Plots.** ``plan.png`` and ``mixing.png`` in the output folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_MIN_CHARS = 300
CHUNK_MAX_CHARS = 900


# Online policies that run without options: ``static`` trains without a mixing history to
# show, ``scheduled`` and ``doremi`` need options (a schedule, reference losses).
DEMO_POLICIES = ("aioli", "odm")
JUNK_DOMAIN = "junk"


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    out: Path = Path("demo-out")
    steps: int | None = None  # None: as many whole rounds as fit train_budget_s
    train_budget_s: float = 100.0
    threads: int | None = None  # None: streammix.demo.sizing.default_threads()
    policy: str = "aioli"
    seed: int = 0
    max_docs_per_domain: int | None = None
    chunks_per_domain: int = 1500
    junk: bool = True
    vocab_size: int = 2048
    seq_len: int = 64
    packed: bool = True  # domain-pure blocks of seq_len tokens: weights are token shares
    batch_size: int = 16
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    lr: float = 5e-3
    val_samples: int = 32  # held-out chunks a domain: the build's split, the policy's and the report's
    workers: int = 2

    def __post_init__(self) -> None:  # checked before anything is collected or built
        if self.policy not in DEMO_POLICIES:
            raise ValueError(
                f"the demo runs the online policies {list(DEMO_POLICIES)}, got {self.policy!r}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not self.train_budget_s > 0:
            raise ValueError(f"train_budget_s must be > 0, got {self.train_budget_s}")


# One Aioli round: a probe of LP_STEPS steps per domain, then the rest of the round on the
# decided weights. eta is far above the reference's 0.1: Aioli's normalized interaction
# matrix sums to 1, so with 4 domains the exponent differs between domains by a fraction of
# eta and 0.1 moves no weight visibly in a few hundred steps.
ROUND_STEPS = 60
DEMO_AIOLI = {"lp_rounds": 1, "lp_steps": 4, "update_steps": ROUND_STEPS, "eta": 10.0,
              "one_hot_factor": 0.7}
MIN_ROUNDS, MAX_ROUNDS = 10, 40  # the weights move visibly from about the 6th round


def _step(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(
        f"   done in {time.perf_counter() - started:.1f} s{'; ' + detail if detail else ''}",
        flush=True,
    )


def chunk_corpus(
    raw: dict[str, Path], out_dir: Path, *, per_domain: int, junk_seed: int | None = None
) -> dict[str, Path]:
    """Split each domain's documents into chunks; keep ``per_domain`` spread evenly.

    With ``junk_seed``, a ``junk`` domain of ``per_domain`` chunks of shuffled characters
    (``junk_documents`` over the other domains' chunks, taken in turn) is added.
    """
    from streammix.demo.local_corpus import (
        junk_documents,
        read_jsonl_texts,
        split_into_sections,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for domain, path in raw.items():
        chunks = [
            c
            for text in read_jsonl_texts(path)
            for c in split_into_sections(text, min_chars=CHUNK_MIN_CHARS, max_chars=CHUNK_MAX_CHARS)
        ]
        stride = max(1, len(chunks) // per_domain)
        kept = chunks[::stride][:per_domain]
        paths[domain] = _write_chunks(out_dir, domain, kept, f"from {path.name}")
    if junk_seed is not None:
        real = [read_jsonl_texts(p) for p in paths.values()]
        interleaved = [c for group in zip(*real) for c in group]
        junk = junk_documents(interleaved, per_domain, seed=junk_seed)
        paths[JUNK_DOMAIN] = _write_chunks(
            out_dir, JUNK_DOMAIN, junk, "(the real chunks' characters, shuffled)"
        )
    return paths


def _write_chunks(out_dir: Path, domain: str, chunks: list[str], origin: str) -> Path:
    path = out_dir / f"{domain}.jsonl"
    with open(path, "w", encoding="utf-8") as stream:
        for i, chunk in enumerate(chunks):
            stream.write(json.dumps({"text": chunk, "id": f"{domain}-{i}"}) + "\n")
    print(
        f"   {domain:<9} {len(chunks):>6} chunks ({sum(len(c) for c in chunks) / 1e6:.1f} MB) "
        f"{origin}",
        flush=True,
    )
    return path


def _policy_options(config: DemoConfig) -> dict[str, Any]:
    return dict(DEMO_AIOLI, seed=config.seed) if config.policy == "aioli" else {}


def _train(
    config: DemoConfig, build_dir: Path, plan_file: Path, tokenizer_dir: Path, steps: int
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from streammix.composer.experiment import ExperimentConfig, run_experiment

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    return run_experiment(
        ExperimentConfig(
            build=build_dir,
            out=config.out,
            steps=steps,
            policy=config.policy,
            policy_options=_policy_options(config),
            sample_counts=plan_file,
            seed=config.seed,
            seq_len=config.seq_len,
            packed=config.packed,
            batch_size=config.batch_size,
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            lr=config.lr,
            vocab_size=len(tokenizer),
            pad_id=int(tokenizer.pad_token_id),
            val_samples=config.val_samples,
            verbose=True,
        )
    )


def _threads_and_steps(config: DemoConfig) -> tuple[int, int]:
    """Set torch's threads (option or free cores) and size the run; prints both choices."""
    import torch

    from streammix.demo.sizing import (
        available_cpus,
        current_load,
        default_threads,
        measure_step_seconds,
        steps_for_budget,
    )

    cpus, load = available_cpus(), current_load()
    threads = config.threads or default_threads(cpus, load)
    torch.set_num_threads(threads)
    how = "--threads" if config.threads else "the free cores: round(cpus - load), at least 1"
    print(f"   torch threads: {threads} ({cpus} cores available to this process, "
          f"1-minute load {load:.2f}; {how})", flush=True)
    if config.steps is not None:
        return threads, config.steps
    seconds = measure_step_seconds(
        vocab_size=config.vocab_size, seq_len=config.seq_len, batch_size=config.batch_size,
        n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, lr=config.lr,
        seed=config.seed,
    )
    # Measured on the demo: Aioli's held-out evaluations, the data path and Composer make a
    # training step about 1.8x a bare one (600 steps: 0.094 s bare, 105 s in all).
    steps = steps_for_budget(
        seconds_per_step=seconds * 1.8, budget_s=config.train_budget_s,
        round_steps=ROUND_STEPS, min_rounds=MIN_ROUNDS, max_rounds=MAX_ROUNDS,
    )
    print(f"   measured {seconds * 1000:.0f} ms per training step -> {steps} steps "
          f"({steps // ROUND_STEPS} rounds of {ROUND_STEPS}) for a ~{config.train_budget_s:.0f} s "
          "budget (--steps N fixes the length)", flush=True)
    return threads, steps


def _first_decision(history: list[dict[str, Any]], at_or_after: int) -> dict[str, Any] | None:
    """The first non-probe record with held-out losses at or after step ``at_or_after``."""
    return next((r for r in history if r["val_loss"] and r["step"] >= at_or_after
                 and not str(r["phase"]).startswith("probe")), None)


def _report(result: dict[str, Any], steps: int) -> None:
    """Held-out loss per domain, how it fell (whole run, last half), the samples trained."""
    history = result["history"]
    names = list(result["held_out_loss"])
    first, middle = _first_decision(history, 1), _first_decision(history, steps // 2)
    counts = [0.0] * len(names)
    for record in history:
        for d, count in enumerate(record.get("train_count") or []):
            counts[d] += count
    total = sum(counts) or 1.0
    unit = "tokens" if result.get("packed") else "samples"  # packed: blocks of equal length
    columns = [(f"change since step {r['step']}", r) for r in (first, middle) if r is not None]
    print("   held-out loss per token (the same held-out chunks as the decisions; lower is better)")
    print(f"   {'domain':<9} {'loss':>6} {'perplexity':>10}"
          + "".join(f" {title:>24}" for title, _ in columns) + f"  share of {unit} trained")
    changes = {}
    for d, name in enumerate(names):
        loss = result["held_out_loss"][name]
        changes[name] = [loss - r["val_loss"][d] for _, r in columns]
        print(f"   {name:<9} {loss:6.3f} {math.exp(loss):10.1f}"
              + "".join(f" {c:>+24.3f}" for c in changes[name]) + f"  {counts[d] / total:>24.1%}")
    final = next((r for r in reversed(history) if r["step"] < steps
                  and not str(r["phase"]).startswith("probe")), None)
    if final is not None:
        weights = " | ".join(f"{n} {w:.3f}" for n, w in zip(names, final["weights"]))
        kind = "token shares, " if result.get("packed") else ""
        print(f"   final mixture ({kind}trained on from step {final['step']} to {steps}): "
              f"{weights}")
    if JUNK_DOMAIN in names and columns:
        real = [changes[n][-1] for n in names if n != JUNK_DOMAIN]
        share, uniform = counts[names.index(JUNK_DOMAIN)] / total, 1 / len(names)
        print(f"   reading: since step {columns[-1][1]['step']} the junk domain's held-out loss "
              f"changed {changes[JUNK_DOMAIN][-1]:+.3f}, the real domains' "
              f"{sum(real) / len(real):+.3f} on average; junk got {share:.0%} of the {unit} "
              f"(a uniform mix: {uniform:.0%}). " + (
                  "Shuffled characters have little left to teach once their frequencies are "
                  "learned" + ("; the probes measured that" if result["policy"] == "aioli" else "")
                  + " and the weights moved away from junk."
                  if share < uniform else
                  "This run did not move weight away from junk; try more --steps."))


def run_demo(config: DemoConfig) -> dict[str, Any]:
    from streammix.demo.local_corpus import collect_local_corpus, read_jsonl_texts
    from streammix.demo.numba_cache import (
        BUILD_KERNEL_MODULES,
        ORDER_KERNEL_MODULES,
        first_compile_notice,
    )
    from streammix.demo.tokenizer import train_tokenizer
    from streammix.metadata.samplemix import SampleMixConfig
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.local import run_build
    from streammix.pipeline.plan_plots import plot_plan
    from streammix.pipeline.samplemix_plan import format_report, plan_build, save_build_plan

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    total_started = time.perf_counter()

    started = _step("1/6 collecting text already on this machine")
    raw = collect_local_corpus(out / "raw", max_docs_per_domain=config.max_docs_per_domain)
    corpus = chunk_corpus(raw, out / "corpus", per_domain=config.chunks_per_domain,
                          junk_seed=config.seed if config.junk else None)
    _done(started)

    started = _step("2/6 training a byte-level BPE tokenizer")
    tokenizer_dir = out / "tokenizer"
    texts = [t for p in corpus.values() for t in read_jsonl_texts(p)]
    train_tokenizer(texts, tokenizer_dir, vocab_size=config.vocab_size)
    _done(started, f"vocabulary {config.vocab_size} on {len(texts)} chunks")

    started = _step("3/6 streammix-build: MDS shards + quality, MinHash, clusters, diversity")
    notice = first_compile_notice(BUILD_KERNEL_MODULES, "the build")
    if notice:
        print(notice, flush=True)
    build_dir = out / "build"
    summary = run_build(
        BuildConfig(
            domains=tuple(DomainSpec(name=n, source=str(p)) for n, p in corpus.items()),
            out=str(build_dir),
            id_field="id",
            tokenizer=str(tokenizer_dir),
            val_samples=config.val_samples,
            workers=config.workers,
            seed=config.seed,
            progress=True,
        )
    )
    print(summary.format() if hasattr(summary, "format") else summary, flush=True)
    _done(started)

    started = _step("4/6 sizing the run: torch threads and training steps")
    threads, steps = _threads_and_steps(config)
    _done(started)

    budget = steps * config.batch_size * config.seq_len
    started = _step(f"5/6 SampleMix plan for {budget:,} training tokens (alpha 0.8)")
    plan_config = SampleMixConfig(
        alpha=0.8, token_budget=budget, max_repeats_per_sample=4, seed=config.seed
    )
    plan = plan_build(build_dir, plan_config)
    print(format_report(plan), flush=True)
    plan_file = save_build_plan(plan, out / "plan.npz", plan_config)
    plot_plan(plan, out / "plan.png")
    _done(started, f"plan in {plan_file}, picture in {out / 'plan.png'}")

    started = _step(
        f"6/6 training a small GPT-2 for {steps} steps on {threads} thread(s) with "
        f"{config.policy!r} online mixing on top of the SampleMix counts"
        + (f", packed: blocks of {config.seq_len} tokens, each from one domain (weights are "
           "token shares)" if config.packed else "")
    )
    if config.policy == "aioli":
        print(f"   Aioli: every {ROUND_STEPS}-step round starts with {DEMO_AIOLI['lp_steps']} "
              "probe steps per domain (a mixture tilted towards it) and a held-out evaluation "
              "after each, then trains the rest of the round on weights that favour the "
              "domains whose probes lowered held-out loss most", flush=True)
    notice = first_compile_notice(ORDER_KERNEL_MODULES, "the data order")
    if notice:
        print(notice, flush=True)
    result = _train(config, build_dir, plan_file, tokenizer_dir, steps)
    _report(result, steps)
    from streammix.composer.history import read_history
    from streammix.composer.plot import plot_history

    domains, records = read_history(out / "history.jsonl")
    plot_history(records, out / "mixing.png", domain_names=domains, end_step=steps)
    _done(started, f"{result['train_seconds']:.0f} s of training; plots: {out / 'mixing.png'}, "
          f"{out / 'plan.png'}")
    print(
        f"\nstreammix demo finished in {(time.perf_counter() - total_started) / 60:.1f} min; "
        f"everything is in {out}/",
        flush=True,
    )
    return result

"""The one-command demo: real text from this machine to a GPT-2 trained with online mixing.

Steps (each prints what it did and how long it took):

1. **Corpus.** Three domains of text already on the machine (``streammix.demo.local_corpus``:
   standard-library code, Python documentation topics, installed packages' descriptions),
   cut into chunks of a few hundred characters at paragraph/line breaks so that a short
   training context sees whole chunks; at most ``chunks_per_domain`` chunks per domain,
   taken evenly across the domain.
2. **Tokenizer.** A byte-level BPE trained on those chunks (``streammix.demo.tokenizer``).
3. **Build.** ``streammix-build`` with tokenization, heuristic quality, MinHash clusters and
   diversity, and a held-out split per domain.
4. **SampleMix plan.** Repeat counts from quality and diversity for the training token
   budget, printed per domain and plotted.
5. **Training.** A small GPT-2 on the CPU with Composer: ``StreamMixDataset`` serving the
   SampleMix counts inside each domain while ``OnlineMixing`` (Aioli by default) sets the
   domain weights online; weights and per-domain losses are printed at every decision, and
   held-out per-domain losses are printed at the end.
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


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    out: Path = Path("demo-out")
    steps: int | None = None  # None: DEFAULT_STEPS
    policy: str = "aioli"
    seed: int = 0
    max_docs_per_domain: int | None = None
    chunks_per_domain: int = 2500
    vocab_size: int = 4096
    seq_len: int = 128
    batch_size: int = 16
    val_samples: int = 64
    workers: int = 2

    def __post_init__(self) -> None:  # checked before anything is collected or built
        if self.policy not in DEMO_POLICIES:
            raise ValueError(
                f"the demo runs the online policies {list(DEMO_POLICIES)}, got {self.policy!r}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


DEFAULT_STEPS = 1200


def _step(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(
        f"   done in {time.perf_counter() - started:.1f} s{'; ' + detail if detail else ''}",
        flush=True,
    )


def chunk_corpus(raw: dict[str, Path], out_dir: Path, *, per_domain: int) -> dict[str, Path]:
    """Split each domain's documents into chunks; keep ``per_domain`` spread evenly."""
    from streammix.demo.local_corpus import read_jsonl_texts, split_into_sections

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
        paths[domain] = out_dir / f"{domain}.jsonl"
        with open(paths[domain], "w", encoding="utf-8") as stream:
            for i, chunk in enumerate(kept):
                stream.write(json.dumps({"text": chunk, "id": f"{domain}-{i}"}) + "\n")
        print(
            f"   {domain:<9} {len(kept):>6} chunks "
            f"({sum(len(c) for c in kept) / 1e6:.1f} MB) from {path.name}",
            flush=True,
        )
    return paths


DEMO_AIOLI = {"lp_rounds": 1, "lp_steps": 4, "update_steps": 150}


def _train(
    config: DemoConfig, build_dir: Path, plan_file: Path, tokenizer_dir: Path, steps: int
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from streammix.composer.experiment import ExperimentConfig, run_experiment

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    options = DEMO_AIOLI if config.policy == "aioli" else {}
    return run_experiment(
        ExperimentConfig(
            build=build_dir,
            out=config.out,
            steps=steps,
            policy=config.policy,
            policy_options=options,
            sample_counts=plan_file,
            seed=config.seed,
            seq_len=config.seq_len,
            batch_size=config.batch_size,
            vocab_size=len(tokenizer),
            pad_id=int(tokenizer.pad_token_id),
            val_samples=config.val_samples,
            verbose=True,
        )
    )


def run_demo(config: DemoConfig) -> dict[str, Any]:
    from streammix.build.config import BuildConfig, DomainSpec
    from streammix.build.pipeline import run_build
    from streammix.build.plan_plots import plot_plan
    from streammix.build.samplemix_plan import format_report, plan_build, save_build_plan
    from streammix.demo.local_corpus import collect_local_corpus, read_jsonl_texts
    from streammix.demo.tokenizer import train_tokenizer
    from streammix.metadata.samplemix import SampleMixConfig

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    total_started = time.perf_counter()

    started = _step("1/6 collecting text already on this machine")
    raw = collect_local_corpus(out / "raw", max_docs_per_domain=config.max_docs_per_domain)
    corpus = chunk_corpus(raw, out / "corpus", per_domain=config.chunks_per_domain)
    _done(started)

    started = _step("2/6 training a byte-level BPE tokenizer")
    tokenizer_dir = out / "tokenizer"
    texts = [t for p in corpus.values() for t in read_jsonl_texts(p)]
    train_tokenizer(texts, tokenizer_dir, vocab_size=config.vocab_size)
    _done(started, f"vocabulary {config.vocab_size} on {len(texts)} chunks")

    started = _step("3/6 streammix-build: MDS shards + quality, MinHash, clusters, diversity")
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

    steps = config.steps or DEFAULT_STEPS
    budget = steps * config.batch_size * config.seq_len
    started = _step(f"4/6 SampleMix plan for {budget:,} training tokens (alpha 0.8)")
    plan_config = SampleMixConfig(
        alpha=0.8, token_budget=budget, max_repeats_per_sample=4, seed=config.seed
    )
    plan = plan_build(build_dir, plan_config)
    print(format_report(plan), flush=True)
    plan_file = save_build_plan(plan, out / "plan.npz", plan_config)
    plot_plan(plan, out / "plan.png")
    _done(started, f"plan in {plan_file}, picture in {out / 'plan.png'}")

    started = _step(
        f"5/6 training a small GPT-2 for {steps} steps with {config.policy!r} "
        "online mixing on top of the SampleMix counts"
    )
    result = _train(config, build_dir, plan_file, tokenizer_dir, steps)
    for name, loss in result["held_out_loss"].items():
        print(f"   held-out {name:<9} loss {loss:.3f}  perplexity {math.exp(loss):8.1f}")
    _done(started, f"{result['train_seconds']:.0f} s of training")

    started = _step("6/6 plots")
    from streammix.composer.history import read_history
    from streammix.composer.plot import plot_history

    domains, records = read_history(out / "history.jsonl")
    plot_history(records, out / "mixing.png", domain_names=domains)
    _done(started, f"{out / 'mixing.png'}, {out / 'plan.png'}")
    print(
        f"\nstreammix demo finished in {(time.perf_counter() - total_started) / 60:.1f} min; "
        f"everything is in {out}/",
        flush=True,
    )
    return result

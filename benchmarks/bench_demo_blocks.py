"""Size the local demo: corpus size, tokenizer training time, tiny GPT-2 CPU throughput.

Measures, on this machine:
1. ``collect_local_corpus``: documents, MB and tokens per domain, and collection time;
2. ``train_tokenizer`` on the whole corpus (median of repeats);
3. training steps/s of ``tiny_gpt2`` under Composer's ``Trainer`` and, as the peer, under a
   plain PyTorch loop (same model, batches, optimizer), alternating repeats, medians; the
   first ``warmup`` steps of every run are excluded.

Usage: python3 benchmarks/bench_demo_blocks.py [--quick] [--extra] [--threads 1,2] [--repeats R]
       [--output FILE.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from composer import Callback, Event, Logger, State, Trainer
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

from streammix.composer.model import LMCollator, tiny_gpt2
from streammix.demo.local_corpus import collect_local_corpus, read_jsonl_texts, summarize_corpus
from streammix.demo.tokenizer import train_tokenizer


class RandomBlocks(Dataset):
    def __init__(self, *, num_blocks: int, seq_len: int, vocab_size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.blocks = torch.randint(1, vocab_size, (num_blocks, seq_len), generator=gen)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.blocks[index], "domain": 0}


class BatchClock(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.BATCH_END:
            self.times.append(time.perf_counter())


def _rate(times: list[float], warmup: int) -> float:
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def composer_steps_per_s(loader: DataLoader, config: dict, steps: int, warmup: int) -> float:
    model = tiny_gpt2(**config, seed=0)
    clock = BatchClock()
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration=f"{steps}ba",
        optimizers=torch.optim.AdamW(model.parameters(), lr=1e-3),
        device="cpu",
        seed=0,
        progress_bar=False,
        log_to_console=False,
        loggers=[],
        callbacks=[clock],
    )
    trainer.fit()
    trainer.close()
    return _rate(clock.times, warmup)


def torch_steps_per_s(loader: DataLoader, config: dict, steps: int, warmup: int) -> float:
    model = tiny_gpt2(**config, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    batches = iter(loader)
    for _ in range(steps):
        batch = next(batches)
        optimizer.zero_grad()
        model.loss(model(batch), batch).backward()
        optimizer.step()
        times.append(time.perf_counter())
    return _rate(times, warmup)


def bench_corpus(root: Path, max_docs: int | None, repeats: int) -> tuple[list[str], Path]:
    start = time.perf_counter()
    paths = collect_local_corpus(root / "corpus", max_docs_per_domain=max_docs)
    collect_s = time.perf_counter() - start
    texts = {d: read_jsonl_texts(p) for d, p in paths.items()}
    all_texts = [t for d in texts for t in texts[d]]
    train_s = []
    for i in range(repeats):
        start = time.perf_counter()
        tok_dir = train_tokenizer(all_texts, root / f"tok{i}", vocab_size=4096)
        train_s.append(time.perf_counter() - start)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    lines = ["| domain | documents | MB (UTF-8 text) | tokens (vocab 4096) |", "|---|---|---|---|"]
    for domain, summary in summarize_corpus(paths).items():
        tokens = sum(len(ids) for ids in tokenizer(texts[domain])["input_ids"])
        lines.append(
            f"| {domain} | {summary.num_docs} | {summary.num_bytes / 1e6:.2f} | {tokens / 1e6:.2f} M |"
        )
    total_mb = sum(len(t.encode("utf-8")) for t in all_texts) / 1e6
    lines += [
        "",
        f"collect_local_corpus: {collect_s:.2f} s",
        f"train_tokenizer (vocab 4096) on all {total_mb:.1f} MB: median {statistics.median(train_s):.2f} s"
        f" over {repeats} runs ({', '.join(f'{s:.2f}' for s in train_s)})",
    ]
    return lines, tok_dir


def bench_training(
    configs: list[dict], thread_counts: list[int], steps: int, warmup: int, repeats: int
) -> list[str]:
    """Steps/s per (config, torch threads); thread counts alternate inside each repeat."""
    lines = [
        "| n_layer | n_embd | seq len | batch | torch threads | Composer steps/s median (best) "
        "| plain torch steps/s median (best) | ratio of medians |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        seq_len, batch = config["max_seq_len"], config.pop("batch")
        data = RandomBlocks(num_blocks=steps * batch, seq_len=seq_len, vocab_size=4096, seed=0)
        loader = DataLoader(
            data, batch_size=batch, collate_fn=LMCollator(max_seq_len=seq_len, pad_id=0)
        )
        runs = {threads: ([], []) for threads in thread_counts}
        for _ in range(repeats):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                runs[threads][0].append(composer_steps_per_s(loader, config, steps, warmup))
                runs[threads][1].append(torch_steps_per_s(loader, config, steps, warmup))
        for threads, (composer_runs, torch_runs) in runs.items():
            c, t = statistics.median(composer_runs), statistics.median(torch_runs)
            lines.append(
                f"| {config['n_layer']} | {config['n_embd']} | {seq_len} | {batch} | {threads} "
                f"| {c:.1f} ({max(composer_runs):.1f}) | {t:.1f} ({max(torch_runs):.1f}) "
                f"| {c / t:.2f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, few steps, 1 repeat")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated torch thread counts to compare, e.g. 1,2 (default: torch's choice)",
    )
    parser.add_argument(
        "--extra", action="store_true", help="also time n_layer 4 / n_embd 256 and seq len 256"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default 3)")
    args = parser.parse_args()
    thread_counts = [torch.get_num_threads()]
    if args.threads:
        thread_counts = [int(part) for part in args.threads.split(",")]
    repeats = 1 if args.quick else args.repeats
    steps, warmup = (12, 2) if args.quick else (50, 5)
    base = {"vocab_size": 4096, "max_seq_len": 128, "n_head": 4, "batch": 16}
    configs = [base | {"n_layer": 2, "n_embd": 128}]
    if args.extra:
        configs += [
            base | {"n_layer": 4, "n_embd": 256},
            base | {"n_layer": 2, "n_embd": 128, "max_seq_len": 256, "batch": 8},
        ]
    report = [
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"load average before: {os.getloadavg()[0]:.2f}",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        corpus_lines, _ = bench_corpus(Path(tmp), 50 if args.quick else None, repeats)
    report += corpus_lines + [""]
    print("\n".join(report), flush=True)
    report += bench_training(configs, thread_counts, steps, warmup, repeats)
    report += ["", f"load average after: {os.getloadavg()[0]:.2f}"]
    text = "\n".join(report)
    print("\n" + text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""How many torch threads the demo uses and how many steps fit its time budget.

**Threads.** Torch's default is one thread per core. On a shared machine that is the worst
choice: with 2 cores and one other CPU-bound job, 2 OpenMP threads keep waiting for each
other and a step takes 3-5x longer than with 1 thread (``benchmarks/RESULTS.md``, demo
building blocks). :func:`default_threads` takes the cores this process may run on
(``os.sched_getaffinity``) minus the ones already busy (the 1-minute load average,
``os.getloadavg``), rounded, and at least 1:

    threads = max(1, min(cpus, round(cpus - load)))

so 2 idle cores give 2 threads and 2 cores with one spinning job give 1. The demo's
``--threads`` option overrides it.

**Steps.** :func:`measure_step_seconds` times a few optimizer steps of the demo's model on
random tokens with the chosen threads (after warm-up steps that are not counted), and
:func:`steps_for_budget` turns a training-time budget into a whole number of mixing rounds.
The measurement is a few seconds; it makes the demo take about the same time on a fast
idle machine and on a slow shared one (the fast one trains more steps).
"""

from __future__ import annotations

import math
import os
import time


def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` without one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def current_load() -> float:
    """The 1-minute load average (runnable processes), 0.0 where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """Torch threads for a CPU run: the free cores, ``max(1, min(cpus, round(cpus - load)))``."""
    cpus = available_cpus() if cpus is None else cpus
    load = current_load() if load is None else load
    if cpus < 1:
        raise ValueError(f"cpus must be >= 1, got {cpus}")
    if not math.isfinite(load) or load < 0:
        raise ValueError(f"load must be a finite number >= 0, got {load}")
    return max(1, min(cpus, int(math.floor(cpus - load + 0.5))))


def measure_step_seconds(
    *,
    vocab_size: int,
    seq_len: int,
    batch_size: int,
    n_layer: int,
    n_embd: int,
    n_head: int,
    lr: float,
    seed: int = 0,
    warmup: int = 2,
    min_steps: int = 5,
    min_seconds: float = 2.0,
) -> float:
    """Mean seconds of one AdamW step of the demo's GPT-2 on random tokens.

    Uses torch's current thread setting; ``warmup`` steps are run first and not counted,
    then at least ``min_steps`` steps and at least ``min_seconds`` are timed (a mean over
    a few seconds follows a shared machine's load better than a median of a few steps).
    """
    import torch

    from streammix.composer.model import causal_lm_loss, tiny_gpt2

    if warmup < 0 or min_steps < 1:
        raise ValueError(f"need warmup >= 0 and min_steps >= 1, got {warmup}, {min_steps}")
    model = tiny_gpt2(vocab_size=vocab_size, max_seq_len=seq_len, n_layer=n_layer,
                      n_head=n_head, n_embd=n_embd, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": tokens, "labels": tokens, "attention_mask": torch.ones_like(tokens)}
    def step() -> None:
        loss = causal_lm_loss(model(batch).logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    started, steps = time.perf_counter(), 0
    while steps < min_steps or time.perf_counter() - started < min_seconds:
        step()
        steps += 1
    return (time.perf_counter() - started) / steps


def steps_for_budget(
    *, seconds_per_step: float, budget_s: float, round_steps: int, min_rounds: int,
    max_rounds: int,
) -> int:
    """The whole number of ``round_steps``-step rounds that fits ``budget_s``, clamped."""
    if seconds_per_step <= 0 or budget_s <= 0 or round_steps < 1:
        raise ValueError("seconds_per_step, budget_s and round_steps must be positive")
    if not 1 <= min_rounds <= max_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}")
    rounds = int(budget_s / (seconds_per_step * round_steps))
    return round_steps * min(max_rounds, max(min_rounds, rounds))

"""Cost of a mixing policy decision, and of a resume round trip, per policy and domain count.

Claim checked: the policies add negligible time to training (well under a millisecond per
decision, against training steps of tens to hundreds of milliseconds). For Aioli the peer is
the reference trainer's own arithmetic for one LearnParams round (loops over probes, a
``np.linalg.solve`` per row, normalization, EMA update) written inline, timed on the same
losses in the same process, alternating repeats; medians are reported.

Also the long-run behaviour of the two bandit-style policies in simulation: ODM's weights
after 100k steps of constant losses 2/6/3 (they must favour the high-loss domain, not drift
to uniform), and DoReMi's smallest weight in the second half of a 20k-step run where each
domain's loss falls with the samples it gets (a starved domain must recover).

Usage: python3 benchmarks/bench_policies.py [--quick] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from streammix.mixing import Observation, make_policy
from streammix.mixing.simulate import (
    fixed_losses,
    power_law_loss,
    power_law_losses,
    run_policy,
    toy_losses,
)

POLICY_NAMES = ("static", "scheduled", "odm", "doremi", "aioli")


def policy_for(name: str, m: int):
    if name == "scheduled":
        points = [(0, [1.0] * m), (500, list(range(1, m + 1)))]
        return make_policy(name, points=points, mode="linear", interval=10)
    if name == "doremi":
        return make_policy(name, reference_loss=[2.0] * m)
    return make_policy(name)


def time_updates(name: str, m: int, updates: int) -> float:
    """Median seconds per update() over ``updates`` decisions (environment time excluded)."""
    policy = policy_for(name, m)
    environment = toy_losses(m)
    state = policy.init(m)
    decision, state = policy.start(state)
    step, times = 0, []
    for _ in range(updates):
        step += decision.num_steps
        observation = environment(decision, step)
        start = time.perf_counter()
        decision, state = policy.update(state, observation)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_round_trip(name: str, m: int, repeats: int) -> float:
    policy = policy_for(name, m)
    _, state = run_policy(policy, m, toy_losses(m), 7)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.load_state_dict(json.loads(json.dumps(policy.state_dict(state))))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_round(
    losses: np.ndarray, order: list[int], m: int, h: float, rounds: int
) -> np.ndarray:
    """The reference trainer's per-round arithmetic, as it is written there."""
    previous = losses[0].copy()
    graph = np.zeros((m, m))
    for k, j in enumerate(order):
        new = losses[k + 1]
        graph[:, j] += previous - new
        previous = new
    graph /= rounds
    w = np.zeros((m, m))
    for i in range(m):
        row = np.ones(m) * (1 - h) / (m - 1)
        row[i] = h
        w[i] = row
    a = np.zeros((m, m))
    for i, row in enumerate(graph):
        a[i] = np.linalg.solve(w, row)
    if a.min() < 0:
        a -= a.min()
    a /= a.sum()
    weights = np.ones(m) * np.exp(1.0 * a.sum(axis=0))
    return weights / weights.sum()


def time_aioli_round(m: int, repeats: int) -> tuple[float, float]:
    """Median seconds for one full LearnParams round: streammix vs reference arithmetic."""
    policy = make_policy("aioli")
    params = policy.resolve(m)
    probes = params["lp_rounds"] * m
    rng = np.random.default_rng(0)
    losses = 5.0 - np.cumsum(rng.uniform(0, 0.01, (probes + 1, m)), axis=0)
    ours, peer = [], []
    for _ in range(repeats):
        state = policy.init(m)
        _, state = policy.start(state)
        observations = [Observation(step=0, val_loss=losses[0])]
        step = 0
        for k in range(probes):
            step += params["lp_steps"]
            observations.append(Observation(step=step, val_loss=losses[k + 1]))
        start = time.perf_counter()
        for observation in observations:
            decision, state = policy.update(state, observation)
        ours.append(time.perf_counter() - start)
        order = list(range(m)) * params["lp_rounds"]
        start = time.perf_counter()
        reference_round(losses, order, m, params["one_hot_factor"], params["lp_rounds"])
        peer.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(peer)


def long_run_lines() -> list[str]:
    """ODM after 100k steps of losses 2/6/3; DoReMi's minimum weight over a long run."""
    lines = ["| long run (simulation) | result |", "|---|---|"]
    for reward in ("loss", "exp_loss"):
        policy = make_policy("odm", reward=reward)
        decisions, _ = run_policy(policy, 3, fixed_losses([2.0, 6.0, 3.0]), 10_000)
        weights = ", ".join(f"{w:.3f}" for w in decisions[-1].weights)
        lines.append(f"| odm reward={reward}, losses 2/6/3, 100k steps | weights [{weights}] |")
    floor, scale = np.array([1.0, 2.0, 1.5]), np.array([3.0, 1.0, 2.0])
    reference = power_law_loss(floor, scale, np.full(3, 20_000 * 8 / 3))
    policy = make_policy("doremi", reference_loss=reference.tolist(), interval=10)
    decisions, _ = run_policy(policy, 3, power_law_losses(floor, scale), 2_000)
    weights = np.array([d.weights for d in decisions])
    early = ", ".join(f"{w:.4f}" for w in weights[:300].min(axis=0))
    late = ", ".join(f"{w:.3f}" for w in weights[1000:].min(axis=0))
    lines.append(
        f"| doremi eta=1 interval=10, 20k steps: min weight per domain, first 3k steps / "
        f"second half | [{early}] / [{late}] |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (seconds)")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    updates, repeats = (200, 20) if args.quick else (2000, 200)
    lines = [
        "| policy | domains | update() median (us) | state round trip (us) |",
        "|---|---:|---:|---:|",
    ]
    for name in POLICY_NAMES:
        for m in (2, 7, 32):
            per_update = time_updates(name, m, updates)
            round_trip = time_round_trip(name, m, repeats)
            lines.append(f"| {name} | {m} | {per_update * 1e6:.1f} | {round_trip * 1e6:.1f} |")
    lines += [
        "",
        "| Aioli LearnParams round (all probe updates) | domains | streammix (us) | reference arithmetic (us) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in (2, 3, 7):
        ours, peer = time_aioli_round(m, repeats)
        lines.append(f"| round | {m} | {ours * 1e6:.0f} | {peer * 1e6:.0f} | {ours / peer:.1f}x |")
    lines += [""] + long_run_lines()
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()

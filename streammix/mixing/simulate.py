"""Drive a policy without a model: the callback's loop against a function that returns losses.

Used by the tests, the benchmark and anyone who wants to see what a policy does on a toy
problem before spending GPU time. ``run_policy`` plays the Composer callback's part: it calls
``start``, then ``update`` after each decision's ``num_steps`` steps with whatever the
``environment(decision, step)`` function observes. ``toy_losses`` is such an environment:
losses that are a pure function of the step and the weights (so a resumed simulation sees
exactly the observations the uninterrupted one saw).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streammix.mixing.protocol import Decision, MixingPolicy, Observation

Environment = Callable[[Decision, int], Observation]


def toy_losses(num_domains: int, batch_size: int = 8) -> Environment:
    """Per-domain losses ``2 + cos(0.013 s + d) + 0.3 w_d + 0.01 d`` and realized counts."""

    def observe(decision: Decision, step: int) -> Observation:
        d = np.arange(num_domains)
        val = 2.0 + np.cos(0.013 * step + d) + 0.3 * decision.weights + 0.01 * d
        counts = np.floor(decision.weights * batch_size * decision.num_steps + 0.5)
        train = np.where(counts > 0, val + 0.05 * np.sin(step + d), np.nan)
        return Observation(
            step=step,
            train_loss=train,
            train_count=counts,
            val_loss=val if decision.evaluate else None,
        )

    return observe


def run_policy(
    policy: MixingPolicy,
    num_domains: int,
    environment: Environment,
    num_updates: int,
    *,
    initial_weights: np.ndarray | None = None,
    resume: tuple[dict, Decision] | None = None,
) -> tuple[list[Decision], dict]:
    """``start()`` then ``num_updates`` updates; ``resume=(state, last decision)`` continues.

    Returns the decisions made (including the start decision unless resuming) and the state.
    """
    if resume is None:
        state = policy.init(num_domains, initial_weights)
        decision, state = policy.start(state)
        decisions = [decision]
    else:
        state, decision = resume
        decisions = []
    step = state["next_step"] - decision.num_steps
    for _ in range(num_updates):
        step += decision.num_steps
        decision, state = policy.update(state, environment(decision, step))
        decisions.append(decision)
    return decisions, state


def decisions_identical(a: list[Decision], b: list[Decision]) -> bool:
    """Bit-for-bit equality of two decision sequences (NaN info values compare equal)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not np.array_equal(x.weights, y.weights):
            return False
        if (x.num_steps, x.evaluate, x.phase) != (y.num_steps, y.evaluate, y.phase):
            return False
        if x.info.keys() != y.info.keys():
            return False
        if not all(np.array_equal(x.info[k], y.info[k], equal_nan=True) for k in x.info):
            return False
    return True

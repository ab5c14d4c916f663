"""OpMixProbing: the Composer callback that runs OP-Mix (arXiv:2605.15220) inside a run.

OP-Mix (Hu et al. 2026, "Always Learning, Always Mixing"; :mod:`streammix.mixing.opmix` has
the policy and :mod:`streammix.mixing.mixing_law` the equations) trains on the prior mixture
``q`` until a decision point (by default once, after ``probe_fraction = 20%`` of the run's
``max_duration``; ``probe_every`` in the policy repeats it), then probes the model:

1. **Snapshot.** A deep copy of the (unwrapped) Composer model; the main model, its
   optimizer and the global torch RNG are untouched (LoRA initialization and the probe
   batches use their own seed, under ``torch.random.fork_rng``).
2. **Probes.** One LoRA adapter per domain ``j`` (``peft``; ``r = 16``, ``alpha = 32`` as in
   the reference), trained for ``steps`` AdamW steps on batches of that domain's training
   samples: the head of the domain's training split, read with ``read_split_head`` (or
   ``train_data=``), so the main sample order is not touched. Batches are a seeded shuffle.
3. **Proxies.** For every design mixture ``x`` (the vertices and Dirichlet draws, see
   :meth:`OpMixPolicy.proxy_mixtures`) the adapters are removed and every adapted weight is
   set to ``W + sum_j x_j dW_j`` with ``dW_j = (alpha / r) B_j A_j`` (``peft``'s
   ``get_delta_weight``, so Conv1D layouts are handled): the exact linear interpolation of
   the adapters' deltas.
4. **Evaluation.** Each proxy's mean per-sample held-out loss on every domain (the first
   ``val_samples`` of each ``-val`` split, or ``val_data=``), in float64.
5. **Decision.** The policy fits the laws and solves the KL-regularized proposer, and the
   weights are published with ``dataset.publish(start, weights, final_until=...)`` for the
   rest of the run.

**Ranks.** The work is sharded: rank ``j mod W`` trains adapter ``j`` (seeded per adapter,
so the result does not depend on ``W``) and broadcasts it; the evaluations (the snapshot's
own loss, then each proxy) go round-robin over the ranks and are summed, so every rank holds
the owners' exact numbers. The policy itself (``start``, the "probe now" step, the fit and
the proposer) runs on rank 0 only and its decision and state are broadcast, as in
``OnlineMixing`` (both share ``streammix.composer.decisions.PolicyDecisions``): every rank
applies rank 0's weights by construction.

Cost, logged per decision in ``info`` and ``history``: ``probe_train_steps`` (``m * steps``
LoRA steps on batches of ``batch_size``) and ``probe_train_samples``; ``probe_eval_batches``
and ``probe_eval_samples`` (forward passes over the held-out sets, ``1 + P`` times: the
snapshot and every proxy); and their shares of the run's compute, counted in training
samples (``total_steps * global_batch_size``, equal sample lengths assumed):
``probe_train_share`` counts a LoRA sample as a full training sample (an upper bound: the
backward still runs through the whole network but skips the frozen weights' gradients),
``probe_eval_share`` a held-out forward as a third of one (forward + backward is about three
forwards), and ``probe_compute_share`` is their sum.

In ``exact`` mode DataLoader workers wait for the decision's weights while the main process
probes: set ``MixingConfig(publish_timeout_s=...)`` above the probe's duration (600 s by
default), or use ``lagged`` mode, whose workers keep going on the prior for ``lag_batches``.

Limits: the model must fit on one device (no FSDP; DDP is unwrapped); probing
happens inside one ``BATCH_END`` event, so a checkpoint never lands inside it, and a run
killed while probing resumes from its last checkpoint and probes again from the same state.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.core import Event, State, TimeUnit
from composer.loggers import Logger
from composer.utils import dist

from streammix.composer.decisions import PolicyDecisions
from streammix.composer.lora_probes import (
    PURPOSE_PROBE,
    ProbeConfig,
    adapter_deltas,
    adapter_name,
    attach_adapters,
    domain_batches,
    held_out_losses,
    set_interpolation,
    train_adapter,
    unwrap,
)
from streammix.dataset.dataset import StreamMixDataset, read_split_head
from streammix.mixing.opmix import OpMixPolicy, ProbeObservation
from streammix.mixing.protocol import Decision, Observation, restore_state
from streammix.mixing.registry import make_policy


class OpMixProbing(PolicyDecisions):
    """OP-Mix for a ``StreamMixDataset`` (see the module docstring).

    Args:
        policy: ``"opmix"`` or an :class:`OpMixPolicy`; ``probe_at``/``total_steps`` left
            ``None`` are filled in from the run's ``max_duration``.
        policy_options: options for ``make_policy("opmix", ...)``.
        probe_fraction: the decision point as a share of ``max_duration`` (default 0.2).
        probe: how the LoRA probes are trained and evaluated.
        train_data / val_data: ``{domain name: [sample dict, ...]}`` overriding the heads of
            the build's training and held-out splits.
        history_path: if given, rank 0 appends each decision there as one JSON line.
    """

    def __init__(self, policy: str | OpMixPolicy = "opmix", *,
                 policy_options: Mapping[str, Any] | None = None,
                 probe_fraction: float = 0.2, probe: ProbeConfig | None = None,
                 train_data: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 val_data: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 history_path: str | Path | None = None) -> None:
        if isinstance(policy, str):
            policy = make_policy(policy, **dict(policy_options or {}))
        elif policy_options:
            raise ValueError("policy_options only apply when policy is given by name")
        if not isinstance(policy, OpMixPolicy):
            raise TypeError(f"OpMixProbing runs the OP-Mix policy, got {policy!r}")
        if not (isinstance(probe_fraction, (int, float)) and 0.0 < probe_fraction < 1.0):
            raise ValueError(f"probe_fraction must be in (0, 1), got {probe_fraction!r}")
        super().__init__(policy, history_path)
        self.probe_fraction = float(probe_fraction)
        self.probe = probe if probe is not None else ProbeConfig()
        if not isinstance(self.probe, ProbeConfig):
            raise TypeError(f"probe must be a ProbeConfig, got {probe!r}")
        self.train_data, self.val_data = train_data, val_data

    # ------------------------------------------------------------------ events

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.AFTER_LOAD:
            self._setup(state)
        elif event == Event.FIT_START:
            self._start_history()
            if self._decision is None:
                self._apply(state, logger, self._policy_step(None), None)
        elif event == Event.BATCH_END:
            done = int(state.timestamp.batch)
            if self._dataset.mixing.weight_updates == "lagged":
                self._dataset.commit(self._dataset.weight_start_for(done))
            total = self.policy.total_steps
            if done >= self._decision_end and (total is None or done < total):
                self._decide(state, logger, done)

    def _setup(self, state: State) -> None:
        dataset = self._attach_dataset(state)
        total = _max_batches(state)
        fill = {}
        if self.policy.probe_at is None:
            if total is None:
                raise ValueError("set OpMixPolicy.probe_at: max_duration is not in batches "
                                 "or epochs of a sized dataloader")
            fill["probe_at"] = max(1, int(self.probe_fraction * total))
        if self.policy.total_steps is None and total is not None:
            fill["total_steps"] = total
        if fill:
            self.policy = replace(self.policy, **fill)
        if self._policy_state is None:
            self._policy_state = self.policy.init(len(dataset.domain_names),
                                                  np.asarray(dataset.initial_weights))
        else:  # resumed: the checkpoint must come from the same options
            self._policy_state = self.policy.load_state_dict(
                self.policy.state_dict(self._policy_state))
        collate = getattr(state.train_dataloader, "collate_fn", None)
        if collate is None:
            raise TypeError("the train dataloader has no collate_fn to batch probe samples")
        self.set_probe_data(collate, self._read_train_samples(dataset),
                            self._read_val_samples(dataset))

    def set_probe_data(self, collate: Any, train_samples: Sequence[Sequence[Mapping]],
                       val_samples: Mapping[str, Sequence[Mapping]]) -> None:
        """The samples the probes train on (per domain index) and are evaluated on."""
        empty = [j for j, samples in enumerate(train_samples) if not samples]
        empty += [name for name, samples in val_samples.items() if not samples]
        if empty:
            raise ValueError(f"no probe samples for domains {empty}")
        self._collate = collate
        self._train_samples = [list(samples) for samples in train_samples]
        self._val_batches = {name: domain_batches(samples, collate, self.probe.val_batch_size)
                             for name, samples in val_samples.items()}
        self._val_sample_count = sum(len(samples) for samples in val_samples.values())

    def _read_train_samples(self, dataset: StreamMixDataset) -> list[list[dict[str, Any]]]:
        names, count = dataset.domain_names, self.probe.train_samples
        if self.train_data is not None:
            missing = [n for n in names if not self.train_data.get(n)]
            if missing:
                raise ValueError(f"train_data lacks samples for domains {missing}")
            return [[dict(s, domain=d) for s in list(self.train_data[n])[:count]]
                    for d, n in enumerate(names)]
        sources = dataset._sources  # the domains' training folders, read past the sampler
        return [[dict(s, domain=d) for s in read_split_head(local, remote, count)]
                for d, (local, remote) in enumerate(zip(sources.local_dirs,
                                                        sources.remote_dirs))]

    def _read_val_samples(self, dataset: StreamMixDataset) -> dict[str, list[dict[str, Any]]]:
        names, count = dataset.domain_names, self.probe.val_samples
        if self.val_data is None:
            return dataset.held_out_samples(count)
        missing = [n for n in names if not self.val_data.get(n)]
        if missing:
            raise ValueError(f"val_data lacks held-out samples for domains {missing}")
        return {n: [dict(s, domain=d) for s in list(self.val_data[n])[:count]]
                for d, n in enumerate(names)}

    # ------------------------------------------------------------------ deciding

    def _decide(self, state: State, logger: Logger, done: int) -> None:
        decision = self._policy_step(Observation(step=done))
        observation = None
        if decision.phase == "probe":
            observation, cost = self.probe_now(state, self.policy.proxy_mixtures(
                self._policy_state), done)
            decision = self._policy_step(observation)
            total = self.policy.total_steps or done
            cost.update(probe_cost_shares(cost, max(total, 1) * self._dataset.global_batch_size))
            decision = replace(decision, info={**decision.info, **cost})
        self._apply(state, logger, decision, observation)

    def probe_now(self, state: State, mixtures: np.ndarray,
                  step: int) -> tuple[ProbeObservation, dict[str, float]]:
        """Snapshot, train the adapters, evaluate every proxy, sharded over the ranks.

        Rank ``j mod W`` trains adapter ``j`` and broadcasts it; the snapshot's own loss
        (slot 0) and proxy ``p`` (slot ``p + 1``) are evaluated by rank ``slot mod W`` and
        summed over ranks, so every rank gets the owners' exact numbers.
        """
        main = unwrap(state.model)
        num_domains, world, rank = mixtures.shape[1], dist.get_world_size(), \
            dist.get_global_rank()
        seed = self.probe.seed + step
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        num_eval = len(self._val_batches)
        losses = np.zeros((1 + mixtures.shape[0], num_eval))
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            snapshot = copy.deepcopy(main)
            peft_model = attach_adapters(snapshot, num_domains, self.probe)
            for j in range(num_domains):
                if j % world == rank:
                    torch.manual_seed(int(np.random.SeedSequence([seed, PURPOSE_PROBE, j])
                                          .generate_state(1)[0]))
                    train_adapter(snapshot, peft_model, j, self._train_samples[j],
                                  self._collate, state, self.probe, seed)
            if world > 1:
                for j in range(num_domains):
                    for name, param in peft_model.named_parameters():
                        if f".{adapter_name(j)}." in name:
                            dist.broadcast(param.data, src=j % world)
            layers = adapter_deltas(peft_model, num_domains)
            snapshot.model = peft_model.unload()
            for slot in range(rank, losses.shape[0], world):
                set_interpolation(layers, np.zeros(num_domains) if slot == 0
                                  else mixtures[slot - 1])
                losses[slot] = held_out_losses(snapshot, self._val_batches, state)[0]
        del snapshot, peft_model, layers
        packed = state.device.tensor_to_device(torch.tensor(losses.ravel(), dtype=torch.float64))
        dist.all_reduce(packed)  # x + 0 = x: the owners' numbers, exactly, on every rank
        losses = packed.cpu().numpy().reshape(losses.shape)
        observation = ProbeObservation(step=step, proxy_mixtures=mixtures,
                                       proxy_losses=losses[1:], base_loss=losses[0])
        eval_batches = sum(len(b) for b in self._val_batches.values()) * losses.shape[0]
        cost = {"probe_train_steps": float(num_domains * self.probe.steps),
                "probe_train_samples": float(num_domains * self.probe.steps
                                             * self.probe.batch_size),
                "probe_eval_batches": float(eval_batches),
                "probe_eval_samples": float(self._val_sample_count * losses.shape[0])}
        return observation, cost

    def _apply(self, state: State, logger: Logger, decision: Decision,
               observation: ProbeObservation | None) -> None:
        """Publish ``decision`` from the next batch and record it with what the probes saw."""
        done = int(state.timestamp.batch)
        start = self._publish(done, decision)
        record = {"step": done, "phase": decision.phase, "num_steps": decision.num_steps,
                  "weights": decision.weights.tolist(), "info": dict(decision.info)}
        if observation is not None:
            record["proxy_mixtures"] = observation.proxy_mixtures.tolist()
            record["proxy_losses"] = observation.proxy_losses.tolist()
            record["base_loss"] = observation.base_loss.tolist()
        self._log_decision(record, start, decision, logger)

    def _restore_policy_state(self, obj: dict) -> dict:
        """Options are checked against the run in ``_setup``, once ``probe_at`` and
        ``total_steps`` are filled in from ``max_duration`` (after the checkpoint loads)."""
        return restore_state(self.policy.name, obj, self.policy.state_arrays)


def probe_cost_shares(cost: Mapping[str, float], run_samples: int) -> dict[str, float]:
    """The probes' cost as shares of a run that trains on ``run_samples`` samples: a LoRA
    training sample counts as one training sample, a held-out forward as a third of one."""
    train = cost["probe_train_samples"] / run_samples
    evaluation = cost["probe_eval_samples"] / (3 * run_samples)
    return {"probe_train_share": train, "probe_eval_share": evaluation,
            "probe_compute_share": train + evaluation}


def _max_batches(state: State) -> int | None:
    """The run's length in batches, if ``max_duration`` says it (batches or sized epochs)."""
    duration = state.max_duration
    if duration is None:
        return None
    if duration.unit == TimeUnit.BATCH:
        return int(duration.value)
    if duration.unit == TimeUnit.EPOCH and state.dataloader_len is not None:
        return int(duration.value) * int(state.dataloader_len.value)
    return None


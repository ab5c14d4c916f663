"""OnlineMixing: a Composer callback that runs a mixing policy and publishes its weights.

The loop, identical on every rank:

* ``AFTER_LOAD`` (inside ``Trainer(...)``): find the ``StreamMixDataset`` behind the train
  dataloader and check everything that could otherwise fail mid-run: policy name and
  options, domain count, validation data for policies that evaluate, the weight-update mode.
* ``FIT_START``: a fresh run asks the policy for its first decision and publishes it; a
  resumed run continues the decision it was in (the dataset restored the schedule).
* ``AFTER_LOSS``: per-token losses of the (micro)batch from the logits the step already
  computed (``streammix.composer.token_loss``: any causal LM, no model-specific method),
  summed per domain using the ``domain`` (or, for mixed packing, ``token_domain``) ids the
  batch carries. Per-domain losses are means over target tokens.
* ``BATCH_END``: the step's per-domain sums are all-reduced and added, in float64 and in step
  order, to the decision's running totals (so a resumed run adds the very same numbers).
  When the decision's steps are done: per-domain validation loss if the decision asked for
  it (the validation batches are split over the ranks and the per-domain sums
  all-reduced), then the policy step, publishing and the record that every streammix
  mixing callback shares (``streammix.composer.decisions.PolicyDecisions``): ``update`` on
  rank 0, its decision and state broadcast, so every rank applies rank 0's weights.

Decisions are indexed by Composer's absolute batch count, which is the data's global batch
index: a check at every batch refuses a run where the two drift apart.

``state_dict`` holds the policy state, the current decision and the history (the shared
part) and the running totals, so a run interrupted anywhere resumes to the same weights and the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.core import Event, State
from composer.loggers import Logger
from composer.utils import dist

from streammix.composer.decisions import PolicyDecisions
from streammix.composer.token_loss import logits_of, per_domain_token_losses
from streammix.dataset.dataset import StreamMixDataset
from streammix.mixing.protocol import Decision, MixingPolicy, Observation
from streammix.mixing.registry import make_policy


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class OnlineMixing(PolicyDecisions):
    """Online domain mixing for a ``StreamMixDataset`` (see the module docstring).

    Args:
        policy: a policy name (``static``, ``scheduled``, ``aioli``, ``odm``, ``doremi``) or
            a policy object following ``streammix.mixing.protocol.MixingPolicy``.
        policy_options: keyword options for ``make_policy`` when ``policy`` is a name.
        val_data: per-domain held-out samples ``{domain name: [sample dict, ...]}``; by
            default the first ``val_samples`` samples of each domain's ``-val`` split of the
            dataset's build are used (only for policies that evaluate).
        val_samples: held-out samples per domain when read from the build.
        val_batch_size: batch size of the validation forward passes.
        history_path: if given, rank 0 appends each decision there as one JSON line
            (``streammix.composer.history.read_history`` reads it back).
    """

    def __init__(self, policy: str | MixingPolicy = "aioli", *,
                 policy_options: Mapping[str, Any] | None = None,
                 val_data: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 val_samples: int = 32, val_batch_size: int = 8,
                 history_path: str | Path | None = None) -> None:
        if isinstance(policy, str):
            policy = make_policy(policy, **dict(policy_options or {}))
        else:
            if policy_options:
                raise ValueError("policy_options only apply when policy is given by name")
            if not isinstance(policy, MixingPolicy):
                raise TypeError(f"policy must be a name or a MixingPolicy, got {policy!r}")
        super().__init__(policy, history_path)
        if val_samples < 1 or val_batch_size < 1:
            raise ValueError("val_samples and val_batch_size must be >= 1")
        self.val_data = val_data
        self.val_samples = val_samples
        self.val_batch_size = val_batch_size
        self._loss_sum: np.ndarray | None = None
        self._tokens: np.ndarray | None = None  # target tokens per domain
        self._count: np.ndarray | None = None   # rows (sequences) per domain
        self._step: list[torch.Tensor] | None = None
        self._val_batches: list[tuple[int, Any]] | None = None
        self.validation_batches_run = 0  # on this rank, for reports and tests

    # ------------------------------------------------------------------ events

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.AFTER_LOAD:
            self._setup(state)
        elif event == Event.FIT_START:
            self._start_history()
            if self._decision is None:
                self._decide(state, logger, observation=None)
        elif event == Event.AFTER_LOSS:
            self._accumulate(state)
        elif event == Event.BATCH_END:
            self._end_of_batch(state, logger)

    # ------------------------------------------------------------------ setup

    def _setup(self, state: State) -> None:
        dataset = self._attach_dataset(state)
        if self.policy.needs_validation and dataset.mixing.weight_updates == "lagged":
            raise ValueError(
                f"policy {self.policy.name!r} measures the effect of the weights it just chose; "
                "that needs weight_updates='exact' (lagged weights would be measured late)"
            )
        _check_policy_options(self.policy, dataset)
        num_domains = len(dataset.domain_names)
        if self._policy_state is None:
            self._policy_state = self.policy.init(num_domains,
                                                  np.asarray(dataset.initial_weights))
        elif len(self._loss_sum) != num_domains:
            raise ValueError(f"the checkpointed mixing state has {len(self._loss_sum)} domains, "
                             f"the dataset {num_domains}")
        if self._loss_sum is None:
            self._loss_sum = np.zeros(num_domains)
            self._tokens = np.zeros(num_domains)
            self._count = np.zeros(num_domains)
        if self.policy.needs_validation:
            self._val_batches = self._load_val_batches(state, dataset)

    def _load_val_batches(self, state: State, dataset: StreamMixDataset
                          ) -> list[tuple[int, Any]]:
        names = dataset.domain_names
        if self.val_data is not None:
            missing = [n for n in names if not self.val_data.get(n)]
            if missing:
                raise ValueError(f"val_data lacks held-out samples for domains {missing}")
            per_domain = {n: list(self.val_data[n])[: self.val_samples] for n in names}
        else:
            per_domain = dataset.held_out_samples(self.val_samples)
        collate = getattr(state.train_dataloader, "collate_fn", None)
        if collate is None:
            raise TypeError("the train dataloader has no collate_fn to batch validation samples")
        batches = []
        for d, name in enumerate(names):
            samples = per_domain[name]
            batches.extend((d, collate(samples[i:i + self.val_batch_size]))
                           for i in range(0, len(samples), self.val_batch_size))
        return batches

    # ------------------------------------------------------------------ measuring

    def _accumulate(self, state: State) -> None:
        parts = per_domain_token_losses(state.outputs, state.batch, len(self._loss_sum))
        if self._step is None:
            self._step = list(parts)
        else:
            for total, part in zip(self._step, parts):
                total += part

    def _reduce_step(self) -> None:
        num_domains = len(self._loss_sum)
        if self._step is None:
            packed = torch.zeros(3 * num_domains, dtype=torch.float64)
        else:
            packed = torch.cat(self._step)
        dist.all_reduce(packed)
        packed = packed.cpu().numpy()
        self._loss_sum += packed[:num_domains]
        self._tokens += packed[num_domains:2 * num_domains]
        self._count += packed[2 * num_domains:]
        self._step = None

    def _validation_loss(self, state: State) -> np.ndarray:
        """Per-domain mean held-out loss: rank r evaluates batches r, r + W, ...; the
        per-domain sums and counts are all-reduced, so every rank gets the same numbers."""
        model = _unwrap(state.model)
        num_domains = len(self._dataset.domain_names)
        rank, world = dist.get_global_rank(), dist.get_world_size()
        was_training = model.training
        model.eval()
        sums = torch.zeros(2 * num_domains, dtype=torch.float64)
        try:
            with torch.no_grad():
                for _, batch in self._val_batches[rank::world]:
                    batch = state.device.batch_to_device(batch)
                    loss_sums, tokens, _ = per_domain_token_losses(
                        logits_of(model(batch)), batch, num_domains)
                    sums[:num_domains] += loss_sums.cpu()
                    sums[num_domains:] += tokens.cpu()
                    self.validation_batches_run += 1
        finally:
            model.train(was_training)
        sums = state.device.tensor_to_device(sums)
        dist.all_reduce(sums)
        sums = sums.cpu().numpy()
        return sums[:num_domains] / sums[num_domains:]

    # ------------------------------------------------------------------ deciding

    def _end_of_batch(self, state: State, logger: Logger) -> None:
        self._reduce_step()
        done = int(state.timestamp.batch)
        dataset = self._dataset
        if int(state.timestamp.sample) != done * dataset.global_batch_size:
            raise RuntimeError(
                f"after {done} batches Composer counted {int(state.timestamp.sample)} samples, "
                f"not {done} x {dataset.global_batch_size}: online weights are indexed by the "
                "data's global batch, so every batch must be a full global batch"
            )
        if dataset.mixing.weight_updates == "lagged":
            dataset.commit(dataset.weight_start_for(done))
        if done >= self._decision_end:
            with np.errstate(invalid="ignore", divide="ignore"):
                train_loss = np.where(self._tokens > 0, self._loss_sum / self._tokens, np.nan)
            observation = Observation(
                step=done, train_loss=train_loss, train_count=self._count.copy(),
                val_loss=self._validation_loss(state) if self._decision.evaluate else None,
            )
            self._decide(state, logger, observation)

    def _decide(self, state: State, logger: Logger, observation: Observation | None) -> None:
        done = int(state.timestamp.batch)
        decision = self._policy_step(observation)
        while decision.num_steps == 0:  # "measure now": evaluate before training on anything
            observation = Observation(step=done, val_loss=self._validation_loss(state))
            decision = self._policy_step(observation)
        self._loss_sum[:] = 0.0
        self._tokens[:] = 0.0
        self._count[:] = 0.0
        start = self._publish(done, decision)
        self._record(done, start, decision, observation, logger)

    def _record(self, step: int, start: int, decision: Decision,
                observation: Observation | None, logger: Logger) -> None:
        """One history entry per decision: the weights chosen at ``step`` (holding for
        ``num_steps``) and the losses measured up to ``step`` that led to them."""
        names = self._dataset.domain_names
        record = {
            "step": step,
            "phase": decision.phase,
            "num_steps": decision.num_steps,
            "weights": decision.weights.tolist(),
            "train_loss": _plain(observation.train_loss) if observation else None,
            "train_count": _plain(observation.train_count) if observation else None,
            "val_loss": _plain(observation.val_loss) if observation else None,
            "info": dict(decision.info),
        }
        metrics = {}
        for key in ("train_loss", "val_loss"):
            values = record[key]
            if values is not None:
                for name, value in zip(names, values):
                    if value is not None:
                        metrics[f"mixing/{key}/{name}"] = value
        if metrics:
            logger.log_metrics(metrics)
        self._log_decision(record, start, decision, logger)

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "loss_sum": _plain(self._loss_sum),
                "tokens": _plain(self._tokens), "count": _plain(self._count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["loss_sum"] is not None:
            self._loss_sum = np.asarray(state["loss_sum"], dtype=np.float64)
            self._count = np.asarray(state["count"], dtype=np.float64)
            if "tokens" not in state:
                raise ValueError("this OnlineMixing checkpoint predates per-token losses "
                                 "(no 'tokens'); resume it with the streammix that wrote it")
            self._tokens = np.asarray(state["tokens"], dtype=np.float64)


def _check_policy_options(policy: MixingPolicy, dataset: StreamMixDataset) -> None:
    """Policy options that must agree with the dataset or with what this callback does."""
    lag = dataset.mixing.lag_batches if dataset.mixing.weight_updates == "lagged" else 0
    if hasattr(policy, "lag") and policy.lag != lag:
        raise ValueError(
            f"policy {policy.name!r} has lag={policy.lag} but the dataset applies weights "
            f"{lag} batches after each decision; pass policy_options={{'lag': {lag}}} so its "
            "importance weights use the weights the observed batches were drawn with"
        )
    if getattr(policy, "form", None) == "reweight":
        raise ValueError(
            "OnlineMixing does not weight the training loss; DoReMi's form='reweight' needs a "
            "training loop that multiplies each sample's loss by Decision.info['loss_weight_i'] "
            "(use form='resample' here)"
        )


def _plain(values: np.ndarray | None) -> list[float | None] | None:
    if values is None:
        return None
    return [None if not math.isfinite(float(v)) else float(v) for v in values]

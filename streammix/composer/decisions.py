"""What every streammix mixing callback does with a policy's decisions, on every rank.

:class:`PolicyDecisions` is the base of ``OnlineMixing`` (``streammix.composer.callback``)
and ``OpMixProbing`` (``streammix.composer.opmix``). It owns:

* **the policy step**: ``policy.start``/``policy.update`` run on rank 0 only, and the
  decision and the new policy state are broadcast (``broadcast_object_list``). Every rank
  therefore applies rank 0's weights by construction, even where the numbers a policy is fed
  (forward passes, all-reduced sums) could differ in their last bits between ranks;
* **publishing**: ``dataset.publish(start, weights, final_until=start + num_steps)``, where
  ``start`` is the batch the weights apply from (the next one in exact mode, plus the lag in
  lagged mode);
* **the record**: the decision's weights and ``info`` go to Composer's loggers and, on rank
  0, as one line to ``history_path`` (``streammix.composer.history``); ``history`` keeps
  every record, and a resumed run rewrites the file from the checkpointed history once;
* **the checkpoint**: the policy state, the current decision, the batch at which it ends
  and the history. Subclasses add their own keys to the dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from streammix.composer.history import HistoryWriter
from streammix.dataset.dataset import StreamMixDataset
from streammix.mixing.protocol import Decision, MixingPolicy, Observation


class PolicyDecisions(Callback):
    """Decisions of ``policy`` for the ``StreamMixDataset`` set in ``_dataset`` at setup."""

    def __init__(self, policy: MixingPolicy, history_path: str | Path | None) -> None:
        self.policy = policy
        self.history_path = Path(history_path) if history_path is not None else None
        self.history: list[dict[str, Any]] = []
        self._policy_state: dict | None = None
        self._decision: Decision | None = None
        self._decision_end = 0
        self._dataset: StreamMixDataset | None = None
        self._history_writer: HistoryWriter | None = None

    def _attach_dataset(self, state: State) -> StreamMixDataset:
        """The ``StreamMixDataset`` behind the train dataloader, which must take weights."""
        dataloader = state.train_dataloader
        dataset = getattr(dataloader, "dataset", None)
        who = type(self).__name__
        if not isinstance(dataset, StreamMixDataset):
            raise TypeError(
                f"{who} needs a train dataloader over a StreamMixDataset, got "
                f"{type(dataset).__name__ if dataset is not None else type(dataloader).__name__}"
            )
        if dataset.mixing.weight_updates == "static":
            raise ValueError(
                f"{who} publishes weights during training: create the StreamMixDataset "
                "with MixingConfig(weight_updates='exact') (or 'lagged')"
            )
        self._dataset = dataset
        return dataset

    def _policy_step(self, observation: Observation | None) -> Decision:
        """``policy.start`` (no observation) or ``policy.update`` on rank 0; every rank takes
        its decision and policy state."""
        payload: list[Any] = [None]
        if dist.get_global_rank() == 0:
            if observation is None:
                payload[0] = self.policy.start(self._policy_state)
            else:
                payload[0] = self.policy.update(self._policy_state, observation)
        if dist.get_world_size() > 1:
            dist.broadcast_object_list(payload, src=0)
        decision, self._policy_state = payload[0]
        return decision

    def _publish(self, done: int, decision: Decision) -> int:
        """Make ``decision`` the current one from batch ``done``; returns its start batch."""
        self._decision = decision
        self._decision_end = done + decision.num_steps
        start = self._dataset.weight_start_for(done)
        self._dataset.publish(start, decision.weights.tolist(),
                              final_until=start + decision.num_steps)
        return start

    def _log_decision(self, record: dict[str, Any], start: int, decision: Decision,
                      logger: Logger) -> None:
        """Append ``record`` to the history and log the decision's weights and info."""
        self.history.append(record)
        names = self._dataset.domain_names
        metrics = {f"mixing/weight/{n}": float(w) for n, w in zip(names, decision.weights)}
        metrics["mixing/applies_from_batch"] = start
        metrics.update({f"mixing/info/{k}": v for k, v in decision.info.items()})
        logger.log_metrics(metrics)
        if self._history_writer is not None:
            self._history_writer.append(record)

    def _start_history(self) -> None:
        """Rank 0: the history file restarts from the checkpointed decisions, then appends."""
        if self.history_path is None or dist.get_global_rank() != 0:
            return
        self._history_writer = HistoryWriter(self.history_path, self._dataset.domain_names)
        self._history_writer.rewrite(self.history)

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        decision = self._decision
        return {
            "policy_name": self.policy.name,
            "policy": None if self._policy_state is None
            else self.policy.state_dict(self._policy_state),
            "decision": None if decision is None else {
                "weights": decision.weights.tolist(), "num_steps": decision.num_steps,
                "evaluate": decision.evaluate, "phase": decision.phase, "info": decision.info,
            },
            "decision_end": self._decision_end,
            "history": self.history,
        }

    def _restore_policy_state(self, obj: dict) -> dict:
        """The policy state from its state dict (subclasses may defer the options check)."""
        return self.policy.load_state_dict(obj)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("policy_name") != self.policy.name:
            raise ValueError(f"checkpoint was written by policy {state.get('policy_name')!r}, "
                             f"this callback runs {self.policy.name!r}")
        if state["policy"] is not None:
            self._policy_state = self._restore_policy_state(state["policy"])
        if state["decision"] is not None:
            d = state["decision"]
            self._decision = Decision(weights=np.asarray(d["weights"]), num_steps=d["num_steps"],
                                      evaluate=d["evaluate"], phase=d["phase"], info=d["info"])
        self._decision_end = int(state["decision_end"])
        self.history = list(state["history"])

"""Resume state of a StreamMixDataset: Composer's ``state_dict``/``load_state_dict`` contract.

The state is upstream's keys (``epoch``, ``sample_in_epoch``, ...) plus a ``streammix`` entry:
the absolute position in the run (``epoch * epoch_size + sample_in_epoch``), the seed, the
layout fingerprint, the canonical nodes ``C``, the kind of order (``epoch_order``: one-pass
epochs or canonical lanes; a checkpoint of another kind is refused, since the same ``C``
and data would give another order) and every published weight update. On load the
checkpoint's ``C`` is adopted (a state without one is from before canonical nodes: ``C = 1``),
so a run resumed on another number of physical nodes keeps its order; a ``C`` given to the
new instance that differs is refused. A plain ``StreamingDataset`` state
(no ``streammix`` entry) is adopted: the streammix order starts at its global sample.
"""

from __future__ import annotations

import logging
from typing import Any

from streammix.dataset.channel import WeightChannel

STATE_VERSION = 1
# the order's kind, recorded since one-pass epochs changed the order of natural-proportion
# runs with C > 1 ("epoch_order"; a checkpoint without it was taken in the canonical lanes)
ONE_PASS, CANONICAL_LANES = "one_pass", "canonical_lanes"
logger = logging.getLogger(__name__)


class ResumeMixin:
    """``state_dict``/``load_state_dict`` of StreamMixDataset (mixed in before upstream's)."""

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        """The resume state (Composer's contract: ``num_samples`` is its ``sample_in_epoch``).

        Upstream names the epoch of the last iterator started (``next_epoch - 1``). At an
        epoch-end checkpoint Composer has already moved to the next epoch and passes
        ``num_samples=0``, so upstream would name the epoch just finished, and a resumed run
        would serve it again. An epoch iterated since this instance was made or loaded,
        with nothing counted in it, is therefore a finished one: the state names the next
        epoch. The absolute position in the run is stored beside and checked on load.
        """
        self._require_batch_size()
        obj = super().state_dict(num_samples, from_beginning)
        # upstream reports epoch -1 before the first iteration; the samples count from epoch 0
        epoch = max(int(obj["epoch"]), 0)
        if from_beginning and num_samples == 0 and self._iterated_since_baseline():
            epoch = int(self.next_epoch)
        obj["epoch"] = epoch
        position = obj["epoch"] * self.epoch_size + obj["sample_in_epoch"]
        obj["streammix"] = {
            "version": STATE_VERSION,
            "seed": self.order_seed,
            "fingerprint": self.fingerprint,
            "global_batch_size": self.global_batch_size,
            "canonical_nodes": self.canonical_nodes,
            "epoch_order": self._epoch_order(),
            "epoch_size": self.epoch_size,
            "position": int(position),
            "updates": [[s, list(w)] for s, w in self._published],
            "horizon": int(self._horizon),
        }
        return obj

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        if int(self.next_epoch) > 0:
            raise RuntimeError(
                "load_state_dict was called after iteration started; load the checkpoint "
                "before the DataLoader is first iterated (a fresh dataset instance)"
            )
        mine = obj.get("streammix")
        if mine is None:
            self._adopt_upstream_state(obj)
            return
        if mine.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported StreamMixDataset state version {mine.get('version')}")
        G = self._require_batch_size()
        if obj["sample_in_epoch"] % G and obj["sample_in_epoch"] != self.epoch_size:
            raise ValueError(
                f"cannot resume at sample {obj['sample_in_epoch']}: not a multiple of the global "
                f"batch size {G}"
            )
        absolute = int(obj["epoch"]) * self.epoch_size + int(obj["sample_in_epoch"])
        if int(mine["position"]) != absolute:
            raise ValueError(
                f"inconsistent checkpoint: position {mine['position']} but epoch {obj['epoch']} "
                f"and sample_in_epoch {obj['sample_in_epoch']} give {absolute}"
            )
        for key, current in (("seed", self.order_seed), ("fingerprint", self.fingerprint),
                             ("global_batch_size", self.global_batch_size),
                             ("epoch_size", self.epoch_size)):
            if mine[key] != current:
                raise ValueError(
                    f"cannot resume: the checkpoint's {key} ({mine[key]!r}) differs from this "
                    f"dataset's ({current!r}); the data, mixing configuration or seed changed"
                )
        self._adopt_canonical_nodes(int(mine.get("canonical_nodes", 1)))
        saved_order = mine.get("epoch_order", CANONICAL_LANES)
        if saved_order != self._epoch_order():
            raise ValueError(
                f"cannot resume: the checkpoint's order with {self.canonical_nodes} canonical "
                f"nodes is {saved_order!r} and this dataset's is {self._epoch_order()!r}. "
                "Since one-pass epochs (streammix state 'epoch_order'), a run at natural "
                "proportions with canonical_nodes > 1 serves every sample exactly once per "
                "epoch, an order different from the one a checkpoint without 'epoch_order' "
                "was taken in; resuming it would silently change the data order. Resume with "
                "the streammix version that wrote the checkpoint, or start the run again")
        published = tuple((int(s), tuple(float(x) for x in w)) for s, w in mine["updates"])
        if published and self.channel is None:
            raise ValueError("the checkpoint has online weight updates but this dataset is static")
        self._published = published
        self._horizon = int(mine["horizon"])
        if self.channel is not None:
            self.channel.close()
            self.channel = WeightChannel.create(num_domains=len(self.domain_names),
                                                horizon=self._horizon, updates=published)
        upstream = {k: v for k, v in obj.items() if k != "streammix"}
        super().load_state_dict(upstream)
        self._epoch_baseline = int(self.next_epoch)

    def _epoch_order(self) -> str:
        """``'one_pass'`` for the one-pass-epoch order (``C > 1``), else ``'canonical_lanes'``."""
        return ONE_PASS if self.order_config.uses_one_pass_epochs else CANONICAL_LANES

    def _adopt_canonical_nodes(self, saved: int) -> None:
        """Serve the checkpoint's canonical nodes (they fix the order), or refuse."""
        given = self.canonical_nodes_given
        if given is not None and given != saved:
            raise ValueError(
                f"cannot resume: the checkpoint's canonical_nodes ({saved}) differs from the "
                f"canonical_nodes given to this dataset ({given}); the order depends on it. "
                "Leave canonical_nodes unset to adopt the checkpoint's")
        if saved != self.canonical_nodes:
            logger.info("resuming with the checkpoint's %d canonical nodes (a first start here "
                        "would have chosen %d)", saved, self.canonical_nodes)
            self.set_canonical_nodes(saved)

    def _adopt_upstream_state(self, obj: dict[str, Any]) -> None:
        """Start the streammix order where a plain ``StreamingDataset`` checkpoint stopped.

        The upstream state names ``(epoch, sample_in_epoch)``; streammix serves its own order
        from that global sample, ``epoch * epoch_size + sample_in_epoch``, so a running job can
        switch datasets (the samples after the switch are streammix's, not upstream's).
        """
        missing = [k for k in ("epoch", "sample_in_epoch") if k not in obj]
        if missing:
            raise ValueError(f"The StreamingDataset state dict given is not a StreamingDataset "
                             f"or StreamMixDataset state: no {missing}")
        G = self._require_batch_size()
        epoch, sample = max(int(obj["epoch"]), 0), int(obj["sample_in_epoch"])
        if sample % G and sample != self.epoch_size:
            raise ValueError(
                f"cannot adopt the StreamingDataset checkpoint at epoch {epoch}, sample "
                f"{sample}: not a multiple of the global batch size {G} (streammix starts "
                "at a global batch)")
        position = epoch * self.epoch_size + sample
        logger.warning(
            "adopting a StreamingDataset checkpoint (no 'streammix' state): the streammix order "
            "starts at global sample %d (epoch %d, sample %d of %d); the samples served from "
            "here on are streammix's order, not upstream's", position, epoch, sample,
            self.epoch_size)
        upstream = dict(obj, epoch=epoch, sample_in_epoch=sample)
        super().load_state_dict(upstream)
        self._epoch_baseline = int(self.next_epoch)

    def _iterated_since_baseline(self) -> bool:
        """Whether an epoch iterator started since this instance was created or loaded."""
        return int(self.next_epoch) > getattr(self, "_epoch_baseline", 0)

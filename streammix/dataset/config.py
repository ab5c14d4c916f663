"""Mixing configuration of a StreamMixDataset: a frozen, keyword-only dataclass.

Everything that decides *which* sample sits at which global position lives here; how the
samples are fetched (remote, local, cache_limit, predownload, ...) stays with upstream's
``StreamingDataset`` arguments, which ``StreamMixDataset`` forwards untouched.

Weights are given per domain name. ``domain_weights=None`` means natural proportions: each
domain weighted by its pass size (its number of samples, or the sum of its SampleMix repeat
counts). ``schedule`` holds static weight changes as ``(start_batch, weights)`` pairs;
online policies add segments during training through the weight channel instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WEIGHT_UPDATE_MODES = ("static", "exact", "lagged")
INTERLEAVE_MODES = ("greedy", "random")
PACKING_MODES = ("domain", "mixed")


def _check_weight_mapping(weights: Mapping[str, float], what: str) -> None:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{what} must be a non-empty mapping of domain name to weight")
    for name, value in weights.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{what}[{name!r}] must be a number, got {type(value).__name__}")
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ValueError(f"{what}[{name!r}] must be finite and >= 0, got {value}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"{what} are all zero: at least one domain needs a positive weight")


@dataclass(frozen=True, kw_only=True)
class MixingConfig:
    """How StreamMixDataset orders samples.

    Attributes:
        domains: subset (and order) of the build's domains to use; None = all, in build order.
            For plain MDS: the subfolders of a folder of MDS folders (required for a remote,
            which cannot be listed), the one name of a single MDS folder, or one name per
            stream of ``streams=[...]``.
        split: ``"train"`` or ``"val"`` (the held-out ``<domain>-val`` Streams).
        domain_weights: weight per domain name; None = natural proportions.
        sample_counts: a SampleMix plan file (``streammix plan``): per-sample repeat counts.
        schedule: static weight changes ``((start_batch, {domain: weight}), ...)``.
        global_batch_size: samples per optimizer step over all ranks; None = the
            per-device ``batch_size`` times the world size.
        seed: the order's seed; None = upstream's ``shuffle_seed``.
        window_shards: shards shuffled together inside a pass (bounds the working set).
        canonical_nodes: ``C``, the canonical nodes of the order: every global batch is ``C``
            slices and slice ``c`` reads only the ``c``-th part of each domain's shards, so
            physical node ``n`` of ``N`` downloads about ``1/N`` of the data per epoch. None
            = the checkpoint's when resuming, else the number of physical nodes at this first
            start (upstream's default for its py1e shuffle); 1 for packing, which does not
            support more yet. Keep it fixed for the whole run: ``C``
            changes the order. ``N`` must divide ``C`` (or ``C`` divide ``N``).
        interleave: ``"greedy"`` (Megatron's deterministic blending) or ``"random"``.
        weight_updates: ``"static"`` (no online changes), ``"exact"`` (a worker waits for
            the weights of a batch it cannot know yet) or ``"lagged"`` (weights published
            at batch b apply from b + lag_batches; no worker ever waits in steady state).
        lag_batches: the lag of ``"lagged"`` mode; must exceed what DataLoader workers can
            have prefetched (num_workers * prefetch_factor).
        publish_timeout_s: how long a worker waits for weights before a clear error.
        sequence_length: pack documents into blocks of this many tokens (needs a tokenized
            build); each sample is then ``input_ids``/``labels`` of exactly that length.
        separator_id: token put after every document when packing (e.g. the EOS id);
            None packs documents back to back.
        packing: ``"domain"`` (default): every block is cut from one domain's own stream of
            documents and the interleave assigns blocks to domains, so weights are token
            shares; ``"mixed"``: blocks are cut from the global document order and carry a
            per-token ``token_domain``. Both work with online weights.
    """

    domains: tuple[str, ...] | None = None
    split: str = "train"
    domain_weights: Mapping[str, float] | None = None
    sample_counts: str | Path | None = None
    schedule: tuple[tuple[int, Mapping[str, float]], ...] = ()
    global_batch_size: int | None = None
    seed: int | None = None
    window_shards: int = 4
    canonical_nodes: int | None = None
    interleave: str = "greedy"
    weight_updates: str = "static"
    lag_batches: int = 0
    publish_timeout_s: float = 600.0
    sequence_length: int | None = None
    separator_id: int | None = None
    packing: str = "domain"

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {self.split!r}")
        if self.domains is not None:
            if isinstance(self.domains, str) or not self.domains:
                raise ValueError("domains must be a non-empty sequence of domain names")
            object.__setattr__(self, "domains", tuple(self.domains))
            if len(set(self.domains)) != len(self.domains):
                raise ValueError(f"domains lists a name twice: {list(self.domains)}")
        if self.domain_weights is not None:
            _check_weight_mapping(self.domain_weights, "domain_weights")
        previous = -1
        for entry in self.schedule:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise ValueError("schedule entries must be (start_batch, {domain: weight}) pairs")
            start, weights = entry
            if not isinstance(start, int) or start < 0:
                raise ValueError(f"schedule start_batch must be an int >= 0, got {start!r}")
            if start <= previous:
                raise ValueError("schedule start batches must be strictly increasing")
            previous = start
            _check_weight_mapping(weights, f"schedule weights at batch {start}")
        if self.global_batch_size is not None and self.global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {self.global_batch_size}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.window_shards < 1:
            raise ValueError(f"window_shards must be >= 1, got {self.window_shards}")
        if self.canonical_nodes is not None and (
                isinstance(self.canonical_nodes, bool) or not isinstance(self.canonical_nodes, int)
                or self.canonical_nodes < 1):
            raise ValueError(f"canonical_nodes must be a positive integer or None, got "
                             f"{self.canonical_nodes!r}")
        if self.interleave not in INTERLEAVE_MODES:
            raise ValueError(f"interleave must be one of {INTERLEAVE_MODES}, got {self.interleave!r}")
        if self.weight_updates not in WEIGHT_UPDATE_MODES:
            raise ValueError(
                f"weight_updates must be one of {WEIGHT_UPDATE_MODES}, got {self.weight_updates!r}"
            )
        if self.lag_batches < 0:
            raise ValueError(f"lag_batches must be >= 0, got {self.lag_batches}")
        if self.weight_updates == "lagged" and self.lag_batches < 1:
            raise ValueError("weight_updates='lagged' needs lag_batches >= 1")
        if self.sequence_length is not None:
            if self.sequence_length < 1:
                raise ValueError(f"sequence_length must be >= 1, got {self.sequence_length}")
        elif self.separator_id is not None:
            raise ValueError("separator_id only applies when packing (sequence_length)")
        if self.packing not in PACKING_MODES:
            raise ValueError(f"packing must be one of {PACKING_MODES}, got {self.packing!r}")
        if self.separator_id is not None and self.separator_id < 0:
            raise ValueError(f"separator_id must be >= 0, got {self.separator_id}")
        if self.publish_timeout_s <= 0:
            raise ValueError(f"publish_timeout_s must be positive, got {self.publish_timeout_s}")

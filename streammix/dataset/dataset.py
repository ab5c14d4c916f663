"""StreamMixDataset: upstream's StreamingDataset, serving the streammix global order.

Construction is upstream's, untouched (every argument is forwarded through ``**kwargs``);
``local``/``remote`` name a streammix build (``streammix-build --out``) and become one
upstream ``Stream`` per domain. On top, the dataset holds a ``streammix.core.GlobalOrder``:
a pure function from global position ``t`` to ``(domain, sample in domain)``.

Iteration (one DataLoader worker of one rank):

1. upstream's shared epoch counter and resume slot give ``(epoch, sample_in_epoch)``;
   the first global batch is ``(epoch * epoch_size + sample_in_epoch) / G``.
2. the worker produces global batches ``first + worker, first + worker + K, ...`` (PyTorch
   hands batch ``j`` of an iterator to worker ``j mod K``), each the rank's contiguous
   ``G / W`` slice of the global batch.
3. before planning batch ``b`` it makes sure the weights for ``b`` are final (weight channel;
   static mixing never waits), plans batches ahead up to ``predownload`` samples and hands
   their shards to a background thread that downloads them (upstream's ``prepare_shard``,
   so caching, eviction under ``cache_limit`` and hash validation are upstream's).

Because the order is a function of ``(seed, layout, schedule, position)`` only, any number of
ranks and workers with the same global batch size read the same global batches, and
``state_dict`` needs only the position and the schedule to resume exactly.

With ``C > 1`` canonical nodes (:mod:`streammix.dataset.nodes`) the order cuts every global
batch into ``C`` slices that read disjoint groups of shards; a node's ranks hold contiguous
spans of the batch, hence its own slices, so a node downloads only its groups' shards. At
natural proportions (static, no weights or schedule, the natural epoch size) the order is
:mod:`streammix.core.exact_epochs`'s, whose every epoch is one pass for any ``C``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from streaming import Stream, StreamingDataset
from streaming.base.world import World

from streammix.core.order import DomainLayout, GlobalOrder, OrderConfig, warm_up
from streammix.core.partition import device_batch_span
from streammix.core.schedule import Schedule
from streammix.dataset.batches import EpochBatchesMixin, per_stream_groups
from streammix.dataset.channel import WeightChannel
from streammix.dataset.config import MixingConfig
from streammix.dataset.documents import LOCAL_STATE, DocumentTokens
from streammix.dataset.nodes import (
    check_order_supports,
    check_physical_nodes,
    check_supported,
    choose_canonical_nodes,
)
from streammix.dataset.packing import (
    BlockPieces,
    DomainBlocks,
    PackedCursor,
    assemble_block,
    domain_streams,
)
from streammix.dataset.resume import STATE_VERSION, ResumeMixin
from streammix.dataset.sources import (
    DomainSources,
    registered_stream_factory,
    resolve_sources,
)
from streammix.dataset.upstream_args import (
    check_stratified_batches,
    check_upstream_kwargs,
    given_stream_weighting,
    resampled_domains,
    stream_domain_weights,
    stream_sample_counts,
    upstream_chose_subsets,
)
from streammix.format.remote import node_lock

__all__ = ["STATE_VERSION", "StreamMixDataset", "read_split_head"]
MIN_MAPPED_SHARDS = 8  # shards a packed reader keeps mapped, at least (see DocumentTokens)

warm_up()  # numba's target and the order's kernels, inherited by forked workers (see warm_up)


class StreamMixDataset(ResumeMixin, EpochBatchesMixin, StreamingDataset):
    """A drop-in ``streaming.StreamingDataset`` whose order is streammix's.

    Args:
        mixing: how samples are ordered (weights, SampleMix counts, schedule, seed, ...).
        **kwargs: upstream ``StreamingDataset`` arguments. ``local`` (and optionally
            ``remote``) point at a streammix build; alternatively ``streams`` gives one
            ``Stream`` per domain directory. ``batch_size`` (per device) is required.
    """

    def __init__(self, *, mixing: MixingConfig | None = None, **kwargs: Any) -> None:
        self.mixing = mixing if mixing is not None else MixingConfig()
        self.upstream_options = check_upstream_kwargs(kwargs, self.mixing)
        check_order_supports(self.mixing.canonical_nodes or self.upstream_options.canonical_nodes,
                             packing=self.mixing.sequence_length is not None,
                             per_stream=self.per_stream)
        sources = resolve_sources(
            local=kwargs.pop("local", None), remote=kwargs.pop("remote", None),
            streams=kwargs.pop("streams", None), split=self.mixing.split,
            domains=self.mixing.domains, upstream_split=kwargs.get("split"),
            make_stream=registered_stream_factory(kwargs.get("stream_name", "stream"),
                                                  kwargs.get("stream_config")),
        )
        weighting = given_stream_weighting(sources.streams)
        self._streammix_epoch_size_given = kwargs.get("epoch_size") is not None
        super().__init__(streams=list(sources.streams), **kwargs)
        sources.verify_layout()  # after upstream fetched each index.json
        if sources.has_tokens is False:
            warnings.warn(
                "this streammix build has no token ids (it was made without --tokenizer): "
                "samples carry 'text' only, so a token collator or packing cannot use them; "
                "rebuild with streammix-build --tokenizer", stacklevel=2)
        self.domain_names = sources.names
        self._sources = sources
        self._init_order(sources, weighting)
        self._epoch_baseline = int(self.next_epoch)

    # ------------------------------------------------------------------ construction

    @property
    def whole_batch_epochs(self) -> bool:
        """Whether epochs are whole global batches (weights change by global batch index).

        Online weights and a static ``schedule`` are indexed by global batch, so their epochs
        are rounded down to whole global batches; otherwise an epoch is exactly
        ``epoch_size`` samples and its last global batch may be partial.
        """
        return self.mixing.weight_updates != "static" or bool(self.mixing.schedule)

    def _init_batch_size(self, world: World) -> None:
        if self.batch_size is None:
            if self.whole_batch_epochs:
                raise ValueError(
                    "StreamMixDataset needs batch_size (samples per device per batch) at "
                    "construction when weights change during the run (online weights or "
                    "MixingConfig.schedule): the changes are indexed by global batch")
            self.global_batch_size = None
            return
        self.global_batch_size = self.mixing.global_batch_size or self.batch_size * world.num_ranks
        if self.global_batch_size % world.num_ranks:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not divisible by the "
                f"{world.num_ranks} ranks"
            )
        if self.global_batch_size // world.num_ranks != self.batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} per device does not match global_batch_size "
                f"{self.global_batch_size} over {world.num_ranks} ranks "
                f"(expected {self.global_batch_size // world.num_ranks})"
            )

    def _require_batch_size(self) -> int:
        """The global batch size; a clear error if ``batch_size`` was never given."""
        if self.global_batch_size is None:
            raise ValueError(
                "Please pass `batch_size` to StreamingDataset (here StreamMixDataset: samples "
                "per device per batch, the same as the DataLoader's): the order's global batches and the resume state "
                "need it, as upstream StreamingDataset needs it to iterate")
        return self.global_batch_size

    def _counts_and_weights(self, sources: DomainSources, weighting: str) -> tuple:
        """Per-sample counts and domain weights from the streams' weighting and ``mixing``.

        Upstream's per-stream ``choose`` becomes per-sample counts for ``repeat``/``choose``,
        and, when ``sampling_method`` is given, for ``epoch_size`` and proportions too (at
        natural weights over the counts: an epoch is then one pass of every domain).
        """
        mixing, options = self.mixing, self.upstream_options
        per_stream = self.samples_per_stream.tolist()
        self.epoch_is_one_pass = False  # upstream's per-epoch subsets: one pass is one epoch
        self.resampled = resampled_domains(self.streams, self.domain_names, per_stream, options)
        if weighting != "absolute" and options.sampling_method is not None and \
                upstream_chose_subsets(self.streams, per_stream):
            if mixing.domain_weights is not None:
                raise ValueError(
                    f"sampling_method={options.sampling_method!r} with epoch_size or "
                    "Stream(proportion=...) draws upstream's per-stream subsets at their "
                    "proportions; MixingConfig(domain_weights=...) would weight them again. "
                    "Give the weights as Stream(proportion=...), or leave sampling_method out "
                    "(weights over whole passes, epochs cut from the endless order)")
            weighting = "absolute"
            self.epoch_is_one_pass = True
        if weighting == "absolute":
            counts = stream_sample_counts(self.streams, self.domain_names, per_stream,
                                          mixing=mixing, seed=self.order_seed)
        else:
            counts = sources.load_sample_counts(mixing.sample_counts)
        weights = mixing.domain_weights
        if weighting == "relative":
            weights = stream_domain_weights(self.streams, self.domain_names, mixing)
        if self.resampled and mixing.sequence_length is not None:
            raise ValueError(
                "sampling_method='balanced' redraws a fractional choose's subset every pass, "
                "and packing needs passes that hold the same tokens: pass "
                "sampling_method='fixed' (one subset for the run) to pack")
        return counts, weights

    def _init_order(self, sources: DomainSources, weighting: str = "none") -> None:
        mixing = self.mixing
        world = self._parallel_rank_world
        self._init_batch_size(world)
        self.order_seed = mixing.seed if mixing.seed is not None else int(self.shuffle_seed)
        counts, domain_weights = self._counts_and_weights(sources, weighting)
        layouts = []
        for d, name in enumerate(self.domain_names):
            begin = int(self.shard_offset_per_stream[d])
            end = begin + int(self.shards_per_stream[d])
            layouts.append(DomainLayout(
                shard_sizes=tuple(int(x) for x in self.samples_per_shard[begin:end]),
                repeat_counts=None if counts is None else counts.get(name),
                resample=name in self.resampled,
            ))
        pass_sizes = np.array([layout.pass_size for layout in layouts], dtype=np.int64)
        if pass_sizes.sum() <= 0:
            raise ValueError("no domain has samples to draw (every repeat count is zero)")
        self._pass_sizes = pass_sizes
        self.layouts = tuple(layouts)
        self.packed_tokens: tuple[np.ndarray, ...] | None = None
        natural_shares = pass_sizes
        if mixing.sequence_length is not None:
            self.packed_tokens = sources.token_counts()
            pass_tokens = _pass_tokens(self.packed_tokens, self.layouts, mixing)
            natural = int(pass_tokens.sum()) // mixing.sequence_length
            if mixing.packing == "domain":  # positions are blocks: natural shares are tokens
                natural_shares = pass_tokens
        else:
            natural = int(pass_sizes.sum())
        self.initial_weights = self._weights_vector(domain_weights, natural_shares,
                                                    "domain_weights")
        self._static_updates = tuple(
            (int(start), self._weights_vector(w, natural_shares, f"schedule at batch {start}"))
            for start, w in mixing.schedule
        )
        self._init_epoch(int(self.epoch_size) if self._user_epoch_size else natural, world)
        # at natural proportions an epoch of the natural size is one pass of every domain;
        # with C > 1 canonical nodes the order makes it so (OrderConfig.one_pass_epochs)
        self.natural_epochs = (domain_weights is None and not self.whole_batch_epochs
                               and mixing.interleave == "greedy" and self.packed_tokens is None
                               and not self.per_stream and self.epoch_size == natural)
        self.canonical_nodes_given = (mixing.canonical_nodes
                                      or self.upstream_options.canonical_nodes)
        self._schedule_cache: tuple[tuple, Schedule] | None = None
        self.set_canonical_nodes(choose_canonical_nodes(
            given=self.canonical_nodes_given, num_nodes=world.num_nodes,
            packing=mixing.sequence_length is not None, per_stream=self.per_stream,
            global_batch_size=self.global_batch_size))
        self.fingerprint = self._compute_fingerprint(sources, counts)
        self._published: tuple[tuple[int, tuple[float, ...]], ...] = ()
        self._horizon = 0
        self.channel: WeightChannel | None = None
        if mixing.weight_updates != "static":
            self.channel = WeightChannel.create(num_domains=len(self.domain_names))

    def set_canonical_nodes(self, canonical_nodes: int) -> None:
        """Serve the order with ``C = canonical_nodes`` (checked against this world)."""
        check_supported(canonical_nodes, packing=self.mixing.sequence_length is not None,
                        per_stream=self.per_stream, global_batch_size=self.global_batch_size)
        check_physical_nodes(self._parallel_rank_world.num_nodes, canonical_nodes)
        if canonical_nodes > 1 and self.epoch_is_one_pass and not self.natural_epochs:
            raise ValueError(
                f"sampling_method={self.upstream_options.sampling_method!r} with epoch_size or "
                "proportions serves upstream's per-stream subsets, one pass of each domain per "
                f"epoch; with {canonical_nodes} canonical nodes that needs the greedy "
                "interleave and batching_method 'random' or 'stratified'. Pass "
                "num_canonical_nodes=1, or leave sampling_method out (epochs cut from the "
                "endless order)")
        self.canonical_nodes = canonical_nodes
        self.num_canonical_nodes = canonical_nodes  # upstream's attribute and state key
        # per-stream batching: the order's positions are whole batches (one interleave);
        # the canonical slices cut each batch (EpochBatchesMixin._per_stream_samples)
        order_nodes = 1 if self.per_stream else canonical_nodes
        if self.per_stream and canonical_nodes > 1:
            self.per_stream_groups = per_stream_groups(self.domain_names, self.layouts,
                                                       canonical_nodes)
        self.order_config = OrderConfig(
            seed=self.order_seed, window_shards=self.mixing.window_shards,
            interleave=self.mixing.interleave, shuffle=self.upstream_options.shuffle,
            canonical_nodes=order_nodes,
            global_batch_size=self.global_batch_size if order_nodes > 1 else None,
            one_pass_epochs=self.natural_epochs and order_nodes > 1)
        self._schedule_cache = None

    def _init_epoch(self, epoch_size: int, world: World) -> None:
        """Epoch size and ``len()``: see :attr:`whole_batch_epochs`."""
        if self.whole_batch_epochs:
            G = self._require_batch_size()
            if epoch_size < G:
                raise ValueError(f"epoch of {epoch_size} samples is smaller than one global "
                                 f"batch ({G})")
            epoch_size = (epoch_size // G) * G
        if epoch_size <= 0:
            raise ValueError(f"an epoch needs at least one sample, got epoch_size {epoch_size}")
        self.epoch_size = epoch_size
        # as upstream: a partial last global batch is padded to the same count on every rank
        self.length = -(-epoch_size // world.num_ranks)

    @property
    def _user_epoch_size(self) -> bool:
        # upstream sets epoch_size from the streams when the user gave none
        return getattr(self, "_streammix_epoch_size_given", False)

    def _weights_vector(self, weights: Mapping[str, float] | None, pass_sizes: np.ndarray,
                        what: str) -> tuple[float, ...]:
        if weights is None:
            vector = pass_sizes.astype(np.float64)
        else:
            unknown = sorted(set(weights) - set(self.domain_names))
            if unknown:
                raise ValueError(f"{what} name unknown domains {unknown}; "
                                 f"the dataset has {list(self.domain_names)}")
            left_out = [n for n in self.domain_names if n not in weights]
            if left_out:
                raise ValueError(f"{what} give no weight to domains {left_out}; list every "
                                 "domain (a weight of 0 leaves one out)")
            vector = np.array([float(weights.get(n, 0.0)) for n in self.domain_names])
        return self._drawable(_normalized(vector, what, self.domain_names), what)

    def _drawable(self, weights: tuple[float, ...], what: str) -> tuple[float, ...]:
        empty = [n for n, w, size in zip(self.domain_names, weights, self._pass_sizes)
                 if w > 0 and size == 0]
        if empty:
            raise ValueError(f"{what} give weight to domains {empty}, which have no samples to "
                             "draw (their SampleMix repeat counts are all zero)")
        return weights

    def _compute_fingerprint(self, sources: DomainSources,
                             counts: Mapping[str, np.ndarray] | None) -> str:
        digest = hashlib.sha256()
        layout = {
            "domains": list(self.domain_names),
            "index_sha256": list(sources.index_fingerprints),
            "shard_sizes": [list(layout.shard_sizes) for layout in self.layouts],
            "window_shards": self.mixing.window_shards,
            "interleave": self.mixing.interleave,
            "epoch_size": self.epoch_size,
            "sequence_length": self.mixing.sequence_length,
            "separator_id": self.mixing.separator_id,
        }
        if not self.upstream_options.shuffle:
            layout["shuffle"] = False  # only when set: fingerprints of shuffled runs unchanged
        if self.per_stream:
            layout["batching"] = "per_stream"
        if self.resampled:  # only when set: fingerprints of other runs unchanged
            layout["resampled"] = sorted(self.resampled)
        digest.update(json.dumps(layout, sort_keys=True).encode())
        if counts is not None:
            for name in self.domain_names:
                if counts.get(name) is not None:
                    digest.update(np.ascontiguousarray(counts[name], dtype=np.int64).tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ schedule

    def _all_updates(self, published: Sequence[tuple[int, tuple[float, ...]]]) -> list:
        merged: dict[int, tuple[float, ...]] = {0: self.initial_weights}
        for start, weights in self._static_updates:
            merged[start] = weights
        for start, weights in published:
            merged[start] = weights
        return sorted(merged.items())

    def schedule_for(self, published: Sequence[tuple[int, tuple[float, ...]]]) -> Schedule:
        """The schedule (positions, weights, cursors) after the given published updates.

        Published updates only grow at the end (the channel refuses anything else; the last
        one may be replaced), so a schedule extending the cached one is built by appending
        the new segments: the cost per decision does not grow with the run's length.
        """
        cached = self._schedule_cache
        if cached is not None and cached[0] is published:
            return cached[2]
        if not self._static_updates and cached is not None and published:
            count, schedule = cached[1], cached[2]
            if 0 < count <= len(published) and published[count - 1][0] == cached[3][0]:
                tail = published[count - 1:]
                if tail[0] == cached[3]:
                    tail = tail[1:]
                schedule = self._appended(schedule, tail)
                self._schedule_cache = (published, len(published), schedule, published[-1])
                return schedule
        merged = self._all_updates(published)
        schedule = self._appended(Schedule.initial(merged[0][1]), merged[1:])
        self._schedule_cache = (published, len(published), schedule,
                                published[-1] if published else None)
        return schedule

    def _appended(self, schedule: Schedule, updates: Sequence[tuple[int, Sequence[float]]]
                  ) -> Schedule:
        for start, weights in updates:
            schedule = schedule.append(self._segment_start(schedule, start), weights,
                                       interleave=self.mixing.interleave, seed=self.order_seed,
                                       canonical_nodes=self.order_config.canonical_nodes,
                                       global_batch_size=self.order_config.global_batch_size)
        return schedule

    def _segment_start(self, schedule: Schedule, start_batch: int) -> int:
        """The order position where weights for global batch ``start_batch`` begin.

        Positions are samples, or blocks when packing by domain: ``start_batch * G``. With
        mixed packing positions are documents, and the weights begin with the first document
        that starts at or after the batch's first token, found under the schedule so far
        (only earlier documents, whose weights are final, decide where that is).
        """
        G = self._require_batch_size()
        if self.per_stream:  # positions are whole global batches
            return start_batch
        if self.packed_tokens is None or self.mixing.packing != "mixed" or start_batch == 0:
            return start_batch * G
        order = GlobalOrder(config=self.order_config, domains=self.layouts, schedule=schedule)
        separator = int(self.mixing.separator_id is not None)
        cursor = PackedCursor(order, self.packed_tokens,
                              sequence_length=self.mixing.sequence_length,
                              separator_length=separator)
        return max(cursor.first_position_at(start_batch * G * self.mixing.sequence_length),
                   schedule.segments[-1].start)

    @property
    def per_stream(self) -> bool:
        """``batching_method='per_stream'``: the schedule's positions are global batches."""
        return self.upstream_options.batching_method == "per_stream"

    @property
    def schedule(self) -> Schedule:
        return self.schedule_for(self._published)

    # ------------------------------------------------------------------ weight channel

    def weight_start_for(self, next_batch: int) -> int:
        """The first batch that weights decided before ``next_batch`` can apply to."""
        lag = self.mixing.lag_batches if self.mixing.weight_updates == "lagged" else 0
        return next_batch + lag

    def publish(self, start_batch: int, weights: Mapping[str, float] | Sequence[float], *,
                final_until: int | None = None) -> None:
        """Apply ``weights`` from global batch ``start_batch`` on (main process only).

        ``final_until`` (default ``start_batch``) promises that no weights will change
        before that batch, so workers may produce batches up to it without waiting.
        """
        if self.channel is None:
            raise RuntimeError(
                "this StreamMixDataset has static weights; create it with "
                "MixingConfig(weight_updates='exact' or 'lagged') to publish weights online"
            )
        if isinstance(weights, Mapping):
            vector = self._weights_vector(weights, np.zeros(len(self.domain_names)), "weights")
        else:
            vector = self._drawable(_normalized(np.asarray(weights, dtype=np.float64),
                                                "weights", self.domain_names), "weights")
        horizon = max(self._horizon, start_batch if final_until is None else final_until)
        self.channel.publish(start_batch, vector, horizon=horizon)
        self._published = self.channel.state().updates
        self._horizon = horizon

    def commit(self, final_until: int) -> None:
        """Promise that the weights of every batch below ``final_until`` are final."""
        if self.channel is None:
            raise RuntimeError("this StreamMixDataset has static weights; nothing to commit")
        self.channel.commit(final_until)
        self._horizon = max(self._horizon, final_until)

    @property
    def published_updates(self) -> tuple[tuple[int, tuple[float, ...]], ...]:
        return self._published

    def held_out_samples(self, per_domain: int) -> dict[str, list[dict[str, Any]]]:
        """The first ``per_domain`` samples of each domain's held-out (``-val``) split."""
        val_dirs = self._sources.val_dirs
        if val_dirs is None:
            raise ValueError("held-out samples need a streammix build (its <domain>-val "
                             "splits); this dataset was made from plain MDS folders or "
                             "streams=[...]: pass val_data= to OnlineMixing")
        missing = [n for n, (lo, _) in zip(self.domain_names, val_dirs) if lo is None]
        if missing:
            raise ValueError(f"domains {missing} have no held-out split in the build; rebuild "
                             "with streammix-build --val-fraction or --val-samples")
        held_out = {}
        for d, (name, (local, remote)) in enumerate(zip(self.domain_names, val_dirs)):
            held_out[name] = [dict(sample, domain=d)
                              for sample in read_split_head(local, remote, per_domain)]
        return held_out

    # ------------------------------------------------------------------ iteration

    def _final_updates(self, batch: int) -> tuple:
        """Published updates once the weights of ``batch`` are final (waits if needed)."""
        if self.channel is None:
            return ()
        state = self.channel.wait_until_final(batch, timeout_s=self.mixing.publish_timeout_s)
        return state.updates

    def _known_updates(self, batch: int) -> tuple | None:
        """Published updates if ``batch`` is already final, else None (never waits)."""
        if self.channel is None:
            return ()
        state = self.channel.state()
        if state.horizon <= batch:
            state = self.channel.read()
        return state.updates if state.horizon > batch else None

    def plan_batch(self, order: GlobalOrder, batch: int, world: World
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Global sample ids and domain ids of this rank's slice of global batch ``batch``."""
        start, stop = self._span(batch, world)
        domains, local = order.samples(start, stop)
        ids = self.sample_offset_per_stream[domains] + local
        return ids.astype(np.int64), domains

    def _span(self, batch: int, world: World) -> tuple[int, int]:
        return device_batch_span(batch=batch, rank=world.rank, world_size=world.num_ranks,
                                 global_batch_size=self._require_batch_size())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if hasattr(self, "_prefetcher"):
            self._prefetcher.stop()
        global_batch_size = self._require_batch_size()
        if self.upstream_options.batching_method == "stratified":
            check_stratified_batches(
                self.domain_names,
                [self.initial_weights, *(w for _, w in self._static_updates)],
                global_batch_size)
        self._unique_worker_world = self._unique_rank_world.detect_workers()
        self._parallel_worker_world = self._parallel_rank_world.detect_workers()
        epoch, sample_in_epoch = self._resume_incr_epoch()
        world = self._parallel_worker_world
        batches = self._epoch_batches(epoch, sample_in_epoch, world)
        self._prefetcher = prefetcher = _ShardPrefetcher(self)
        try:
            yield from self._iterate(batches, world, prefetcher)
        finally:
            prefetcher.stop()

    def _plan_samples(self, order: GlobalOrder, batch: tuple[int, int, int],
                      positions: np.ndarray, state: dict[str, Any]
                      ) -> tuple[list[_PlannedSample], np.ndarray]:
        """The samples at ``positions`` (sorted, within one global batch) and their ids."""
        if self.packed_tokens is None:
            if self.per_stream:
                domains, local = self._per_stream_samples(order, batch, positions, state)
            else:
                domains, local = _samples_at(order, positions)
            ids = (self.sample_offset_per_stream[domains] + local).astype(np.int64)
            samples = [_PlannedSample(i, d, None) for i, d in zip(ids.tolist(),
                                                                  domains.tolist())]
            return samples, ids
        packer = state.get("packer")
        if packer is None:
            packer = state["packer"] = self._packer(order)
        elif packer.order is not order:
            if isinstance(packer, DomainBlocks):
                packer.order = order
            else:  # mixed: documents read ahead may have other weights now
                packer = state["packer"] = PackedCursor(
                    order, self.packed_tokens, sequence_length=self.mixing.sequence_length,
                    separator_length=packer.separator_length, streams=packer.streams)
        lo, hi = int(positions[0]), int(positions[-1]) + 1
        every = self._block_pieces(packer, lo, hi)
        samples = []
        for pieces in (every[p - lo] for p in positions.tolist()):
            ids = self.sample_offset_per_stream[pieces.domain] + pieces.sample
            samples.append(_PlannedSample(ids, int(pieces.domain[0]), pieces))
        return samples, np.concatenate([np.atleast_1d(s.ids) for s in samples])

    def _iterate(self, batches: Iterable[tuple[int, int, int]], world: World,
                 prefetcher: _ShardPrefetcher) -> Iterator[dict[str, Any]]:
        G = self._require_batch_size()
        state: dict[str, Any] = {"order": None, "packer": None}
        planned: deque[list[_PlannedSample]] = deque()
        pending = iter(batches)
        next_batch = next(pending, None)
        lookahead = max(int(self.predownload or 0), self.batch_size)

        def plan(batch: tuple[int, int, int], updates: tuple) -> None:
            schedule = self.schedule_for(updates)
            order = state["order"]
            if order is None:
                order = GlobalOrder(config=self.order_config, domains=self.layouts,
                                    schedule=schedule)
            elif order.schedule is not schedule:
                order = order.with_schedule(schedule)
            state["order"] = order
            _, start, size = batch
            served = self.rank_positions(start, size, world)
            positions = np.unique(served)
            samples, shard_ids = self._plan_samples(order, batch, positions, state)
            if size < G or not np.array_equal(positions, served):  # padded, residue order
                by_position = dict(zip(positions.tolist(), samples))
                samples = [by_position[p] for p in served.tolist()]
            planned.append(samples)
            prefetcher.submit(self._shards_of(shard_ids))

        while planned or next_batch is not None:
            while next_batch is not None and len(planned) * self.batch_size < lookahead:
                updates = self._known_updates(next_batch[0])
                if updates is None:
                    break
                plan(next_batch, updates)
                next_batch = next(pending, None)
            if not planned:
                plan(next_batch, self._final_updates(next_batch[0]))
                next_batch = next(pending, None)
            for planned_sample in planned.popleft():
                yield self._materialize(planned_sample)

    def _packer(self, order: GlobalOrder) -> DomainBlocks | PackedCursor:
        separator = int(self.mixing.separator_id is not None)
        streams = domain_streams(order, self.packed_tokens, separator_length=separator)
        if self.mixing.packing == "domain":
            return DomainBlocks(order, streams, sequence_length=self.mixing.sequence_length)
        return PackedCursor(order, self.packed_tokens, sequence_length=self.mixing.sequence_length,
                            separator_length=separator, streams=streams)

    @staticmethod
    def _block_pieces(packer: DomainBlocks | PackedCursor, start: int, stop: int
                      ) -> list[BlockPieces]:
        if isinstance(packer, DomainBlocks):
            return packer.blocks(start, stop)
        return [packer.pieces(block) for block in range(start, stop)]

    def _materialize(self, planned: _PlannedSample) -> dict[str, Any]:
        if planned.pieces is None:
            sample = self[planned.ids]
            sample["domain"] = planned.domain
            return sample
        documents = self._document_tokens(planned.ids)
        block = assemble_block(planned.pieces, documents, separator_id=self.mixing.separator_id)
        sample = {"input_ids": block, "labels": block.copy(), "domain": planned.domain}
        if self.mixing.packing == "mixed":
            sample["token_domain"] = np.repeat(planned.pieces.domain.astype(np.int64),
                                               planned.pieces.length)
        return sample

    def _document_tokens(self, sample_ids: np.ndarray) -> list[np.ndarray]:
        """Documents' tokens, from their shards mapped once per reader (``DocumentTokens``)."""
        documents = self.__dict__.get("_documents")
        if documents is None:
            mapped = max(MIN_MAPPED_SHARDS, 2 * self.mixing.window_shards * len(self.domain_names))
            documents = self._documents = DocumentTokens(max_mapped=mapped)
        return documents.tokens(self, sample_ids)

    def _shards_of(self, ids: np.ndarray) -> list[int]:
        shards = np.searchsorted(self.sample_offset_per_shard, ids, side="right") - 1
        _, first = np.unique(shards, return_index=True)
        return shards[np.sort(first)].tolist()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_prefetcher", None)
        state.pop("_schedule_cache", None)
        state.pop("_documents", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._schedule_cache = None


def read_split_head(local: str, remote: str | None, count: int) -> list[dict[str, Any]]:
    """The first ``count`` samples of one MDS folder, through upstream's Stream readers.

    Lighter than a whole ``StreamingDataset`` (no shared memory, no worker bookkeeping), so
    reading held-out data many times in one process leaks nothing. The processes of a node
    that share ``local`` take turns (a file lock): the first fetches the index and shards,
    the others find them in place, so each object is downloaded once per node.
    """
    with node_lock(os.path.join(local, "streammix-read")):
        return _read_split_head(local, remote, count)


def _read_split_head(local: str, remote: str | None, count: int) -> list[dict[str, Any]]:
    stream = Stream(local=local, remote=remote)
    stream.apply_default({"remote": remote, "local": local, "split": None, "download_retry": 2,
                          "download_timeout": 60.0, "validate_hash": None, "keep_zip": False})
    samples: list[dict[str, Any]] = []
    # Whoever holds the node lock fetches what is missing: a one-process world makes it the
    # local leader (with the job's world, another rank would wait for a leader that waits
    # for the lock).
    alone = World(num_nodes=1, ranks_per_node=1, workers_per_rank=1, worker=0)
    for shard in stream.get_shards(alone, allow_unsafe_types=False):
        stream.prepare_shard(shard)
        for i in range(min(shard.samples, count - len(samples))):
            samples.append(shard[i])
        if len(samples) >= count:
            break
    return samples


class _PlannedSample(NamedTuple):
    ids: Any                     # a global sample id, or the ids of a packed block's pieces
    domain: int                  # the sample's domain (a packed block: its first piece's)
    pieces: BlockPieces | None   # set for packed blocks


def _samples_at(order: GlobalOrder, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(domain, sample) at sorted distinct ``positions``, read run by contiguous run (a rank's positions
    are one run, or two with canonical nodes; other ranks' positions are not computed)."""
    domains = np.empty(positions.shape[0], dtype=np.int32)
    local = np.empty(positions.shape[0], dtype=np.int64)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, positions.shape[0]]):
        order.samples(int(positions[lo]), int(positions[hi - 1]) + 1,
                      out=(domains[lo:hi], local[lo:hi]))
    return domains, local


def _pass_tokens(tokens: Sequence[np.ndarray], layouts: Sequence[DomainLayout],
                 mixing: MixingConfig) -> np.ndarray:
    """Tokens (separators included) in one pass of each domain."""
    separator = int(mixing.separator_id is not None)
    totals = []
    for counts, layout in zip(tokens, layouts):
        repeats = layout.repeat_counts if layout.repeat_counts is not None else 1
        totals.append(int(np.sum((counts + separator) * repeats)))
    return np.array(totals, dtype=np.int64)


def _normalized(vector: np.ndarray, what: str, names: Sequence[str]) -> tuple[float, ...]:
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (len(names),):
        raise ValueError(f"{what} has {vector.size} entries for {len(names)} domains {list(names)}")
    if not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise ValueError(f"{what} must be finite and >= 0, got {vector.tolist()}")
    total = vector.sum()
    if total <= 0:
        raise ValueError(f"{what} are all zero: at least one domain needs a positive weight")
    return tuple(float(x) for x in vector / total)


class _ShardPrefetcher:
    """Downloads shards ahead of the read position on one background thread.

    A shard is handed to the thread once while it stays LOCAL: waking the thread for shards
    already in place costs the reader the GIL (numpy releases it while copying a block, and
    the woken thread takes it), which halved packed throughput. A shard evicted since it
    was prepared (its state is no longer LOCAL) is handed over again.
    """

    def __init__(self, dataset: StreamMixDataset) -> None:
        self._dataset = dataset
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._queued: set[int] = set()      # handed to the thread, not prepared yet
        self._prepared: set[int] = set()    # prepared by the thread (may be evicted since)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="streammix-prefetch")
        self._thread.start()

    def submit(self, shard_ids: list[int]) -> None:
        if self.error is not None:
            raise RuntimeError("shard prefetch failed") from self.error
        for shard in shard_ids:
            if shard in self._queued or (shard in self._prepared
                                         and self._dataset._shard_states[shard] == LOCAL_STATE):
                continue
            self._prepared.discard(shard)
            self._queued.add(shard)
            self._queue.put(shard)

    def _run(self) -> None:
        while True:
            shard = self._queue.get()
            if shard is None:
                return
            try:
                self._dataset.prepare_shard(shard, blocking=False)
            except BaseException as exc:  # surfaced to the reader on its next submit
                self.error = exc
                return
            self._prepared.add(shard)  # before leaving _queued: submit never sees neither
            self._queued.discard(shard)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

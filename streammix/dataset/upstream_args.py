"""Upstream ``StreamingDataset`` arguments: mapped onto the streammix order, or refused.

``StreamMixDataset`` forwards every upstream argument to ``StreamingDataset``, which
fetches the indexes and sets up caches. The arguments that decide the *order* are upstream's
too, and streammix's order replaces upstream's; none of them may be ignored silently:

- ``Stream(proportion=...)``: a domain weight (``MixingConfig.domain_weights`` is the other
  way to say it; giving both is an error). A proportion of 0 means never served.
- ``Stream(repeat=...)`` / ``Stream(choose=...)``: per-sample repeat counts inside the
  domain (``MixingConfig.sample_counts`` is the other way; both is an error). ``choose =
  k * n + m`` on ``n`` samples gives every sample ``k`` copies per pass and ``m`` samples one
  more: with ``sampling_method='fixed'`` (or left out) a subset drawn once per run from the
  order's seed (a keyed hash per sample), the same in every pass and epoch; with
  ``sampling_method='balanced'`` (upstream's default, honoured when given) a new subset of
  ``m`` every pass (:mod:`streammix.core.passes`, resampled passes).
- ``sampling_method`` given (either value) where upstream's weighting chooses per-stream
  subsets without ``repeat``/``choose`` (``epoch_size`` given, or ``Stream(proportion=...)``):
  upstream's per-stream ``choose`` becomes the counts as above, at natural weights, so an
  epoch is one pass of every domain: the same samples every epoch (``'fixed'``) or a new
  draw of the same per-domain counts (``'balanced'``), with any number of canonical nodes
  (one-pass epochs, :mod:`streammix.core.exact_epochs`). Left out, ``epoch_size`` and
  proportions keep the streammix meaning (weights over whole passes, epochs cut from the
  endless order).
- ``shuffle``: not given or True, the streammix shuffled passes; ``shuffle=False``, passes in
  shard order with samples in order (the domains are still blended by the interleave).
- ``batching_method``: ``'random'`` (upstream's default) and ``'stratified'`` (every global
  batch holds each domain in proportion, which the greedy interleave gives) are honoured;
  as upstream, iterating with ``'stratified'`` raises when a domain with a positive weight
  would get less than one sample per global batch (it could not be in every batch);
  ``'per_stream'`` makes every global batch come from one domain, the domains of successive
  batches interleaved by the weights (the same interleave, over batches instead of
  samples); ``'device_per_stream'`` is refused, naming ``'per_stream'``.
- ``num_canonical_nodes``: the streammix order's canonical nodes ``C``
  (``MixingConfig.canonical_nodes`` is the other way to say it; giving both differently is
  an error). Upstream's meaning carries over: the order depends on ``C``, not on the
  physical nodes, and each node reads its own part of the shards.
- ``stream_name``/``stream_config``: the Streams made from ``local``/``remote`` (one per
  domain) are instances of the class registered under ``stream_name`` in upstream's
  ``streams_registry``, made with ``stream_config``; with ``streams=[...]`` they are refused.
- shuffle and partition knobs that the streammix order replaces (``shuffle_algo``,
  ``shuffle_block_size``, ``partition_algo``, ``sampling_granularity``, ``replication``) are
  refused unless given at upstream's default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streammix.core.rng import derive_key, mix64_array
from streammix.dataset.config import MixingConfig

_PURPOSE_CHOOSE = 0x43484F4F  # "CHOO": keys the subset a fractional choose/repeat keeps

_WINDOW = ("streammix shuffles each domain's passes with shard locality; its knob is "
           "MixingConfig(window_shards=...) (shards shuffled together)")
_PARTITION = ("streammix's order fixes its own partition: global batch g is positions "
              "[g*G, (g+1)*G), each rank takes a contiguous slice, and the order depends on "
              "neither the number of nodes nor ranks (only on num_canonical_nodes)")

# argument -> (values honoured: upstream's default and equivalents, why any other is refused)
REFUSED_UNLESS_DEFAULT: dict[str, tuple[tuple[Any, ...], str]] = {
    "shuffle_algo": (("py1e",), _WINDOW),
    "shuffle_block_size": ((None,), _WINDOW),
    "partition_algo": (("relaxed",), _PARTITION),
    "sampling_granularity": ((1,), "streammix draws whole passes per sample; shard locality "
                                   "comes from MixingConfig(window_shards=...)"),
    "replication": ((None,), "streammix gives every rank its own slice of the global batch; "
                             "replicate batches in the training loop instead"),
}
BATCHING_METHODS = ("random", "stratified", "per_stream")
SAMPLING_METHODS = ("balanced", "fixed")


@dataclass(frozen=True, kw_only=True)
class UpstreamOptions:
    """What the upstream arguments ask of the streammix order.

    Attributes:
        shuffle: False for upstream's ``shuffle=False`` (passes in shard and sample order).
        batching_method: ``'random'``, ``'stratified'`` (both the sample interleave) or
            ``'per_stream'`` (the interleave over whole global batches).
        sampling_method: as given; None when not given (streammix's subsets are fixed).
        canonical_nodes: ``num_canonical_nodes`` as given (None: not given).
    """

    shuffle: bool
    batching_method: str
    sampling_method: str | None
    canonical_nodes: int | None = None


def check_upstream_kwargs(kwargs: Mapping[str, Any], mixing: MixingConfig) -> UpstreamOptions:
    """Refuse what streammix cannot honour; return what it honours (``kwargs`` untouched)."""
    for name, (honoured, why) in REFUSED_UNLESS_DEFAULT.items():
        if name in kwargs and not any(kwargs[name] == value and type(kwargs[name]) is
                                      type(value) for value in honoured):
            raise ValueError(f"StreamMixDataset does not honour {name}={kwargs[name]!r}: {why}")
    batching = kwargs.get("batching_method", "random")
    if batching == "device_per_stream":
        raise ValueError(
            "StreamMixDataset does not honour batching_method='device_per_stream': use "
            "batching_method='per_stream' (every global batch from one domain, the domain "
            "chosen by the weights)")
    if batching not in BATCHING_METHODS:
        raise ValueError(f"batching_method must be one of {BATCHING_METHODS}, got {batching!r}")
    if batching == "per_stream" and mixing.sequence_length is not None:
        raise ValueError("batching_method='per_stream' does not combine with packing "
                         "(sequence_length): a packed block may span domains")
    if batching == "stratified" and mixing.interleave != "greedy":
        raise ValueError(
            "batching_method='stratified' needs MixingConfig(interleave='greedy'): the greedy "
            "interleave puts each domain in every global batch in proportion to its weight; "
            f"interleave={mixing.interleave!r} draws domains at random")
    sampling = kwargs.get("sampling_method")
    if sampling is not None and sampling not in SAMPLING_METHODS:
        raise ValueError(f"Invalid sampling method: {sampling!r}; sampling_method must be one "
                         f"of {SAMPLING_METHODS}")
    _check_stream_class(kwargs)
    shuffle = kwargs.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    return UpstreamOptions(shuffle=shuffle, batching_method=batching, sampling_method=sampling,
                           canonical_nodes=_canonical_nodes(kwargs, mixing))


def _check_stream_class(kwargs: Mapping[str, Any]) -> None:
    """``stream_name``/``stream_config`` make the Streams of ``local``/``remote``, as upstream;
    with ``streams=[...]`` upstream ignores them, streammix refuses them."""
    name, config = kwargs.get("stream_name", "stream"), kwargs.get("stream_config")
    if not isinstance(name, str):
        raise TypeError(f"stream_name must be a str (a name in streams_registry), got {name!r}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"stream_config must be a dict of Stream arguments, got {config!r}")
    if kwargs.get("streams") is not None and (name != "stream" or config):
        raise ValueError(
            f"stream_name={name!r}/stream_config apply to the Streams made from local/remote; "
            "with streams=[...] make the streams as instances of your Stream class instead")


def _canonical_nodes(kwargs: Mapping[str, Any], mixing: MixingConfig) -> int | None:
    """``num_canonical_nodes`` checked against ``MixingConfig.canonical_nodes``."""
    given = kwargs.get("num_canonical_nodes")
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 1:
        raise ValueError(f"num_canonical_nodes must be a positive integer, got {given!r}")
    if mixing.canonical_nodes is not None and mixing.canonical_nodes != given:
        raise ValueError(f"num_canonical_nodes={given} and MixingConfig(canonical_nodes="
                         f"{mixing.canonical_nodes}) disagree: give the canonical nodes once")
    return int(given)


def check_stratified_batches(names: Sequence[str], weights: Sequence[Sequence[float]],
                             global_batch_size: int) -> None:
    """Refuse ``'stratified'`` when a weighted domain gets under one sample per global batch.

    ``weights``: every known weight vector (the initial one and each static schedule entry).
    """
    for vector in weights:
        for name, weight in zip(names, vector):
            share = weight * global_batch_size
            if 0 < share < 1:
                raise ValueError(
                    f"Number of samples for stream {name!r} per global batch is {share:.3g} "
                    f"(weight {weight:.3g} of {global_batch_size}): batching_method='stratified' "
                    "puts every domain in every global batch; raise the global batch size or "
                    "the domain's weight, or use batching_method='random'")


def given_stream_weighting(streams: Sequence[Any] | None) -> str:
    """``'relative'`` (proportion), ``'absolute'`` (repeat/choose) or ``'none'``.

    Call before upstream's constructor, which sets all three attributes on every stream.
    """
    if not streams:
        return "none"
    if any(hasattr(s, "proportion") for s in streams):
        return "relative"
    if any(hasattr(s, "repeat") or hasattr(s, "choose") for s in streams):
        return "absolute"
    return "none"


def stream_domain_weights(streams: Sequence[Any], names: Sequence[str],
                          mixing: MixingConfig) -> dict[str, float] | None:
    """Domain weights from ``Stream(proportion=...)`` (after upstream normalized them)."""
    if mixing.domain_weights is not None:
        raise ValueError("give domain weights once: either Stream(proportion=...) or "
                         "MixingConfig(domain_weights=...), not both")
    return {name: float(s.proportion) for name, s in zip(names, streams)}


def stream_sample_counts(streams: Sequence[Any], names: Sequence[str],
                         samples_per_stream: Sequence[int], *, mixing: MixingConfig,
                         seed: int) -> dict[str, np.ndarray | None]:
    """Per-sample repeat counts from ``Stream(repeat=...)``/``Stream(choose=...)``.

    Upstream has already turned either into ``stream.choose`` (samples per epoch). A stream
    without a fractional part gets no counts array (None: every sample ``choose / n`` times).
    """
    if mixing.sample_counts is not None:
        raise ValueError("give per-sample counts once: either Stream(repeat=...)/"
                         "Stream(choose=...) or MixingConfig(sample_counts=...), not both")
    counts: dict[str, np.ndarray | None] = {}
    for d, (name, stream, n) in enumerate(zip(names, streams, samples_per_stream)):
        choose, n = int(stream.choose), int(n)
        counts[name] = None if choose == n else choose_counts(n, choose, seed=seed, domain=d)
    return counts


def upstream_chose_subsets(streams: Sequence[Any], samples_per_stream: Sequence[int]) -> bool:
    """Whether upstream's weighting (after its constructor) draws other than every sample
    once per epoch from some stream (``choose != samples``)."""
    return any(int(s.choose) != int(n) for s, n in zip(streams, samples_per_stream))


def resampled_domains(streams: Sequence[Any], names: Sequence[str],
                      samples_per_stream: Sequence[int], options: UpstreamOptions
                      ) -> frozenset[str]:
    """Domains whose extra copies are redrawn every pass: ``sampling_method='balanced'``
    given, and a fractional ``choose`` (not a whole number of copies of every sample)."""
    if options.sampling_method != "balanced":
        return frozenset()
    return frozenset(name for name, s, n in zip(names, streams, samples_per_stream)
                     if int(s.choose) % int(n))


def choose_counts(num_samples: int, choose: int, *, seed: int, domain: int) -> np.ndarray:
    """Repeat counts summing to ``choose``: ``choose // n`` each, one more for a keyed subset.

    The subset (``choose % n`` samples) is the samples with the smallest keyed hash of their
    index under ``(seed, domain)``: deterministic, independent of process and platform.
    """
    if choose < 0:
        raise ValueError(f"choose must be >= 0, got {choose}")
    full, extra = divmod(choose, num_samples)
    counts = np.full(num_samples, full, dtype=np.int64)
    if extra:
        key = np.uint64(derive_key(seed, _PURPOSE_CHOOSE, domain))
        hashes = mix64_array(np.arange(num_samples, dtype=np.uint64) ^ key)
        counts[np.argsort(hashes, kind="stable")[:extra]] += 1
    return counts


"""Canonical nodes of a StreamMixDataset: choosing ``C``, checking the physical nodes.

The order's canonical nodes ``C`` (:mod:`streammix.core.canonical`) cut every global batch
into ``C`` slices, slice ``c`` reading only the ``c``-th group of each domain's shards.
Physical node ``n`` of ``N`` serves the contiguous positions ``[n*G/N, (n+1)*G/N)`` of every
batch (its ranks' contiguous per-device spans, as upstream numbers ranks node by node), i.e.
slices ``[n*C/N, (n+1)*C/N)`` when ``N`` divides ``C``, so it downloads about ``1/N`` of
the shards per epoch. When ``C`` divides ``N``, ``N/C`` nodes share a slice and each reads
about ``1/C`` of the shards. Any other ``N`` is refused, as upstream refuses it: the order
would still be right, but every node would straddle groups.

Choosing ``C``, in this order:

1. given (``MixingConfig.canonical_nodes`` or upstream's ``num_canonical_nodes``): that;
2. resuming: the checkpoint's (``load_state_dict`` adopts it, so a run resumed on another
   number of nodes keeps its order);
3. otherwise the number of physical nodes of this first start. Upstream's default is the
   same for its default shuffle (``py1e``); for ``py1s``/``py2s`` it takes 64 times that,
   which would make ``G`` a multiple of ``64*N`` here: slices of a streammix batch are cut
   from ``G``, so ``C`` stays small. A run started on one node therefore has ``C = 1`` and
   can grow to any number of nodes (without node-local reads); pass ``canonical_nodes`` to
   plan for more.

Packing runs with ``C = 1`` (its order has no canonical slices yet); asking for more there
is an error rather than a silent ``C = 1``. Per-stream batching keeps one interleave over
whole global batches and cuts each batch into ``C`` slices, slice ``c`` reading the ``c``-th
group of its domain (``EpochBatchesMixin._per_stream_samples``).
"""

from __future__ import annotations

from streammix.core.schedule import canonical_slice_size


def choose_canonical_nodes(*, given: int | None, num_nodes: int, packing: bool,
                           per_stream: bool, global_batch_size: int | None) -> int:
    """``C`` for a first start (see the module docstring); checks a given one."""
    supported = not packing
    if given is not None:
        check_supported(given, packing=packing, per_stream=per_stream,
                        global_batch_size=global_batch_size)
        return given
    if not supported or global_batch_size is None:
        return 1
    return num_nodes


def check_supported(canonical_nodes: int, *, packing: bool, per_stream: bool,
                    global_batch_size: int | None) -> None:
    """ValueError when ``C > 1`` cannot be served by this configuration."""
    check_order_supports(canonical_nodes, packing=packing, per_stream=per_stream)
    if canonical_nodes == 1:
        return
    if global_batch_size is None:
        raise ValueError(f"canonical_nodes={canonical_nodes} needs batch_size at construction: "
                         "the canonical slices are cut from the global batch")
    try:
        canonical_slice_size(canonical_nodes, global_batch_size)
    except ValueError:
        raise ValueError(f"canonical_nodes={canonical_nodes} must divide the global batch size "
                         f"{global_batch_size}") from None


def check_order_supports(canonical_nodes: int | None, *, packing: bool,
                         per_stream: bool) -> None:
    """ValueError when ``C > 1`` is asked of an order that has no canonical slices yet."""
    if canonical_nodes is None or canonical_nodes == 1:
        return
    if packing:
        raise ValueError(f"canonical_nodes={canonical_nodes}: packing (sequence_length) does not "
                         "support canonical nodes yet; use canonical_nodes=1 (every node then "
                         "reads all shards)")


def check_physical_nodes(num_nodes: int, canonical_nodes: int) -> None:
    """ValueError unless ``N`` divides ``C`` or ``C`` divides ``N``."""
    if num_nodes % canonical_nodes and canonical_nodes % num_nodes:
        raise ValueError(
            f"{num_nodes} physical nodes cannot serve {canonical_nodes} canonical nodes: the "
            "number of nodes must divide canonical_nodes (or be a multiple of it). "
            "canonical_nodes fixes the order of a run (it is recorded in its checkpoints); "
            f"run on a divisor of {canonical_nodes} nodes, or start a new run")

"""Pure numpy + numba kernels of the streammix order (no torch, streaming or composer).

- :mod:`~streammix.core.rng`: counter-based hashing RNG and keyed permutations.
- :mod:`~streammix.core.passes`: domain passes shuffled with shard locality.
- :mod:`~streammix.core.interleave`: Megatron-exact greedy and seeded random interleaving.
- :mod:`~streammix.core.schedule`: weight segments with cursors at their starts.
- :mod:`~streammix.core.groups`: each domain split into canonical groups of shards.
- :mod:`~streammix.core.lane`: one stream of positions (the whole order, or one slice).
- :mod:`~streammix.core.order`: the global order, position -> (domain, sample).
- :mod:`~streammix.core.canonical`: canonical slices, lanes and physical nodes.
- :mod:`~streammix.core.exact_epochs`: one-pass epochs with canonical nodes (natural weights).
- :mod:`~streammix.core.partition`: ranks, DataLoader workers, global batches.
- :mod:`~streammix.core.epoch`: a whole epoch's per-(rank, worker) sample ids at once.
- :mod:`~streammix.core.packing`: fixed-length token blocks over ordered documents.
"""

from streammix.core.canonical import (
    check_nodes,
    node_batch_span,
    node_slices,
    rank_slices,
    slice_of,
)
from streammix.core.epoch import sample_id_dtype, worker_sample_ids
from streammix.core.greedy_skip import greedy_counts_at
from streammix.core.groups import DomainGroups, split_domain
from streammix.core.interleave import advance_greedy, interleave, skip_greedy
from streammix.core.order import GlobalOrder, OrderConfig
from streammix.core.packing import block_pieces, num_blocks
from streammix.core.partition import (
    device_batch_span,
    scatter_to_workers,
    worker_batches,
    worker_positions,
)
from streammix.core.passes import DEFAULT_WINDOW_SHARDS, DomainLayout
from streammix.core.schedule import (
    Schedule,
    Segment,
    canonical_slice_size,
    check_aligned,
    normalize_weights,
    segment_picks,
)

__all__ = [
    "DEFAULT_WINDOW_SHARDS",
    "DomainGroups",
    "DomainLayout",
    "GlobalOrder",
    "OrderConfig",
    "Schedule",
    "Segment",
    "advance_greedy",
    "block_pieces",
    "canonical_slice_size",
    "check_aligned",
    "check_nodes",
    "greedy_counts_at",
    "device_batch_span",
    "interleave",
    "node_batch_span",
    "node_slices",
    "normalize_weights",
    "num_blocks",
    "rank_slices",
    "scatter_to_workers",
    "segment_picks",
    "skip_greedy",
    "slice_of",
    "split_domain",
    "worker_batches",
    "worker_positions",
    "worker_sample_ids",
    "sample_id_dtype",
]

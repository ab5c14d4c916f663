"""A packed reader's document tokens: shards mapped once, fetched through upstream.

Packed blocks need about two documents each, so reading them one ``get_item`` at a time
(one file open per document) costs more than the block itself. ``DocumentTokens`` keeps the
raw files of the shards in use mapped (``streammix.format.mds_reader.ShardTokens``, at most
``max_mapped`` of them, least recently used dropped first) and serves a document's tokens
as a slice of its shard.

Fetching, caching and eviction stay upstream's: a shard that is not LOCAL (not fetched yet,
or being written by another process) or whose raw file is missing is brought in, or waited
for, with the dataset's own ``prepare_shard`` (download, decompression, eviction of
colder shards under ``cache_limit``), retried as ``get_item`` retries; every read stamps the
shard's access time as ``get_item`` does; and a mapped shard whose state is no longer
LOCAL (evicted) is mapped again from the file ``prepare_shard`` brings back. Shards whose
token column is not a 1-D array of a fixed dtype, or streams that are not MDS, are read
through upstream's ``get_item``, keeping the last few documents (a document that
straddles two blocks is read by both).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from time import time_ns
from typing import Any

import numpy as np
from streaming.base.dataset import _ShardState

from streammix.format.mds_reader import ShardTokens, token_column_layout

TOKEN_COLUMN = "tokens"
SHARD_RETRIES = 7          # as upstream's get_item: a shard may be evicted again meanwhile
RECENT_DOCUMENTS = 16      # documents kept when reading through upstream's get_item
LOCAL_STATE = int(_ShardState.LOCAL)  # a shard whose files are in the local cache


class DocumentTokens:
    """``tokens(dataset, sample_ids)`` for one reader (process) of a ``StreamingDataset``.

    The dataset is passed to each call rather than kept: the dataset keeps this reader, and
    a reference back would make a cycle that outlives ``del dataset`` until the garbage
    collector runs, holding upstream's shared memory (a new dataset over the same local
    folders then fails to create it).
    """

    def __init__(self, *, max_mapped: int) -> None:
        if max_mapped < 1:
            raise ValueError(f"max_mapped must be >= 1, got {max_mapped}")
        self.max_mapped = max_mapped
        self._mapped: OrderedDict[int, ShardTokens] = OrderedDict()
        self._unmappable: set[int] = set()
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()

    def tokens(self, dataset: Any, sample_ids: np.ndarray) -> list[np.ndarray]:
        """The token ids of each global sample in ``sample_ids`` (read-only arrays).

        Shards are located for all ids with one search, and each distinct shard is checked
        and stamped once per call (a block's documents mostly share a shard).
        """
        ids = np.asarray(sample_ids, dtype=np.int64)
        bounds = dataset.sample_offset_per_shard
        if ids.size and (ids.min() < 0 or ids.max() >= dataset.num_samples):
            raise IndexError(f"sample ids {ids.tolist()} are not all in [0, "
                             f"{dataset.num_samples})")
        shard_ids = np.searchsorted(bounds, ids, side="right") - 1
        indexes = (ids - bounds[shard_ids]).tolist()
        shards: dict[int, ShardTokens | None] = {}
        result = []
        for sample_id, shard_id, index in zip(ids.tolist(), shard_ids.tolist(), indexes):
            if shard_id not in shards:
                shards[shard_id] = self._shard(dataset, shard_id)
                if shards[shard_id] is not None:
                    dataset._shard_access_times[shard_id] = time_ns()
            shard = shards[shard_id]
            result.append(self._through_get_item(dataset, sample_id) if shard is None
                          else shard.tokens(index))
        return result

    def _shard(self, dataset: Any, shard_id: int) -> ShardTokens | None:
        shard = self._mapped.get(shard_id)
        if shard is not None:
            if dataset._shard_states[shard_id] == LOCAL_STATE:
                self._mapped.move_to_end(shard_id)
                return shard
            del self._mapped[shard_id]  # evicted meanwhile: map what prepare_shard brings
        if shard_id in self._unmappable:
            return None
        reader = dataset.shards[shard_id]
        if not _readable(reader):  # upstream's get_item reads it
            self._unmappable.add(shard_id)
            return None
        columns = dict(column_names=reader.column_names, column_encodings=reader.column_encodings,
                       column_sizes=reader.column_sizes)
        path = os.path.join(reader.dirname, reader.split or "", reader.raw_data.basename)
        for _ in range(1 + SHARD_RETRIES):
            if dataset._shard_states[shard_id] != LOCAL_STATE:  # fetch it, or wait for the
                dataset.prepare_shard(shard_id)                # process writing it
            try:
                shard = ShardTokens(path, column=TOKEN_COLUMN, **columns)
                break
            except FileNotFoundError:
                dataset.prepare_shard(shard_id)
        else:
            raise RuntimeError(f"shard {path} is still missing after {1 + SHARD_RETRIES} "
                               "fetches (evicted again each time: is cache_limit too low?)")
        self._mapped[shard_id] = shard
        if len(self._mapped) > self.max_mapped:
            self._mapped.popitem(last=False)
        return shard

    def _through_get_item(self, dataset: Any, sample_id: int) -> np.ndarray:
        tokens = self._recent.get(sample_id)
        if tokens is None:
            tokens = dataset[sample_id][TOKEN_COLUMN]
            if len(self._recent) >= RECENT_DOCUMENTS:
                self._recent.popitem(last=False)
            self._recent[sample_id] = tokens
        return tokens


def _readable(reader: Any) -> bool:
    """Whether ``ShardTokens`` decodes this shard: MDS with a 1-D, fixed-dtype token column."""
    names = getattr(reader, "column_names", None)
    if names is None or TOKEN_COLUMN not in names:
        return False
    try:
        token_column_layout(reader.column_encodings[list(names).index(TOKEN_COLUMN)])
    except ValueError:
        return False
    return True

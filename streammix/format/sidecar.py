"""The per-sample metadata sidecar ``streammix.parquet`` that sits beside an MDS Stream.

Row ``i`` of the sidecar describes sample ``i`` of the Stream in the same folder (MDS
order). The columns written by ``streammix-build``:

``sample_key`` (int64)
    the document's position in the whole build (domains in order, then input order);
    cluster ids refer to these keys.
``source``, ``id``, ``meta``
    where the document came from (``path:line``, ``path#row``, ``path``), its id field, and
    the other fields of its input record as JSON.
``num_bytes`` (int64), ``num_tokens`` (int32, when tokenized)
``quality`` (float32, raw score), ``quality_norm`` (float32, rank-normalized to [0, 1]
    over the whole build) and the scorer's signal columns (float32).
``signature`` (fixed-size list of uint32)
    the MinHash of the near-duplicate shingles (word 5-grams by default).
``dup_cluster_id``, ``dup_cluster_size`` (int64)
    near-duplicate clusters (LSH at ``--dedup-threshold``); the id is the smallest member's
    sample key.
``topic_cluster_id``, ``topic_cluster_size`` (int64)
    topics: k-medoids over MinHash signatures of word unigrams (``--topic-clusters``,
    ``streammix.metadata.clusters.topic_clusters``); the id is the sample key of the
    cluster's medoid (the smallest key among its exact copies). With ``--topic-backend
    embeddings:DIR``: spherical k-means over sentence embeddings
    (``streammix.metadata.embedding_topics``), the id is the member nearest the centroid
    and distances are ``(1 - cosine) / 2``. A document sharing no
    MinHash value with any medoid has no topic: its own key, size 1, distance 1.
``topic_distance`` (float32)
    the estimated Jaccard distance of the sample to its topic's medoid.
``topic_compactness``, ``topic_separation`` (float32)
    SampleMix's two cluster terms (``streammix.metadata.diversity``): the mean distance of
    the topic's members to its medoid (copies counted once), and the mean distance of its
    medoid to the 3 nearest other medoids.
``diversity`` (float32 in [0, 1])
    ``separation * (compactness + topic_distance) / 2 / dup_cluster_size``, rank-normalized
    over the whole build.

Cluster sizes count every member of the build, also those ``--dedup`` removed.

Beside it, a tokenized build writes ``streammix.tokens.npy``: the ``num_tokens`` column
alone as an int32 array (4 bytes per sample), which is all that training needs from the
metadata (packing). A training job never has to fetch the sidecar itself.

The schema metadata holds ``streammix.index_sha256``, the sha256 of the folder's
``index.json`` when the sidecar was written, plus the MinHash and quality settings as JSON.
``read_sidecar`` recomputes the fingerprint and raises ``SidecarMismatchError`` if the
Stream was rewritten after its sidecar, because rows would then no longer line up.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SIDECAR_NAME = "streammix.parquet"
TOKEN_COUNTS_NAME = "streammix.tokens.npy"
INDEX_NAME = "index.json"
FINGERPRINT_KEY = "streammix.index_sha256"


class SidecarMismatchError(ValueError):
    """The sidecar does not belong to the Stream beside it (or is missing)."""


def index_fingerprint(domain_dir: str | os.PathLike) -> str:
    """sha256 (hex) of the ``index.json`` of an MDS Stream folder."""
    path = Path(domain_dir) / INDEX_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise SidecarMismatchError(f"cannot read {path}: {exc.strerror or exc}") from None


def sidecar_metadata(table: pa.Table) -> dict[str, Any]:
    """The ``streammix.*`` schema metadata of a sidecar table, JSON values decoded."""
    result: dict[str, Any] = {}
    for key, value in (table.schema.metadata or {}).items():
        name = key.decode("utf-8")
        if name.startswith("streammix."):
            text = value.decode("utf-8")
            try:
                result[name] = json.loads(text)
            except ValueError:
                result[name] = text
    return result


def write_sidecar(
    domain_dir: str | os.PathLike,
    columns: Mapping[str, pa.Array | pa.ChunkedArray | Sequence[Any]],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``streammix.parquet`` into a finished Stream folder (temp name + rename).

    ``columns`` must have one row per sample of the Stream; the fingerprint of its
    ``index.json`` is added to ``metadata`` (other values are stored as JSON).
    """
    folder = Path(domain_dir)
    table = pa.table(dict(columns))
    expected = _num_samples(folder)
    if table.num_rows != expected:
        raise ValueError(
            f"sidecar for {folder} has {table.num_rows} rows but the Stream has {expected} samples"
        )
    meta = {FINGERPRINT_KEY: index_fingerprint(folder)}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    table = table.replace_schema_metadata(meta)
    target = folder / SIDECAR_NAME
    tmp = folder / f".{SIDECAR_NAME}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, target)
    return target


def read_sidecar(domain_dir: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """The sidecar of a Stream folder, checked against the folder's ``index.json``."""
    folder = Path(domain_dir)
    path = folder / SIDECAR_NAME
    if not path.is_file():
        raise SidecarMismatchError(
            f"{folder} has no {SIDECAR_NAME}; was it built by streammix-build?"
        )
    schema = pq.read_schema(path)
    stored = (schema.metadata or {}).get(FINGERPRINT_KEY.encode())
    actual = index_fingerprint(folder)
    if stored is None or stored.decode() != actual:
        raise SidecarMismatchError(
            f"{path} does not match {folder / INDEX_NAME} (the Stream was rewritten after its"
            " sidecar); rebuild with streammix-build"
        )
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; available: {schema.names}")
    return pq.read_table(path, columns=list(columns) if columns is not None else None)


def _num_samples(folder: Path) -> int:
    with open(folder / INDEX_NAME, encoding="utf-8") as stream:
        index = json.load(stream)
    return sum(int(shard["samples"]) for shard in index["shards"])


def write_token_counts(domain_dir: str | os.PathLike, counts: Sequence[int] | Any) -> Path:
    """Write ``streammix.tokens.npy`` (int32, one entry per sample of the Stream)."""
    import numpy as np

    folder = Path(domain_dir)
    array = np.ascontiguousarray(counts, dtype=np.int64)
    expected = _num_samples(folder)
    if array.shape != (expected,):
        raise ValueError(f"{folder}: {array.size} token counts for {expected} samples")
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{folder}: token counts outside the int32 range")
    tmp = folder / f".{TOKEN_COUNTS_NAME}.tmp"
    with open(tmp, "wb") as stream:
        np.save(stream, array.astype(np.int32))
    os.replace(tmp, folder / TOKEN_COUNTS_NAME)
    return folder / TOKEN_COUNTS_NAME


def read_token_counts(domain_dir: str | os.PathLike) -> Any:
    """``streammix.tokens.npy`` as int64, checked against the Stream's sample count."""
    import numpy as np

    folder = Path(domain_dir)
    counts = np.load(folder / TOKEN_COUNTS_NAME, allow_pickle=False).astype(np.int64)
    expected = _num_samples(folder)
    if counts.shape != (expected,):
        raise SidecarMismatchError(
            f"{folder / TOKEN_COUNTS_NAME} has {counts.size} entries but the Stream has "
            f"{expected} samples; rebuild with streammix-build")
    return counts

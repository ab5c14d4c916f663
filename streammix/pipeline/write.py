"""Stage 4, *write*: one MDS Stream and sidecar per domain and split, moved into place whole.

For each domain in order, and for its train then validation split, the prepared units are
read in plan order and their kept rows written with ``StreamWriter`` into a temporary folder
``.streammix-work/write/<name>``; the sidecar (one row per MDS sample, in MDS order, with
the cluster-stage columns) is written after the shards, with the fingerprint of the
finished ``index.json``. Then the folder is renamed to ``OUT/<name>`` (``<domain>`` or
``<domain>-val``) and a marker ``written/<name>`` is saved in the work folder; a resumed
build skips folders with a marker, and deletes and writes again a temporary folder left by
a killed run or a final folder without a marker (killed between rename and marker, or left
by an earlier build). The output depends only on the plan and the cluster stage, never on
timing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streammix.format.mds import StreamWriter
from streammix.format.sidecar import (
    SIDECAR_NAME,
    index_fingerprint,
    write_sidecar,
    write_token_counts,
)
from streammix.pipeline.cluster import CLUSTER_NAME, SPLIT_TRAIN, SPLIT_VAL
from streammix.pipeline.config import VAL_SUFFIX, BuildConfig
from streammix.pipeline.plan import Plan
from streammix.pipeline.prepare import unit_path
from streammix.pipeline.workdir import atomic_write_bytes

# Samples are encoded on one thread at roughly 300 MB/s (measured), which keeps a few zstd
# threads busy, not more; each thread holds one shard (64 MB by default) in memory.
MAX_COMPRESS_THREADS = 4
SIDECAR_FROM_UNITS = ("source", "id", "meta", "num_bytes", "quality", "signature")
SIDECAR_FROM_CLUSTER = (
    "dup_cluster_id",
    "dup_cluster_size",
    "topic_cluster_id",
    "topic_cluster_size",
    "topic_distance",
    "topic_compactness",
    "topic_separation",
    "diversity",
    "quality_norm",
)


@dataclass(frozen=True, kw_only=True)
class StreamResult:
    """One written Stream folder."""

    domain: str
    split: str
    dirname: str
    num_samples: int
    num_tokens: int
    num_bytes: int
    index_sha256: str


@dataclass(frozen=True, kw_only=True)
class WriteContext:
    config: BuildConfig
    plan: Plan
    work: Path
    out: Path
    token_dtype: str | None
    sidecar_metadata: dict[str, Any]


def run_write(context: WriteContext, on_samples: Callable[[int], None]) -> list[StreamResult]:
    """Write every domain's Streams (see the module docstring); returns them in order."""
    cluster = pq.read_table(context.work / CLUSTER_NAME)
    offsets = np.asarray(json.loads(cluster.schema.metadata[b"streammix.unit_offsets"]))
    split = cluster["split"].to_numpy()
    results = []
    for domain_id, spec in enumerate(context.config.domains):
        for split_value, split_name, suffix in (
            (SPLIT_TRAIN, "train", ""),
            (SPLIT_VAL, "val", VAL_SUFFIX),
        ):
            dirname = spec.name + suffix
            units = context.plan.units_of(spec.name)
            keys = _keys_of(units, offsets, split, split_value)
            if split_value == SPLIT_VAL and sum(len(k) for k in keys) == 0:
                continue
            final = context.out / dirname
            marker = context.work / "written" / dirname
            if not marker.exists():  # a folder without its marker is not from this build
                if final.exists():
                    shutil.rmtree(final)
                _write_stream(context, domain_id, units, keys, cluster, dirname)
                atomic_write_bytes(marker, index_fingerprint(final).encode())
            result = describe_stream(final, spec.name, split_name, dirname)
            on_samples(result.num_samples)
            results.append(result)
    return results


def _keys_of(units: list, offsets: np.ndarray, split: np.ndarray, value: int) -> list[np.ndarray]:
    keys = []
    for unit in units:
        start, stop = int(offsets[unit.index]), int(offsets[unit.index + 1])
        keys.append(start + np.flatnonzero(split[start:stop] == value))
    return keys


def _write_stream(
    context: WriteContext,
    domain_id: int,
    units: list,
    keys: list[np.ndarray],
    cluster: pa.Table,
    dirname: str,
) -> None:
    config = context.config
    tmp = context.work / "write" / dirname
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    offsets = json.loads(cluster.schema.metadata[b"streammix.unit_offsets"])
    pieces = []
    writer = StreamWriter(
        tmp,
        token_dtype=context.token_dtype,
        with_id=config.id_field is not None,
        compression=config.compression,
        size_limit=config.size_limit,
        compress_threads=max(1, min(config.workers, MAX_COMPRESS_THREADS)),
    )
    with writer:
        for unit, unit_keys in zip(units, keys):
            table = pq.read_table(unit_path(context.work / "units", unit.index))
            rows = table.take(pa.array(unit_keys - offsets[unit.index], type=pa.int64()))
            writer.write_table(rows, domain_id)
            picked = cluster.take(pa.array(unit_keys, type=pa.int64()))
            pieces.append(sidecar_rows(rows, unit_keys, picked))
    columns = sidecar_columns(pieces)
    write_sidecar(
        tmp,
        columns,
        context.sidecar_metadata
        | {
            "streammix.domain": {"name": config.domains[domain_id].name, "id": domain_id},
        },
    )
    if "num_tokens" in columns:
        write_token_counts(tmp, np.asarray(columns["num_tokens"]))
    os.rename(tmp, context.out / dirname)


def sidecar_rows(rows: pa.Table, keys: np.ndarray, picked: pa.Table) -> pa.Table:
    """Sidecar rows of prepared ``rows`` with sample ``keys`` and their cluster-stage rows."""
    columns: dict[str, Any] = {"sample_key": pa.array(keys, type=pa.int64())}
    for name in SIDECAR_FROM_UNITS:
        columns[name] = rows[name]
    if "tokens" in rows.column_names:
        lengths = pc.list_value_length(rows["tokens"])
        columns["num_tokens"] = lengths.cast(pa.int32())
    for name in SIDECAR_FROM_CLUSTER:
        columns[name] = picked[name]
    for name in rows.column_names:
        if name.startswith("signal:"):
            signal = name.removeprefix("signal:")
            if signal in columns:
                raise ValueError(
                    f"the quality scorer's signal {signal!r} clashes with a sidecar column"
                )
            columns[signal] = rows[name]
    return pa.table(columns)


def sidecar_columns(pieces: list[pa.Table]) -> dict[str, pa.ChunkedArray]:
    table = pa.concat_tables(pieces, promote_options="default").combine_chunks()
    return {name: table[name] for name in table.column_names}


def describe_stream(folder: Path, domain: str, split: str, dirname: str) -> StreamResult:
    names = pq.read_schema(folder / SIDECAR_NAME).names
    wanted = [c for c in ("num_bytes", "num_tokens") if c in names]
    table = pq.read_table(folder / SIDECAR_NAME, columns=wanted)
    tokens = table["num_tokens"] if "num_tokens" in table.column_names else None
    return StreamResult(
        domain=domain,
        split=split,
        dirname=dirname,
        num_samples=table.num_rows,
        num_tokens=int(np.asarray(tokens, dtype=np.int64).sum()) if tokens is not None else 0,
        num_bytes=int(np.asarray(table["num_bytes"], dtype=np.int64).sum()),
        index_sha256=index_fingerprint(folder),
    )


def sidecar_build_metadata(config: BuildConfig) -> dict[str, Any]:
    """The build-wide ``streammix.*`` metadata of every sidecar (the domain is added per Stream)."""
    return {
        "streammix.minhash": config.output_fields()["minhash"],
        "streammix.topics": config.output_fields()["topics"]
        | {"method": "k-medoids over MinHash, estimated Jaccard distance", "seed": config.seed},
        "streammix.quality": {"scorer": config.scorer, "normalization": "rank over the build"},
    }

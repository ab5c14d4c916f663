"""Stage 3, *cluster*: decisions that need every document of the build at once.

All prepared units are read in plan order (domains in the given order, then units, then
records); a document's position in that order is its **sample key**, a stable global id
that the sidecar keeps. Over all domains together this stage computes:

- near-duplicate clusters from the MinHash signatures (LSH + union-find, with the band
  layout of ``streammix.metadata.clusters.build_bands_rows``, which weighs a missed pair 4x
  a false one), merged with a second pass over the word-unigram topic signatures at Jaccard
  0.8, confirmed on the 5-gram signatures at 0.25, that finds short documents with a few
  words changed (``vocabulary_duplicates``); a
  cluster's id is the smallest sample key among its members;
- topic clusters: k-medoids over the unigram topic signatures
  (``streammix.metadata.clusters.topic_clusters``, ``topic_clusters`` clusters, 0 = about
  the square root of the number of documents, seeded with the build ``seed``), after
  ``collapse_unshared_values`` has turned every signature value that no other document of
  the build holds into one out-of-vocabulary value (or, with ``--topic-backend
  embeddings:DIR``, k-means over sentence embeddings, ``streammix.metadata.embedding_topics``),
  and the
  diversity score from their compactness and separation, discounted by near-duplicate
  cluster size (``streammix.metadata.diversity``);
- the normalized quality: ``rank_normalize`` of the raw scores over the whole build
  (average ranks of ties, scaled to [0, 1]), so scores are comparable across domains;
- with ``dedup``, every cluster keeps its member with the smallest key (the cluster id);
  the others are marked removed and listed in ``OUT/dedup_removed.jsonl`` with the sample
  they duplicate, so nothing disappears unaccounted;
- the validation split, per domain, among the kept documents: ``--val-fraction f`` puts a
  document in validation when its split hash (see *prepare*) is below ``f * 2**64``;
  ``--val-samples n`` takes the ``n`` smallest split hashes (ties by sample key).

The result is one row per sample key in ``cluster.parquet`` in the work folder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streammix.pipeline.config import BuildConfig, BuildError
from streammix.pipeline.plan import Plan
from streammix.pipeline.prepare import rejects_path, unit_path
from streammix.pipeline.workdir import atomic_write_bytes

CLUSTER_NAME = "cluster.parquet"
DEDUP_LIST_NAME = "dedup_removed.jsonl"
SPLIT_TRAIN, SPLIT_VAL, SPLIT_REMOVED = 0, 1, -1


@dataclass(frozen=True, kw_only=True)
class BuildIndex:
    """Per-sample-key columns gathered from every unit, in plan order."""

    domain: np.ndarray  # int32 domain index
    unit_offsets: np.ndarray  # int64, first key of each unit (len = units + 1)
    signatures: np.ndarray  # uint32 (N, num_perm)
    topic_features: np.ndarray  # uint32 (N, topic_num_perm) signatures or float32 embeddings
    quality: np.ndarray  # float32 raw scores
    split_hash: np.ndarray  # uint64


def _signature_matrix(column: pa.ChunkedArray, rows: int, num_perm: int) -> np.ndarray:
    flat = column.combine_chunks().values.to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.uint32).reshape(rows, num_perm)


def _embedding_matrix(column: pa.ChunkedArray, rows: int) -> np.ndarray:
    flat = column.combine_chunks()
    width = flat.type.list_size
    return np.asarray(flat.values.to_numpy(zero_copy_only=False), np.float32).reshape(rows, width)


def gather(
    plan: Plan,
    units_dir: Path,
    domain_names: list[str],
    num_perm: int,
    topic_num_perm: int,
    embeddings: bool = False,
) -> BuildIndex:
    """Read the small columns of every prepared unit into global arrays."""
    domain_of = {name: i for i, name in enumerate(domain_names)}
    counts, domains, signatures, topic_features, quality, hashes = [], [], [], [], [], []
    topic_column = "topic_embedding" if embeddings else "topic_signature"
    for unit in plan.units:
        table = pq.read_table(
            unit_path(units_dir, unit.index),
            columns=["signature", topic_column, "quality", "split_hash"],
        )
        counts.append(table.num_rows)
        domains.append(np.full(table.num_rows, domain_of[unit.domain], dtype=np.int32))
        signatures.append(_signature_matrix(table["signature"], table.num_rows, num_perm))
        if embeddings:
            topic_features.append(_embedding_matrix(table[topic_column], table.num_rows))
        else:
            topic_features.append(
                _signature_matrix(table[topic_column], table.num_rows, topic_num_perm)
            )
        quality.append(np.asarray(table["quality"], dtype=np.float32))
        hashes.append(np.asarray(table["split_hash"], dtype=np.uint64))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return BuildIndex(
        domain=_concat(domains, np.int32),
        unit_offsets=offsets,
        signatures=_concat(signatures, np.uint32).reshape(-1, num_perm),
        topic_features=_topic_matrix(topic_features, embeddings, topic_num_perm),
        quality=_concat(quality, np.float32),
        split_hash=_concat(hashes, np.uint64),
    )


def _topic_matrix(parts: list[np.ndarray], embeddings: bool, topic_num_perm: int) -> np.ndarray:
    if embeddings:
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return _concat(parts, np.uint32).reshape(-1, topic_num_perm)


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def run_cluster(config: BuildConfig, plan: Plan, work: Path, out: Path) -> Path:
    """Compute (or reuse) ``cluster.parquet``; write ``dedup_removed.jsonl`` with ``dedup``."""
    target = work / CLUSTER_NAME
    if target.exists():
        return target
    names = [d.name for d in config.domains]
    index = gather(
        plan,
        work / "units",
        names,
        config.minhash_num_perm,
        config.topic_num_perm,
        embeddings=config.embedding_model() is not None,
    )
    columns = cluster_columns(index, config)
    split = assign_splits(index, columns["dup_cluster_id"], config, names)
    columns["split"] = split
    check_domains_not_empty(
        index, split, names, lambda name: _unit_rejects(plan, work / "units", name)
    )
    if config.dedup:
        removed = np.flatnonzero(split == SPLIT_REMOVED)
        _write_removed_list(
            out / DEDUP_LIST_NAME, removed, columns["dup_cluster_id"], index, plan, work, names
        )
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    table = table.replace_schema_metadata(
        {"streammix.unit_offsets": json.dumps(index.unit_offsets.tolist())}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(target, sink.getvalue().to_pybytes())
    return target


def check_domains_not_empty(
    index: BuildIndex,
    split: np.ndarray,
    names: list[str],
    rejects_of: Callable[[str], Iterable[dict]],
) -> None:
    """A ``BuildError`` naming the cause when a domain has no training document left."""
    for d, name in enumerate(names):
        if not np.any((index.domain == d) & (split == SPLIT_TRAIN)):
            why = _why_empty(int(np.count_nonzero(index.domain == d)), rejects_of(name))
            raise BuildError(f"domain {name!r} has no usable documents: {why}")


def _unit_rejects(plan: Plan, units_dir: Path, name: str) -> Iterator[dict]:
    for unit in plan.units_of(name):
        for line in rejects_path(units_dir, unit.index).read_text(encoding="utf-8").splitlines():
            yield json.loads(line)


def _why_empty(kept: int, rejects: Iterable[dict]) -> str:
    """The rejects of a domain by reason, with the first record of the commonest reason."""
    reasons: Counter[str] = Counter()
    first: dict[str, dict] = {}
    for reject in rejects:
        reasons[reject["reason"]] += 1
        first.setdefault(reject["reason"], reject)
    if kept:
        rejected = f"; {sum(reasons.values())} more were rejected" if reasons else ""
        return (
            f"its {kept} documents all went to the validation split or were removed as "
            f"duplicates{rejected}"
        )
    if not reasons:
        return "its inputs hold no records"
    top, _ = reasons.most_common(1)[0]
    example = first[top]
    detail = f" ({example['detail']})" if example.get("detail") else ""
    counts = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    return (
        f"all {sum(reasons.values())} records were rejected ({counts}); e.g. "
        f"{example['source']}: {top}{detail}; rejects.jsonl in --out lists every one"
    )


def cluster_columns(
    index: BuildIndex,
    config: BuildConfig,
    duplicates: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Duplicate clusters, topic clusters, diversity and normalized quality per sample key.

    ``duplicates`` is ``(cluster_id, cluster_size)`` computed elsewhere (the Spark engine's
    LSH job); None computes them here from ``index.signatures``.
    """
    from streammix.metadata.clusters import (
        BUILD_FALSE_NEGATIVE_WEIGHT,
        BUILD_FALSE_POSITIVE_WEIGHT,
        duplicate_clusters,
    )
    from streammix.metadata.normalize import rank_normalize

    n = len(index.domain)
    if n == 0:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return {
            "dup_cluster_id": empty_i,
            "dup_cluster_size": empty_i,
            **{name: empty_i for name in ("topic_cluster_id", "topic_cluster_size")},
            **{name: empty_f for name in TOPIC_FLOAT_COLUMNS},
            "diversity": empty_f,
            "quality_norm": empty_f,
        }
    if duplicates is None:
        duplicates = duplicate_clusters(
            index.signatures,
            threshold=config.dedup_threshold,
            false_positive_weight=BUILD_FALSE_POSITIVE_WEIGHT,
            false_negative_weight=BUILD_FALSE_NEGATIVE_WEIGHT,
        )
    dup_id, dup_size = vocabulary_duplicates(
        index.topic_features, index.signatures, duplicates[0]
    )
    return {
        "dup_cluster_id": np.asarray(dup_id, dtype=np.int64),
        "dup_cluster_size": np.asarray(dup_size, dtype=np.int64),
        **topic_columns(index.topic_features, dup_id, dup_size, config),
        "quality_norm": np.asarray(rank_normalize(index.quality), dtype=np.float32),
    }


def vocabulary_duplicates(
    topic_features: np.ndarray, signatures: np.ndarray, dup_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The 5-gram near-duplicate clusters merged with the vocabulary ones (a second pass).

    Two changed words remove up to 10 of a document's 5-grams: a copy of a document of
    ``n`` words with two words changed keeps 5-gram Jaccard about ``(n - 14) / (n + 6)``,
    below the first pass's 0.8 up to about 90 words, while its word set hardly changes
    (``(d - 2) / (d + 2)`` for ``d`` distinct words). The topic signatures are MinHash over
    exactly those word sets, so a second LSH pass over them at Jaccard
    :data:`~streammix.metadata.clusters.VOCABULARY_DUPLICATE_THRESHOLD` (0.8, the same
    band rule) proposes candidates, and a candidate joins its bucket's leader only if
    their 5-gram signatures also agree on at least
    :data:`~streammix.metadata.clusters.VOCABULARY_DUPLICATE_MIN_SHINGLE_SIMILARITY`
    (0.25) of their values. Both bounds admit two changed words down to about 20 words;
    the second keeps out different texts over one small vocabulary (tables, generated
    pages, word lists), which share words but hardly any 5-gram. The build's
    near-duplicate clusters are the connected components of both passes together; the
    second pass also gives long copies a second, independent chance where the first
    pass's banding missed them. With the embeddings backend there are no word signatures
    and only the 5-gram pass runs.
    """
    from streammix.metadata.clusters import (
        VOCABULARY_DUPLICATE_MIN_SHINGLE_SIMILARITY,
        VOCABULARY_DUPLICATE_THRESHOLD,
        build_bands_rows,
        lsh_components,
        merge_partitions,
    )

    if topic_features.dtype != np.uint32:  # embeddings
        dup_id = np.asarray(dup_id, dtype=np.int64)
        return dup_id, np.bincount(dup_id, minlength=dup_id.size).astype(np.int64)[dup_id]
    bands, rows = build_bands_rows(VOCABULARY_DUPLICATE_THRESHOLD, topic_features.shape[1])
    vocabulary_id, _ = lsh_components(
        topic_features,
        bands=bands,
        rows=rows,
        min_similarity=VOCABULARY_DUPLICATE_MIN_SHINGLE_SIMILARITY,
        verify_signatures=signatures,
    )
    return merge_partitions(dup_id, vocabulary_id)


TOPIC_FLOAT_COLUMNS = ("topic_distance", "topic_compactness", "topic_separation")


def topic_columns(
    topic_features: np.ndarray, dup_id: np.ndarray, dup_size: np.ndarray, config: BuildConfig
) -> dict[str, np.ndarray]:
    """Topic clusters (k-medoids over the topic signatures, or k-means over the topic
    embeddings with ``--topic-backend embeddings:DIR``) and the diversity terms."""
    from streammix.metadata.clusters import collapse_unshared_values, topic_clusters
    from streammix.metadata.diversity import diversity_from_topics, diversity_scores
    from streammix.metadata.embedding_topics import embedding_keys, kmeans_topics

    k = config.topic_clusters or None
    if config.embedding_model() is not None:
        result = kmeans_topics(topic_features, num_clusters=k, seed=config.seed)
        topics = result.topics
        scores = diversity_from_topics(
            topics,
            separation=result.separation,
            row_keys=embedding_keys(topic_features),
            dup_cluster_size=dup_size,
            dup_cluster_id=dup_id,
        )
    else:
        signatures = collapse_unshared_values(topic_features)
        topics = topic_clusters(signatures, num_clusters=k, seed=config.seed)
        scores = diversity_scores(
            signatures,
            topics=topics,
            dup_cluster_size=dup_size,
            dup_cluster_id=dup_id,
        )
    return {
        "topic_cluster_id": np.asarray(topics.cluster_id, dtype=np.int64),
        "topic_cluster_size": np.asarray(topics.cluster_size, dtype=np.int64),
        "topic_distance": np.asarray(topics.distance, dtype=np.float32),
        "topic_compactness": np.asarray(scores.compactness, dtype=np.float32),
        "topic_separation": np.asarray(scores.separation, dtype=np.float32),
        "diversity": scores.diversity,
    }


def assign_splits(
    index: BuildIndex, dup_id: np.ndarray, config: BuildConfig, names: list[str]
) -> np.ndarray:
    """``SPLIT_TRAIN``/``SPLIT_VAL``/``SPLIT_REMOVED`` per sample key (module docstring)."""
    keys = np.arange(len(index.domain), dtype=np.int64)
    split = np.full(len(keys), SPLIT_TRAIN, dtype=np.int8)
    if config.dedup:
        split[dup_id != keys] = SPLIT_REMOVED
    if config.val_fraction > 0:
        threshold = np.uint64(min(int(config.val_fraction * 2.0**64), 2**64 - 1))
        split[(split == SPLIT_TRAIN) & (index.split_hash < threshold)] = SPLIT_VAL
    elif config.val_samples > 0:
        for d, name in enumerate(names):
            candidates = np.flatnonzero((index.domain == d) & (split == SPLIT_TRAIN))
            if config.val_samples >= len(candidates):
                raise BuildError(
                    f"--val-samples {config.val_samples} leaves no training samples in domain"
                    f" {name!r} ({len(candidates)} samples)"
                )
            order = np.lexsort((candidates, index.split_hash[candidates]))
            split[candidates[order[: config.val_samples]]] = SPLIT_VAL
    return split


def _write_removed_list(
    path: Path,
    removed: np.ndarray,
    dup_id: np.ndarray,
    index: BuildIndex,
    plan: Plan,
    work: Path,
    names: list[str],
) -> None:
    needed = np.union1d(removed, dup_id[removed])
    located = _locate(needed, index, plan, work)
    atomic_write_bytes(path, removed_list_bytes(removed, dup_id, index.domain, names, located))


def removed_list_bytes(
    removed: np.ndarray,
    dup_id: np.ndarray,
    domain: np.ndarray,
    names: list[str],
    located: dict[int, dict],
) -> bytes:
    """``dedup_removed.jsonl``: each removed sample with the sample it duplicates.

    ``located`` maps the sample keys of both to their ``source`` and ``id``.
    """
    lines = []
    for key in removed.tolist():
        kept = int(dup_id[key])
        lines.append(
            json.dumps(
                {
                    "domain": names[domain[key]],
                    "sample_key": key,
                    **located[key],
                    "duplicate_of": {
                        "domain": names[domain[kept]],
                        "sample_key": kept,
                        **located[kept],
                    },
                },
                ensure_ascii=False,
            )
        )
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _locate(keys: np.ndarray, index: BuildIndex, plan: Plan, work: Path) -> dict[int, dict]:
    """``source`` and ``id`` of the given sample keys, read from their units."""
    found: dict[int, dict] = {}
    unit_of = np.searchsorted(index.unit_offsets, keys, side="right") - 1
    for u in np.unique(unit_of).tolist():
        table = pq.read_table(
            unit_path(work / "units", plan.units[u].index), columns=["source", "id"]
        )
        sources, ids = table["source"].to_pylist(), table["id"].to_pylist()
        for key in keys[unit_of == u].tolist():
            row = key - int(index.unit_offsets[u])
            found[key] = {"source": sources[row], "id": ids[row]}
    return found

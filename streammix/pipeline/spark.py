"""The Spark engine: the same build as ``streammix.pipeline.local``, run on a ``SparkSession``.

``run_spark_build(config, spark)`` follows the same plan of stages and the same pure
functions, so its output holds the same samples with the same metadata as the local engine
for the same input and options (only the shard boundaries differ):

1. *plan* (driver): the inputs are listed and cut into work units exactly as locally
   (``streammix.pipeline.plan``), so the sample keys (positions in plan order) agree.
2. *prepare* (``mapInArrow``): one Spark task per slice of units runs
   ``UnitPreparer.prepare``, the local engine's reader, tokenizer, quality scorer, MinHash
   and split hash, on one thread per Python worker (numba and the tokenizer capped, so
   ``local[n]`` uses ``n`` cores). Documents and rejected records come out as rows of one
   table (a reject has ``reject`` set), saved as parquet in the work folder. A bad record
   is counted in ``rejects.jsonl``; ``--strict`` and a systematic problem stop the job with
   the local engine's message.
3. *cluster*: sample keys from per-unit counts; near-duplicate clusters as Spark jobs: every
   document emits its LSH band keys (``streammix.metadata.clusters.band_keys``, the local
   engine's keys), each ``(band, key)`` bucket links its members to its smallest key, and
   the connected components of those links come from alternating large-star and
   small-star rounds (Kiveris et al., "Connected components in MapReduce and beyond",
   2014) until the edge set stops changing; every component is then a star around its
   smallest key, which is the local engine's cluster id. The second near-duplicate pass
   (over the unigram topic signatures, confirmed on the 5-gram ones), topic clusters,
   diversity, normalized quality and the validation split run on the driver over the
   collected columns (signatures, topic signatures, quality, split hash), with the local
   engine's functions.
4. *write*: documents joined with their cluster rows are range-partitioned by
   ``(stream, sample key)``; each task writes its partition's MDS shards and sidecar rows
   into its own part folder; the driver merges the parts of each Stream in partition
   order (``streammix.format.mds.merge_streams``), writes the sidecar in that MDS order and
   moves the Stream into place.
5. *manifest*: ``rejects.jsonl``, ``dedup_removed.jsonl``, then ``streammix.yaml`` last;
   a failed job raises before it, so a failed build has no manifest. A rerun with the
   same configuration reuses the finished prepare output and redoes the rest.

The output folder must be on a file system that the driver and the executors share (a
local path, or NFS on a cluster). Inputs are read by the executors with the local readers,
also from ``s3://``/``s3a://`` objects: every executor reads its units' objects through
boto3 (``streammix.format.object_store``; the endpoint travels in the pickled settings,
credentials come from boto3's standard chain on each executor), so no Hadoop S3 connector
is needed. An ``s3://`` output is built in a staging folder and uploaded with the manifest
last (``streammix.pipeline.object_output``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streammix.format.manifest import read_manifest
from streammix.format.mds import merge_streams
from streammix.format.object_store import is_object_url
from streammix.format.sidecar import write_sidecar, write_token_counts
from streammix.pipeline.cluster import (
    CLUSTER_NAME,
    DEDUP_LIST_NAME,
    SPLIT_REMOVED,
    SPLIT_TRAIN,
    SPLIT_VAL,
    BuildIndex,
    assign_splits,
    check_domains_not_empty,
    cluster_columns,
    removed_list_bytes,
)
from streammix.pipeline.config import VAL_SUFFIX, BuildConfig, BuildError
from streammix.pipeline.object_output import build_to_object_storage
from streammix.pipeline.plan import Plan, list_inputs, run_plan
from streammix.pipeline.prepare import PrepareSettings, UnitStats, settings_from_config
from streammix.pipeline.reference_lm import (
    MODEL_PREFIX,
    is_reference_spec,
    prepare_reference_model,
)
from streammix.pipeline.summary import BuildSummary
from streammix.pipeline.workdir import atomic_write_bytes, open_output
from streammix.pipeline.write import (
    SIDECAR_FROM_CLUSTER,
    StreamResult,
    describe_stream,
    sidecar_build_metadata,
    sidecar_columns,
    sidecar_rows,
)

REJECTS_NAME = "rejects.jsonl"
DOCS_DIR = "spark-docs"
PARTS_DIR = "spark-parts"
_BUILD_ERROR = re.compile(r"BuildError: (.*)")


@dataclass(frozen=True, kw_only=True)
class SparkOptions:
    """How the Spark engine cuts its work (none of it changes the output)."""

    write_partitions: int = 0  # range partitions of the write stage; 0 = the session's default
    max_component_rounds: int = 64  # large-star/small-star rounds before giving up


def run_spark_build(
    config: BuildConfig, spark: Any, options: SparkOptions | None = None
) -> BuildSummary:
    """Build (or finish building) ``config.out`` on ``spark``; returns what was built."""
    from streammix.pipeline.local import _check_tokenizer_and_scorer, finish_build

    options = options or SparkOptions()
    if is_object_url(config.out):
        return build_to_object_storage(config, lambda local: run_spark_build(local, spark, options))
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    if config.embedding_model() is not None:
        raise BuildError(
            "--engine spark supports --topic-backend minhash only;"
            " use the local engine for embedding topics"
        )
    tokenizer_info, tokenizer_json = _check_tokenizer_and_scorer(config)
    listing = list_inputs(config)
    state = open_output(config.out, config.fingerprint(), overwrite=config.overwrite)
    if state.finished:
        return BuildSummary.from_manifest(read_manifest(state.out), elapsed=0.0, resumed=True)
    clock = time.perf_counter()
    plan = run_plan(config, state.work, listing)
    settings = settings_from_config(config, state.work, tokenizer_json)
    if is_reference_spec(config.scorer):  # trained on the driver, broadcast in _run_prepare
        settings = dataclasses.replace(settings, scorer=prepare_reference_model(config, state.work))
    seconds["plan"] = time.perf_counter() - clock

    clock = time.perf_counter()
    docs = _run_prepare(spark, config, plan, settings, state.work)
    seconds["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    stats, offsets = _unit_stats(docs, plan)
    rejects = _rejects(docs)
    atomic_write_bytes(state.out / REJECTS_NAME, "".join(r + "\n" for r in rejects).encode())
    keyed = _with_sample_keys(spark, docs, plan, offsets, config)
    cluster = _run_cluster(spark, config, plan, keyed, offsets, rejects, state, options)
    seconds["cluster"] = time.perf_counter() - clock

    clock = time.perf_counter()
    streams = _run_write(
        spark, config, keyed, cluster, state, tokenizer_info["dtype"], settings.scorer, options
    )
    seconds["write"] = time.perf_counter() - clock

    removed = {spec.name: 0 for spec in config.domains}
    split = cluster["split"].to_numpy()
    domain = cluster["domain"].to_numpy()
    for d, spec in enumerate(config.domains):
        removed[spec.name] = int(np.count_nonzero((split == SPLIT_REMOVED) & (domain == d)))
    return finish_build(config, tokenizer_info, streams, stats, removed, plan, state,
                        started=started, stage_seconds=seconds)


def _build_error_from(exc: BaseException) -> BuildError | None:
    """The ``BuildError`` a Spark task raised, recovered from the job's exception text."""
    match = _BUILD_ERROR.search(str(exc))
    return BuildError(match.group(1).strip()) if match else None


def _spark_job(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as exc:
        error = _build_error_from(exc)
        if error is not None:
            raise error from None
        raise


# --- prepare ---------------------------------------------------------------------------


def _signal_names(scorer: str) -> list[str]:
    """The scorer's signal columns (fixed per scorer), from scoring one probe document."""
    from streammix.metadata.quality import make_scorer

    text = "A probe sentence for the names of the quality signals."
    return sorted(make_scorer(scorer).score([text], [{"text": text}]).signals)


def _docs_schema(signals: list[str]) -> Any:
    from pyspark.sql import types as T

    fields = [
        T.StructField("unit", T.IntegerType(), False),
        T.StructField("row", T.IntegerType(), False),
        T.StructField("reject", T.StringType(), True),
        T.StructField("text", T.StringType(), True),
        T.StructField("source", T.StringType(), True),
        T.StructField("id", T.StringType(), True),
        T.StructField("meta", T.StringType(), True),
        T.StructField("num_bytes", T.LongType(), True),
        T.StructField("split_hash", T.LongType(), True),
        T.StructField("quality", T.FloatType(), True),
        T.StructField("signature", T.BinaryType(), True),
        T.StructField("topic_signature", T.BinaryType(), True),
        T.StructField("tokens", T.BinaryType(), True),
    ]
    fields += [T.StructField(_signal_column(name), T.FloatType(), True) for name in signals]
    return T.StructType(fields)


def _signal_column(name: str) -> str:
    return "signal_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _matrix_bytes(column: pa.ChunkedArray | pa.Array, width: int) -> pa.Array:
    """A FixedSizeList<uint32>[width] column as one binary value per row (little endian)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    rows = len(column)
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype="<u4")
    blob = flat.reshape(rows, width).tobytes()
    offsets = np.arange(rows + 1, dtype=np.int32) * (4 * width)
    return pa.BinaryArray.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(blob)]
    )


def _list_bytes(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A List<uint32> column (tokens) as one binary value per row (little endian)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = np.asarray(column.values.to_numpy(zero_copy_only=False), dtype="<u4")
    values = values[offsets[0] : offsets[-1]]
    byte_offsets = ((offsets - offsets[0]) * 4).astype(np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(),
        len(column),
        [None, pa.py_buffer(byte_offsets.tobytes()), pa.py_buffer(values.tobytes())],
    )


def _bytes_matrix(column: Any, width: int) -> np.ndarray:
    """The inverse of ``_matrix_bytes``: ``(rows, width)`` uint32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    rows = len(column)
    if rows == 0:
        return np.zeros((0, width), dtype=np.uint32)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=rows + 1, offset=column.offset * 4)
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view("<u4").reshape(rows, width).astype(np.uint32)


def _bytes_lists(column: Any) -> pa.Array:
    """The inverse of ``_list_bytes``: a List<uint32> column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    rows = len(column)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=rows + 1, offset=column.offset * 4)
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    values = data.view("<u4").astype(np.uint32)
    list_offsets = ((offsets - offsets[0]) // 4).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values))


_PREPARERS: dict[PrepareSettings, Any] = {}


def _preparer(settings: PrepareSettings) -> Any:
    """This Python worker's ``UnitPreparer`` (built once; its thread pools capped at one)."""
    if settings not in _PREPARERS:
        from streammix.pipeline.prepare import UnitPreparer, cap_worker_threads

        cap_worker_threads()
        _PREPARERS.clear()
        _PREPARERS[settings] = UnitPreparer(settings)
    return _PREPARERS[settings]


def _executor_settings(settings: PrepareSettings, reference: tuple[str, Any] | None) -> Any:
    """``settings`` whose n-gram model spec names this machine's copy of the broadcast model.

    The driver trained the model (``reference_lm``) and broadcast its bytes; each executor
    writes them once to its temporary folder, named by their digest, and scores with the
    same ``ngram-model:`` scorer as the local engine's workers.
    """
    if reference is None:
        return settings
    digest, model = reference
    path = Path(tempfile.gettempdir()) / f"streammix-reference-{digest}.npz"
    if not path.exists():
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(model.value)
        os.replace(partial, path)
    return dataclasses.replace(settings, scorer=MODEL_PREFIX + str(path))


def _broadcast_reference(spark: Any, settings: PrepareSettings) -> tuple[str, Any] | None:
    """``(digest, broadcast bytes)`` of the trained n-gram model, if the scorer uses one."""
    if not settings.scorer.startswith(MODEL_PREFIX):
        return None
    data = Path(settings.scorer[len(MODEL_PREFIX) :]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:24]
    return digest, spark.sparkContext.broadcast(data)


def _prepare_units(
    units: tuple,
    settings: PrepareSettings,
    signals: list[str],
    schema_names: list[str],
    reference: tuple[str, Any] | None = None,
) -> Any:
    """The ``mapInArrow`` function of the prepare stage (batches of unit numbers in)."""
    from streammix.pipeline.prepare import reject_line

    def prepare(batches: Any) -> Any:
        preparer = _preparer(_executor_settings(settings, reference))
        for batch in batches:
            for index in batch.column(0).to_pylist():
                unit = units[index]
                table, problems = preparer.prepare(unit)
                yield _docs_batch(unit.index, table, settings, signals, schema_names)
                lines = [reject_line(unit, problem) for problem in problems]
                if lines:
                    yield _rejects_batch(unit.index, lines, schema_names)

    return prepare


def _docs_batch(
    unit: int, table: pa.Table, settings: PrepareSettings, signals: list[str], names: list[str]
) -> pa.RecordBatch:
    rows = table.num_rows
    columns: dict[str, pa.Array] = {
        "unit": pa.array(np.full(rows, unit, dtype=np.int32)),
        "row": pa.array(np.arange(rows, dtype=np.int32)),
        "reject": pa.nulls(rows, pa.string()),
        "text": table["text"].combine_chunks().cast(pa.string()),
        "source": table["source"].combine_chunks(),
        "id": table["id"].combine_chunks(),
        "meta": table["meta"].combine_chunks(),
        "num_bytes": table["num_bytes"].combine_chunks(),
        "split_hash": pa.array(
            table["split_hash"].to_numpy().view(np.int64) if rows else np.zeros(0, np.int64)
        ),
        "quality": table["quality"].combine_chunks(),
        "signature": _matrix_bytes(table["signature"], settings.num_perm),
        "topic_signature": _matrix_bytes(table["topic_signature"], settings.topic_num_perm),
        "tokens": _list_bytes(table["tokens"])
        if "tokens" in table.column_names
        else pa.nulls(rows, pa.binary()),
    }
    for name in signals:
        column = f"signal:{name}"
        columns[_signal_column(name)] = (
            table[column].combine_chunks().cast(pa.float32())
            if column in table.column_names
            else pa.nulls(rows, pa.float32())
        )
    return pa.RecordBatch.from_pydict({name: columns[name] for name in names})


def _rejects_batch(unit: int, lines: list[str], names: list[str]) -> pa.RecordBatch:
    rows = len(lines)
    columns = {
        "unit": pa.array(np.full(rows, unit, dtype=np.int32)),
        "row": pa.array(np.arange(rows, dtype=np.int32)),
        "reject": pa.array(lines, pa.string()),
    }
    empty = {"num_bytes": pa.int64(), "split_hash": pa.int64(), "quality": pa.float32()}
    out = {}
    for name in names:
        if name in columns:
            out[name] = columns[name]
        elif name in empty:
            out[name] = pa.nulls(rows, empty[name])
        elif name in ("signature", "topic_signature", "tokens"):
            out[name] = pa.nulls(rows, pa.binary())
        elif name.startswith("signal_"):
            out[name] = pa.nulls(rows, pa.float32())
        else:
            out[name] = pa.nulls(rows, pa.string())
    return pa.RecordBatch.from_pydict(out)


def _run_prepare(
    spark: Any, config: BuildConfig, plan: Plan, settings: PrepareSettings, work: Path
) -> Any:
    """Prepare every unit (or reuse a finished prepare output); the documents DataFrame."""
    target = work / DOCS_DIR
    if not (target / "_SUCCESS").exists():
        signals = _signal_names(settings.scorer)
        schema = _docs_schema(signals)
        units = plan.units
        slices = max(1, len(units))
        indices = spark.sparkContext.parallelize([(i,) for i in range(len(units))], slices)
        frame = spark.createDataFrame(indices, "unit int")
        prepared = frame.mapInArrow(
            _prepare_units(
                units, settings, signals, schema.names, _broadcast_reference(spark, settings)
            ),
            schema,
        )
        _spark_job(prepared.write.mode("overwrite").parquet, str(target))
    return spark.read.parquet(str(target))


# --- cluster ---------------------------------------------------------------------------


def _unit_stats(docs: Any, plan: Plan) -> tuple[list[UnitStats], np.ndarray]:
    """Per-unit counts (for the manifest) and the first sample key of each unit."""
    from pyspark.sql import functions as F

    rows = (
        docs.groupBy("unit")
        .agg(
            F.sum(F.when(F.col("reject").isNull(), 1).otherwise(0)).alias("docs"),
            F.sum(F.when(F.col("reject").isNull(), 0).otherwise(1)).alias("rejects"),
            F.sum(F.coalesce(F.col("num_bytes"), F.lit(0))).alias("text_bytes"),
        )
        .collect()
    )
    found = {int(row["unit"]): row for row in rows}
    stats, counts = [], []
    for unit in plan.units:
        row = found.get(unit.index)
        num_docs = int(row["docs"]) if row else 0
        counts.append(num_docs)
        stats.append(
            UnitStats(
                index=unit.index,
                num_docs=num_docs,
                num_rejects=int(row["rejects"]) if row else 0,
                input_bytes=unit.num_bytes,
                text_bytes=int(row["text_bytes"]) if row else 0,
            )
        )
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return stats, offsets


def _rejects(docs: Any) -> list[str]:
    """Every ``rejects.jsonl`` line, in unit order and read order within a unit."""
    rows = docs.where("reject IS NOT NULL").select("unit", "row", "reject").collect()
    rows.sort(key=lambda row: (row["unit"], row["row"]))
    return [row["reject"] for row in rows]


def _with_sample_keys(
    spark: Any, docs: Any, plan: Plan, offsets: np.ndarray, config: BuildConfig
) -> Any:
    """The documents with ``sample_key`` (position in plan order) and ``domain`` (its id)."""
    from pyspark.sql import functions as F

    domain_of = {spec.name: i for i, spec in enumerate(config.domains)}
    table = spark.createDataFrame(
        [(u.index, int(offsets[u.index]), domain_of[u.domain]) for u in plan.units],
        "unit int, first_key long, domain int",
    )
    return (
        docs.where("reject IS NULL")
        .join(F.broadcast(table), on="unit")
        .withColumn("sample_key", F.col("first_key") + F.col("row"))
        .drop("first_key", "reject")
    )


def _band_rows(num_perm: int, bands: int, rows: int) -> Any:
    """The ``mapInArrow`` function emitting ``(band, key, sample_key)`` of non-empty documents."""

    def emit(batches: Any) -> Any:
        from streammix.metadata.clusters import band_keys, nonempty_rows

        for batch in batches:
            signatures = _bytes_matrix(batch.column(1), num_perm)
            keep = nonempty_rows(signatures)
            keys = band_keys(signatures[keep], bands=bands, rows=rows)
            sample_keys = batch.column(0).to_numpy()[keep]
            yield pa.RecordBatch.from_pydict(
                {
                    "band": pa.array(np.tile(np.arange(bands, dtype=np.int32), len(sample_keys))),
                    "key": pa.array(keys.reshape(-1).view(np.int64)),
                    "sample_key": pa.array(np.repeat(sample_keys, bands).astype(np.int64)),
                }
            )

    return emit


def lsh_edges(keyed: Any, *, num_perm: int, threshold: float) -> Any:
    """``(u, v)`` links, ``u > v``: every bucket member to the bucket's smallest sample key."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from streammix.metadata.clusters import build_bands_rows

    bands, rows = build_bands_rows(threshold, num_perm)
    keys = keyed.select("sample_key", "signature").mapInArrow(
        _band_rows(num_perm, bands, rows), "band int, key long, sample_key long"
    )
    bucket = Window.partitionBy("band", "key")
    return (
        keys.withColumn("leader", F.min("sample_key").over(bucket))
        .where(F.col("sample_key") != F.col("leader"))
        .select(F.col("sample_key").alias("u"), F.col("leader").alias("v"))
        .distinct()
    )


def connected_components(edges: Any, *, max_rounds: int = 64) -> Any:
    """``(node, component)`` for every node of ``edges`` (``u > v``); component = its min node.

    Alternates large-star and small-star until the edge set is unchanged, at which point
    every edge is ``(node, component minimum)`` (Kiveris et al. 2014). Each star takes the
    smallest neighbour of a node with a window over the node (one shuffle, no group-by
    joined back), and only small-star's output is made distinct. The edge set of a round is
    fingerprinted (count and summed hashes) by an observation of the job that checkpoints
    it, so a round costs one job and no second pass to compare it with the last.
    """
    from pyspark.sql import Observation, Window
    from pyspark.sql import functions as F

    def normalized(frame: Any) -> Any:
        return frame.where(F.col("a") != F.col("b")).select(
            F.greatest("a", "b").alias("u"), F.least("a", "b").alias("v")
        )

    def large_star(e: Any) -> Any:
        both = e.select(F.col("u").alias("n"), F.col("v").alias("m")).union(
            e.select(F.col("v").alias("n"), F.col("u").alias("m"))
        )
        low = F.least(F.min("m").over(Window.partitionBy("n")), F.col("n"))
        linked = both.withColumn("low", low).where(F.col("m") > F.col("n"))
        return normalized(linked.select(F.col("m").alias("a"), F.col("low").alias("b")))

    def small_star(e: Any) -> Any:
        linked = e.withColumn("low", F.min("v").over(Window.partitionBy("u")))
        members = linked.select(F.col("v").alias("a"), F.col("low").alias("b")).union(
            linked.select(F.col("u").alias("a"), F.col("low").alias("b"))
        )
        return normalized(members).distinct()

    def checkpointed(e: Any) -> tuple[Any, tuple[int, int]]:
        observation = Observation()
        observed = e.observe(
            observation,
            F.count(F.lit(1)).alias("n"),
            F.sum(F.xxhash64("u", "v").cast("decimal(38,0)")).alias("h"),
        )
        saved = observed.localCheckpoint()
        metrics = observation.get
        return saved, (int(metrics["n"]), int(metrics["h"] or 0))

    current, seen = checkpointed(edges)
    for _ in range(max_rounds):
        current, now = checkpointed(small_star(large_star(current)))
        if now == seen:
            break
        seen = now
    else:
        raise BuildError(f"connected components did not converge in {max_rounds} rounds")
    return current.select(F.col("u").alias("node"), F.col("v").alias("component"))


def _collect_arrow(frame: Any) -> pa.Table:
    """A small DataFrame as an Arrow table (through pandas with Arrow enabled)."""
    pdf = frame.toPandas()
    return pa.Table.from_pandas(pdf, preserve_index=False)


def _run_cluster(
    spark: Any,
    config: BuildConfig,
    plan: Plan,
    keyed: Any,
    offsets: np.ndarray,
    rejects: list[str],
    state: Any,
    options: SparkOptions,
) -> pa.Table:
    """The cluster stage's table (one row per sample key), also saved in the work folder."""
    saved = state.work / CLUSTER_NAME
    if saved.exists():
        return pq.read_table(saved)
    names = [spec.name for spec in config.domains]
    small = _collect_arrow(  # sorted here, not by a Spark sort (a sampling job and a shuffle)
        keyed.select("sample_key", "domain", "quality", "split_hash", "signature", "topic_signature")
    )
    small = small.take(pa.array(np.argsort(small["sample_key"].to_numpy(), kind="stable")))
    n = small.num_rows
    if not np.array_equal(small["sample_key"].to_numpy(), np.arange(n)):
        raise RuntimeError("sample keys are not contiguous; the prepare output is incomplete")
    components = _spark_job(
        lambda: _collect_arrow(
            connected_components(
                lsh_edges(keyed, num_perm=config.minhash_num_perm, threshold=config.dedup_threshold),
                max_rounds=options.max_component_rounds,
            )
        )
    )
    dup_id = np.arange(n, dtype=np.int64)
    if components.num_rows:
        dup_id[components["node"].to_numpy()] = components["component"].to_numpy()
    dup_size = np.bincount(dup_id, minlength=n).astype(np.int64)[dup_id]
    topic_column = small["topic_signature"].cast(pa.binary()).fill_null(b"")
    signature_column = small["signature"].cast(pa.binary()).fill_null(b"")
    index = BuildIndex(  # the 5-gram signatures confirm the vocabulary pass's candidates
        domain=small["domain"].to_numpy().astype(np.int32),
        unit_offsets=offsets,
        signatures=_bytes_matrix(signature_column, config.minhash_num_perm),
        topic_features=_bytes_matrix(topic_column, config.topic_num_perm),
        quality=small["quality"].to_numpy().astype(np.float32),
        split_hash=small["split_hash"].to_numpy().astype(np.int64).view(np.uint64),
    )
    columns = cluster_columns(index, config, duplicates=(dup_id, dup_size))
    split = assign_splits(index, columns["dup_cluster_id"], config, names)
    columns["split"] = split
    by_domain: dict[str, list[dict]] = {name: [] for name in names}
    for line in rejects:
        reject = json.loads(line)
        by_domain[reject["domain"]].append(reject)
    check_domains_not_empty(index, split, names, lambda name: by_domain[name])
    if config.dedup:
        _write_removed_list(spark, keyed, state.out, split, columns["dup_cluster_id"], index, names)
    table = pa.table(
        {"sample_key": pa.array(np.arange(n, dtype=np.int64)), "domain": pa.array(index.domain)}
        | {name: pa.array(values) for name, values in columns.items()}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(saved, sink.getvalue().to_pybytes())
    return table


def _write_removed_list(
    spark: Any,
    keyed: Any,
    out: Path,
    split: np.ndarray,
    dup_id: np.ndarray,
    index: BuildIndex,
    names: list[str],
) -> None:
    """``dedup_removed.jsonl``: the local engine's lines, with source and id read by Spark."""
    from pyspark.sql import functions as F

    removed = np.flatnonzero(split == SPLIT_REMOVED)
    needed = np.union1d(removed, dup_id[removed])
    located: dict[int, dict] = {}
    if len(needed):
        wanted = spark.createDataFrame([(int(k),) for k in needed], "sample_key long")
        for row in (
            keyed.join(F.broadcast(wanted), on="sample_key")
            .select("sample_key", "source", "id")
            .collect()
        ):
            located[int(row["sample_key"])] = {"source": row["source"], "id": row["id"]}
    data = removed_list_bytes(removed, dup_id, index.domain, names, located)
    atomic_write_bytes(out / DEDUP_LIST_NAME, data)


# --- write -----------------------------------------------------------------------------


def _stream_names(config: BuildConfig) -> list[str]:
    """Stream folder of stream number ``2 * domain + (1 if validation else 0)``."""
    return [spec.name + suffix for spec in config.domains for suffix in ("", VAL_SUFFIX)]


def _write_parts(
    config: BuildConfig,
    parts_dir: str,
    token_dtype: str | None,
    signals: list[str],
) -> Any:
    """The ``mapInArrow`` function of the write stage: one part folder per (partition, Stream)."""
    stream_names = _stream_names(config)

    def write(batches: Any) -> Any:
        from pyspark import TaskContext

        from streammix.format.mds import StreamWriter

        partition = TaskContext.get().partitionId()
        tables = [pa.Table.from_batches([batch]) for batch in batches if batch.num_rows]
        if not tables:
            return
        table = pa.concat_tables(tables)
        streams = table["stream"].to_numpy()
        for stream in np.unique(streams).tolist():
            rows = table.filter(pa.array(streams == stream))
            folder = Path(parts_dir) / f"s{stream:05d}" / f"p{partition:06d}"
            if folder.exists():  # a retried task
                shutil.rmtree(folder)
            prepared = _prepared_rows(rows, config, signals)
            keys = rows["sample_key"].to_numpy()
            with StreamWriter(
                folder,
                token_dtype=token_dtype,
                with_id=config.id_field is not None,
                compression=config.compression,
                size_limit=config.size_limit,
            ) as writer:
                writer.write_table(prepared, stream // 2)
            picked = rows.select(list(SIDECAR_FROM_CLUSTER))
            sidecar = sidecar_rows(prepared, keys, picked)
            pq.write_table(sidecar, folder / "sidecar.parquet")
            yield pa.RecordBatch.from_pydict(
                {
                    "stream": pa.array([stream], pa.int32()),
                    "part": pa.array([partition], pa.int32()),
                    "name": pa.array([stream_names[stream]]),
                    "samples": pa.array([rows.num_rows], pa.int64()),
                }
            )

    return write


def _prepared_rows(rows: pa.Table, config: BuildConfig, signals: list[str]) -> pa.Table:
    """Spark rows back in the local engine's prepared-unit column types."""
    columns: dict[str, Any] = {
        "text": rows["text"],
        "source": rows["source"],
        "id": rows["id"],
        "meta": rows["meta"],
        "num_bytes": rows["num_bytes"],
        "quality": rows["quality"].cast(pa.float32()),
        "signature": pa.FixedSizeListArray.from_arrays(
            pa.array(_bytes_matrix(rows["signature"], config.minhash_num_perm).reshape(-1)),
            config.minhash_num_perm,
        ),
    }
    if config.tokenizer is not None:
        columns["tokens"] = _bytes_lists(rows["tokens"])
    for name in signals:
        columns[f"signal:{name}"] = rows[_signal_column(name)].cast(pa.float32())
    return pa.table(columns)


def _run_write(
    spark: Any,
    config: BuildConfig,
    keyed: Any,
    cluster: pa.Table,
    state: Any,
    token_dtype: str | None,
    scorer: str,
    options: SparkOptions,
) -> list[StreamResult]:
    from pyspark.sql import functions as F

    parts_dir = state.work / PARTS_DIR
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    signals = _signal_names(scorer)
    cluster_frame = spark.createDataFrame(
        cluster.select(["sample_key", "split", *SIDECAR_FROM_CLUSTER]).to_pandas()
    )
    partitions = options.write_partitions or spark.sparkContext.defaultParallelism
    written_columns = [  # what _write_parts reads: the shuffle carries nothing else
        "stream", "sample_key", "text", "source", "id", "meta", "num_bytes", "quality",
        "signature", "tokens", *(_signal_column(name) for name in signals),
        *SIDECAR_FROM_CLUSTER,
    ]
    rows = (
        keyed.join(cluster_frame, on="sample_key")
        .where(F.col("split") != SPLIT_REMOVED)
        .withColumn(
            "stream",
            (F.col("domain") * 2 + F.when(F.col("split") == SPLIT_VAL, 1).otherwise(0)).cast(
                "int"
            ),
        )
        .select(*written_columns)
        .repartitionByRange(partitions, "stream", "sample_key")
        .sortWithinPartitions("stream", "sample_key")
    )
    written = rows.mapInArrow(
        _write_parts(config, str(parts_dir), token_dtype, signals),
        "stream int, part int, name string, samples long",
    )
    _spark_job(written.collect)
    metadata = sidecar_build_metadata(config)
    results = []
    names = _stream_names(config)
    for stream, dirname in enumerate(names):
        domain_id, is_val = divmod(stream, 2)
        split_value = SPLIT_VAL if is_val else SPLIT_TRAIN
        if is_val and not np.any(
            (cluster["split"].to_numpy() == split_value)
            & (cluster["domain"].to_numpy() == domain_id)
        ):
            continue
        parts = sorted((parts_dir / f"s{stream:05d}").glob("p*"))
        tmp = state.work / "write" / dirname
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        merge_streams(parts, tmp)
        columns = sidecar_columns([pq.read_table(part / "sidecar.parquet") for part in parts])
        write_sidecar(
            tmp,
            columns,
            metadata | {"streammix.domain": {"name": config.domains[domain_id].name, "id": domain_id}},
        )
        if "num_tokens" in columns:
            write_token_counts(tmp, np.asarray(columns["num_tokens"]))
        final = state.out / dirname
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        results.append(
            describe_stream(
                final, config.domains[domain_id].name, "val" if is_val else "train", dirname
            )
        )
    return results

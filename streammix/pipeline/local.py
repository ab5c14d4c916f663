"""``run_build``: the five stages of ``streammix-build`` in order, resumable at any point.

1. *plan* (``streammix.pipeline.plan``): input files -> fixed work units;
2. *prepare* (``streammix.pipeline.prepare``): units -> parquet files, in a ``spawn`` pool of
   ``workers`` processes (``workers=0`` runs them in the calling process);
3. *cluster* (``streammix.pipeline.cluster``): duplicate and topic clusters, diversity,
   normalized quality, dedup and validation split over all domains together; it runs in
   one of the prepare pool's processes, whose numba kernels are already loaded;
4. *write* (``streammix.pipeline.write``): MDS Streams and sidecars, folder by folder;
5. *manifest*: ``rejects.jsonl``, then ``streammix.yaml`` last, then the work folder is
   deleted.

Nothing here imports torch: the MDS writer is streammix's own
(``streammix.format.mds``, byte-identical to ``streaming.MDSWriter``), and the tokenizer is
checked without importing transformers where that gives the same backend
(``streammix.pipeline.tokenizer``).

Every stage skips work whose output already exists under its final name, so running the
same build again after it was killed finishes it, and the output has the same bytes as an
uninterrupted run (nothing in it depends on time, process ids or the number of workers).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streammix.format.manifest import read_manifest, write_manifest
from streammix.format.object_store import is_object_url
from streammix.format.readers import InputError
from streammix.pipeline.cluster import SPLIT_REMOVED
from streammix.pipeline.config import BuildConfig, BuildError
from streammix.pipeline.object_output import build_to_object_storage
from streammix.pipeline.plan import Plan, list_inputs, run_plan
from streammix.pipeline.prepare import (
    PrepareSettings,
    UnitPreparer,
    UnitStats,
    cluster_in_worker,
    init_worker,
    prepare_in_worker,
    rejects_path,
    settings_from_config,
    stats_from_file,
    token_dtype_for,
    unit_path,
)
from streammix.pipeline.reference_lm import (
    check_reference,
    is_reference_spec,
    prepare_reference_model,
)
from streammix.pipeline.summary import BuildSummary, manifest_data
from streammix.pipeline.tokenizer import load_tokenizer_backend
from streammix.pipeline.workdir import OutputState, atomic_write_bytes, open_output
from streammix.pipeline.write import (
    StreamResult,
    WriteContext,
    run_write,
    sidecar_build_metadata,
)

REJECTS_NAME = "rejects.jsonl"


@dataclass(kw_only=True)
class _Progress:
    """A tqdm bar over input bytes with docs/s beside the byte rate (stderr)."""

    enabled: bool
    total: int
    started: float = field(default_factory=time.perf_counter)
    docs: int = 0
    bar: Any = None

    def __post_init__(self) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                unit="B",
                unit_scale=True,
                desc="prepare",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, stats: UnitStats) -> None:
        self.docs += stats.num_docs
        if self.bar is not None:
            self.bar.update(stats.input_bytes)
            rate = self.docs / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.docs} docs, {rate:,.0f} docs/s", refresh=False)

    def close(self, *, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.leave = not failed  # an error line should stand alone on the terminal
            self.bar.close()


def run_build(config: BuildConfig) -> BuildSummary:
    """Build (or finish building) ``config.out``; returns what was built."""
    if is_object_url(config.out):
        return build_to_object_storage(config, run_build)
    started = time.perf_counter()
    clock = _StageClock()
    tokenizer_info, tokenizer_json = _check_tokenizer_and_scorer(config)
    listing = list_inputs(config)
    state = open_output(config.out, config.fingerprint(), overwrite=config.overwrite)
    if state.finished:
        return BuildSummary.from_manifest(read_manifest(state.out), elapsed=0.0, resumed=True)
    plan = clock.run("plan", run_plan, config, state.work, listing)
    settings = settings_from_config(config, state.work, tokenizer_json)
    if is_reference_spec(config.scorer):
        spec = clock.run("reference", prepare_reference_model, config, state.work)
        settings = dataclasses.replace(settings, scorer=spec)
    with _Workers(workers=config.workers, settings=settings) as workers:
        stats = clock.run("prepare", _run_prepare, config, plan, workers)
        _write_rejects(plan, state)
        clock.run("cluster", workers.call, cluster_in_worker, config, plan, state.work, state.out)
    streams = clock.run("write", _run_write, config, plan, state, tokenizer_info["dtype"])
    removed = _removed_per_domain(config, plan, state)
    return finish_build(config, tokenizer_info, streams, stats, removed, plan, state,
                        started=started, stage_seconds=clock.seconds)


def finish_build(config, tokenizer_info, streams, stats, removed, plan, state, *,
                 started: float, stage_seconds) -> BuildSummary:
    """The last step of either engine: the manifest written last, the work folder removed."""
    data = manifest_data(config, tokenizer_info, streams, stats, removed, plan)
    for leftover in state.out.glob(".*.tmp"):  # temporary files of a killed run
        leftover.unlink()
    write_manifest(state.out, data)
    shutil.rmtree(state.work, ignore_errors=True)
    return BuildSummary.from_manifest(
        read_manifest(state.out),
        elapsed=time.perf_counter() - started,
        resumed=False,
        input_bytes=plan.input_bytes,
        stage_seconds=stage_seconds,
    )


@dataclass(kw_only=True)
class _StageClock:
    """Wall-clock seconds per stage, for the summary (never written to the output)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, function: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds[name] = time.perf_counter() - started


def _check_tokenizer_and_scorer(config: BuildConfig) -> tuple[dict[str, Any], str | None]:
    """Fail early on a bad scorer or tokenizer; the tokenizer's facts and serialized backend."""
    from streammix.metadata.quality import make_scorer

    try:
        if is_reference_spec(config.scorer):
            check_reference(config)
        else:
            make_scorer(config.scorer)
    except (ValueError, TypeError, ImportError) as exc:
        raise BuildError(f"--quality {config.scorer}: {exc}") from None
    if config.tokenizer is None:
        return {"tokenizer": None, "vocab_size": None, "dtype": None}, None
    backend = load_tokenizer_backend(config.tokenizer)
    info = {
        "tokenizer": config.tokenizer,
        "vocab_size": backend.vocab_size,
        "dtype": token_dtype_for(backend.vocab_size),
    }
    return info, backend.backend_json


@dataclass(kw_only=True)
class _Workers:
    """The ``spawn`` pool of the prepare stage, started on demand and kept for the cluster stage.

    The cluster stage runs in one of the pool's processes because they have already loaded
    numba's compiled kernels (about half a second per process); ``workers=0``, or a resumed
    build with every unit already prepared, runs both stages in the calling process.
    """

    workers: int
    settings: PrepareSettings
    pool: Any = None
    processes: int = 0

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def start(self, num_units: int) -> Any:
        """The pool, with at most one process per unit (None: work in this process)."""
        if self.workers == 0 or num_units == 0:
            return None
        if self.pool is None:
            context = multiprocessing.get_context("spawn")
            self.processes = min(self.workers, num_units)
            self.pool = context.Pool(
                self.processes, initializer=init_worker, initargs=(self.settings,)
            )
        return self.pool

    def call(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in a (warm) pool process if there is a pool, else here."""
        if self.pool is None:
            return function(*args)
        return self.pool.apply(function, args)


def _run_prepare(config: BuildConfig, plan: Plan, workers: _Workers) -> list[UnitStats]:
    settings = workers.settings
    progress = _Progress(enabled=config.progress, total=plan.input_bytes)
    results: dict[int, UnitStats] = {}
    pending = []
    for unit in plan.units:
        done = unit_path(settings.units_dir, unit.index)
        if done.exists():
            results[unit.index] = stats_from_file(done, unit)
            progress.update(results[unit.index])
        else:
            pending.append(unit)
    try:
        pool = workers.start(len(pending))
        if pool is None and pending:
            preparer = UnitPreparer(settings)
            for unit in pending:
                results[unit.index] = preparer.run(unit)
                progress.update(results[unit.index])
        elif pending:
            finished = pool.imap_unordered(prepare_in_worker, pending, chunksize=1)
            for stats in finished:
                results[stats.index] = stats
                progress.update(stats)
    except InputError as exc:
        progress.close(failed=True)
        raise BuildError(str(exc)) from None
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    return [results[unit.index] for unit in plan.units]


def _write_rejects(plan: Plan, state: OutputState) -> None:
    parts = [rejects_path(state.work / "units", unit.index).read_bytes() for unit in plan.units]
    atomic_write_bytes(state.out / REJECTS_NAME, b"".join(parts))


def _run_write(
    config: BuildConfig, plan: Plan, state: OutputState, dtype: str | None
) -> list[StreamResult]:
    metadata = sidecar_build_metadata(config)
    context = WriteContext(
        config=config,
        plan=plan,
        work=state.work,
        out=state.out,
        token_dtype=dtype,
        sidecar_metadata=metadata,
    )
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(desc="write", unit=" samples", file=sys.stderr, dynamic_ncols=True)
    try:
        return run_write(context, bar.update if bar is not None else lambda n: None)
    finally:
        if bar is not None:
            bar.close()


def _removed_per_domain(config: BuildConfig, plan: Plan, state: OutputState) -> dict[str, int]:
    import json

    import numpy as np
    import pyarrow.parquet as pq

    cluster = pq.read_table(state.work / "cluster.parquet", columns=["split"])
    offsets = json.loads(cluster.schema.metadata[b"streammix.unit_offsets"])
    split = cluster["split"].to_numpy()
    removed = {spec.name: 0 for spec in config.domains}
    for unit in plan.units:
        part = split[offsets[unit.index] : offsets[unit.index + 1]]
        removed[unit.domain] += int(np.count_nonzero(part == SPLIT_REMOVED))
    return removed


def describe_output(out: str | Path) -> str:
    """A one-paragraph description of a finished build (used by ``--help`` examples)."""
    return BuildSummary.from_manifest(read_manifest(out), elapsed=0.0, resumed=True).format()

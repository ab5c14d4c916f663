"""Stage 2, *prepare*: turn each work unit into one parquet file of documents and metadata.

For every unit (in parallel over a ``spawn`` process pool; each unit is independent) the
records are read and validated, then, in batches of ``batch_size`` documents:

- tokenized with the fast tokenizer's batched encoder (no special tokens added; packing
  adds separators later) when ``--tokenizer`` is given, else the UTF-8 byte count is kept;
- scored by the quality scorer (raw score plus the scorer's signal columns);
- given a MinHash signature from the configured shingling (near-duplicates), and a
  second, smaller one over word unigrams (``topic_shingle_size``-grams, ``topic_num_perm``
  permutations) for the topic clusters of stage *cluster* (with ``--topic-backend
  embeddings:DIR``: a sentence embedding instead, ``streammix.pipeline.embeddings``);
- given a *split hash*: the first 8 bytes (little endian) of ``blake2b(seed || text)``.
  The validation split compares it with the fraction (stage *cluster*), so a document's
  split depends only on its text and the seed, never on its position or the unit cut.

The unit's documents go to ``units/uNNNNNN.parquet`` and its rejected records to
``units/uNNNNNN.rejects.jsonl``; both are renamed into place, rejects first, so an existing
parquet marks a finished unit that a resumed build skips. With ``strict`` the first
rejected record stops the build with a ``BuildError`` naming it; without it, a unit whose
records are all rejected for one reason that says the flags do not fit the file (a missing
text field, malformed JSON, ...) stops the build with that reason and the first record
(``systematic_problem``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streammix.format.readers import (
    MALFORMED_JSON,
    MISSING_ID,
    MISSING_TEXT,
    NOT_AN_OBJECT,
    SHAPE_REASONS,
    TEXT_NOT_STRING,
    RawRecord,
    ReadOptions,
    RecordProblem,
    WorkUnit,
    read_unit,
)
from streammix.pipeline.config import BuildConfig, BuildError
from streammix.pipeline.workdir import atomic_write_bytes

UNITS_DIR = "units"
NO_TOKENS = "document has no tokens under --tokenizer"


@dataclass(frozen=True, kw_only=True)
class PrepareSettings:
    """What a worker process needs (picklable; the heavy objects are built in the worker)."""

    read: ReadOptions
    tokenizer_json: str | None  # the fast tokenizer's Rust backend, serialized
    scorer: str
    num_perm: int
    minhash_seed: int
    scheme: str
    shingle: Any
    topic_shingle: Any
    topic_num_perm: int
    embedding_model: str | None
    split_seed: int
    strict: bool
    batch_size: int
    units_dir: str


@dataclass(frozen=True, kw_only=True)
class UnitStats:
    """Counts of one finished unit (for the progress bar and the summary)."""

    index: int
    num_docs: int
    num_rejects: int
    input_bytes: int
    text_bytes: int
    worker_threads: tuple[tuple[str, str], ...] = ()  # a pool worker's thread caps (tests)


def settings_from_config(
    config: BuildConfig, work: Path, tokenizer_json: str | None
) -> PrepareSettings:
    return PrepareSettings(
        read=ReadOptions(
            text_field=config.text_field,
            id_field=config.id_field,
            max_doc_bytes=config.max_doc_bytes,
            store=config.object_store(),
        ),
        tokenizer_json=tokenizer_json,
        scorer=config.scorer,
        num_perm=config.minhash_num_perm,
        minhash_seed=config.minhash_seed,
        scheme=config.minhash_scheme,
        shingle=config.shingle_config(),
        topic_shingle=config.topic_shingle_config(),
        topic_num_perm=config.topic_num_perm,
        embedding_model=config.embedding_model(),
        split_seed=config.seed,
        strict=config.strict,
        batch_size=config.batch_size,
        units_dir=str(work / UNITS_DIR),
    )


def unit_path(units_dir: str | Path, index: int) -> Path:
    return Path(units_dir) / f"u{index:06d}.parquet"


def rejects_path(units_dir: str | Path, index: int) -> Path:
    return Path(units_dir) / f"u{index:06d}.rejects.jsonl"


def token_dtype_for(vocab_size: int) -> str:
    """``uint16`` when every id fits in 16 bits, else ``uint32``."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def split_hash(text: str, seed: int) -> int:
    """A stable 64-bit hash of the document text and the build seed."""
    digest = hashlib.blake2b(seed.to_bytes(8, "little") + text.encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


class UnitPreparer:
    """Holds the tokenizer and scorer of one process and prepares units with them."""

    def __init__(self, settings: PrepareSettings) -> None:
        from streammix.metadata.quality import make_scorer

        self.settings = settings
        self.tokenizer = None
        if settings.tokenizer_json is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(settings.tokenizer_json)
        self.scorer = make_scorer(settings.scorer)
        self.embedder = None
        if settings.embedding_model is not None:
            from streammix.pipeline.embeddings import SentenceEmbedder

            try:
                self.embedder = SentenceEmbedder(settings.embedding_model)
            except ValueError as exc:
                raise BuildError(f"--topic-backend: {exc}") from None

    def run(self, unit: WorkUnit) -> UnitStats:
        target = unit_path(self.settings.units_dir, unit.index)
        if target.exists():
            return stats_from_file(target, unit)
        table, problems = self.prepare(unit)
        table = table.replace_schema_metadata(
            {"streammix.unit": json.dumps({"rejects": len(problems), "bytes": unit.num_bytes})}
        )
        lines = [reject_line(unit, problem) for problem in problems]
        atomic_write_bytes(
            rejects_path(self.settings.units_dir, unit.index),
            "".join(line + "\n" for line in lines).encode("utf-8"),
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(target, sink.getvalue().to_pybytes())
        return _stats(unit, table, len(problems))

    def prepare(self, unit: WorkUnit) -> tuple[pa.Table, list[RecordProblem]]:
        """The unit's documents with their metadata, and its rejected records in order.

        Raises ``BuildError`` for a bad record under ``strict`` and for a systematic
        problem (``systematic_problem``); both engines call this.
        """
        documents, problems = self._read(unit)
        systematic = systematic_problem(documents, problems)
        if systematic is not None:
            raise BuildError(systematic)
        return self._table(documents, problems), problems

    def _reject(self, problems: list[RecordProblem], problem: RecordProblem) -> None:
        if self.settings.strict:
            raise BuildError(f"{problem.message()} (--strict stops at the first bad record)")
        problems.append(problem)

    def _tokenize(
        self, documents: Sequence[RawRecord], problems: list[RecordProblem]
    ) -> tuple[pa.Array, list[RawRecord]]:
        """Token ids of the documents; a document without any token is rejected."""
        encodings = self.tokenizer.encode_batch(
            [doc.text for doc in documents], add_special_tokens=False
        )
        kept, ids = [], []
        for doc, encoding in zip(documents, encodings):
            if encoding.ids:
                kept.append(doc)
                ids.append(encoding.ids)
            else:
                self._reject(problems, RecordProblem(reason=NO_TOKENS, source=doc.source))
        return _token_array(ids), kept

    def _read(self, unit: WorkUnit) -> tuple[list[RawRecord], list[RecordProblem]]:
        documents: list[RawRecord] = []
        problems: list[RecordProblem] = []
        for item in read_unit(unit, self.settings.read):
            if isinstance(item, RecordProblem):
                self._reject(problems, item)
            else:
                documents.append(item)
        return documents, problems

    def _table(self, documents: list[RawRecord], problems: list[RecordProblem]) -> pa.Table:
        step = self.settings.batch_size
        batches = []
        for start in range(0, len(documents), step):
            batches.append(self._batch(documents[start : start + step], problems))
        if not batches:
            batches = [self._batch([], problems)]
        return pa.concat_tables(batches, promote_options="default")

    def _batch(self, documents: Sequence[RawRecord], problems: list[RecordProblem]) -> pa.Table:
        from streammix.metadata.minhash import signatures_from_texts

        s = self.settings
        token_lists = None
        if self.tokenizer is not None:
            token_lists, documents = self._tokenize(documents, problems)
        texts = [doc.text for doc in documents]
        records = [doc.record for doc in documents]
        try:
            scores = self.scorer.score(texts, records)
        except (ValueError, TypeError, KeyError) as exc:
            where = documents[0].source if documents else "?"
            raise BuildError(
                f"--quality {s.scorer} failed on a batch from {where}: {exc}"
            ) from None
        signatures = signatures_from_texts(
            texts,
            shingle_config=s.shingle,
            num_perm=s.num_perm,
            seed=s.minhash_seed,
            scheme=s.scheme,
        )
        signatures = np.ascontiguousarray(signatures).reshape(len(texts), s.num_perm)
        columns: dict[str, pa.Array] = {
            "text": pa.array(texts, type=pa.large_string()),
            "source": pa.array([doc.source for doc in documents], type=pa.string()),
            "id": pa.array([doc.doc_id for doc in documents], type=pa.string()),
            "meta": pa.array(
                [_meta_json(doc.record, s.read.text_field) for doc in documents], type=pa.string()
            ),
            "num_bytes": pa.array([len(t.encode("utf-8")) for t in texts], type=pa.int64()),
            "split_hash": pa.array([split_hash(t, s.split_seed) for t in texts], type=pa.uint64()),
            "quality": pa.array(np.asarray(scores.quality, dtype=np.float32)),
            "signature": pa.FixedSizeListArray.from_arrays(
                pa.array(signatures.reshape(-1)), s.num_perm
            ),
        }
        columns.update(self._topic_features(texts))
        if token_lists is not None:
            columns["tokens"] = token_lists
        for name in sorted(scores.signals):
            columns[f"signal:{name}"] = pa.array(np.asarray(scores.signals[name], np.float32))
        return pa.table(columns)

    def _topic_features(self, texts: list[str]) -> dict[str, pa.Array]:
        """``topic_signature`` (unigram MinHash) or ``topic_embedding`` of each text."""
        from streammix.metadata.minhash import signatures_from_texts

        s = self.settings
        if self.embedder is not None:
            vectors = self.embedder.embed(texts)
            flat = pa.array(vectors.reshape(-1), type=pa.float32())
            return {"topic_embedding": pa.FixedSizeListArray.from_arrays(flat, self.embedder.dim)}
        signatures = signatures_from_texts(
            texts,
            shingle_config=s.topic_shingle,
            num_perm=s.topic_num_perm,
            seed=s.minhash_seed,
            scheme=s.scheme,
        )
        flat = pa.array(np.ascontiguousarray(signatures).reshape(-1))
        return {"topic_signature": pa.FixedSizeListArray.from_arrays(flat, s.topic_num_perm)}


HINTS = {
    MISSING_TEXT: "is --text-field right?",
    MISSING_ID: "is --id-field right?",
    TEXT_NOT_STRING: "--text-field must name a string field",
    MALFORMED_JSON: "is the file JSON lines, one object per line?",
    NOT_AN_OBJECT: "each line must be a JSON object",
}


def systematic_problem(
    documents: Sequence[RawRecord], problems: Sequence[RecordProblem]
) -> str | None:
    """The error when every record of a unit (two or more) was rejected for one shape reason.

    Such a unit means the flags do not fit the input (a wrong ``--text-field``, a file that is
    not JSON lines), not a few bad records, so the build stops with the cause and the first
    record instead of finishing without the domain; scattered bad records are still skipped.
    """
    if documents or len(problems) < 2:
        return None
    reasons = {problem.reason for problem in problems}
    if len(reasons) != 1 or problems[0].reason not in SHAPE_REASONS:
        return None
    first, last = problems[0], problems[-1]
    example = f", e.g. {first.detail}" if first.detail else ""
    return (
        f"all {len(problems)} records from {first.source} to {last.source} were rejected for "
        f"one reason: {first.reason}{example}; {HINTS[first.reason]}"
    )


def reject_line(unit: WorkUnit, problem: RecordProblem) -> str:
    """One line of ``rejects.jsonl`` (JSON, without the newline)."""
    return json.dumps(
        {
            "domain": unit.domain,
            "source": problem.source,
            "reason": problem.reason,
            "detail": problem.detail,
        },
        ensure_ascii=False,
    )


def _meta_json(record: Any, text_field: str) -> str:
    meta = {k: v for k, v in dict(record).items() if k != text_field}
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)


def _token_array(ids: list[list[int]]) -> pa.Array:
    rows = [np.asarray(row, dtype=np.uint32) for row in ids]
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    values = np.concatenate(rows) if rows else np.zeros(0, dtype=np.uint32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _stats(unit: WorkUnit, table: pa.Table, num_rejects: int) -> UnitStats:
    text_bytes = int(np.asarray(table["num_bytes"]).sum()) if table.num_rows else 0
    return UnitStats(
        index=unit.index,
        num_docs=table.num_rows,
        num_rejects=num_rejects,
        input_bytes=unit.num_bytes,
        text_bytes=text_bytes,
    )


def stats_from_file(path: Path, unit: WorkUnit) -> UnitStats:
    meta = pq.read_schema(path).metadata or {}
    info = json.loads(meta.get(b"streammix.unit", b"{}"))
    table = pq.read_table(path, columns=["num_bytes"])
    return _stats(unit, table, int(info.get("rejects", 0)))


# Worker-process side of the pool. The initializer only stores the settings (it must not
# fail: a failing initializer makes the pool respawn workers forever); the UnitPreparer is
# built on the worker's first unit, so its errors reach the main process as task errors.
_SETTINGS: PrepareSettings | None = None
_PREPARER: UnitPreparer | None = None
_THREADS: tuple[tuple[str, str], ...] = ()


def cap_worker_threads() -> tuple[tuple[str, str], ...]:
    """One thread for every pool a prepare worker could start, so N workers use N cores.

    The caps: the Rust tokenizer's rayon pool (``TOKENIZERS_PARALLELISM``, the library's own
    switch, read at each batch encode), numba's parallel kernels, Arrow's CPU pool (parquet
    encoding and decoding), and torch's intra-op pool when the embeddings backend loaded
    torch. Arrow's I/O pool is left alone (it waits, it does not compute). Returns what is
    now in force, which ``prepare_in_worker`` reports with each unit's stats.
    """
    import numba

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    numba.set_num_threads(1)
    pa.set_cpu_count(1)
    caps = {
        "tokenizers_parallelism": os.environ["TOKENIZERS_PARALLELISM"],
        "numba": str(numba.get_num_threads()),
        "arrow_cpu": str(pa.cpu_count()),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
        caps["torch"] = str(torch.get_num_threads())
    return tuple(sorted(caps.items()))


def init_worker(settings: PrepareSettings) -> None:
    """Pool initializer: keep the settings; threads are capped by ``cap_worker_threads``.

    A worker leaves Ctrl-C to the main process (which stops the pool and prints one line)
    and exits at once, silently, when the main process dies: a killed build must not leave
    workers that finish their queued units and then fail on the closed result pipe.
    """
    global _SETTINGS
    _SETTINGS = settings
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="exit-with-parent", daemon=True
        ).start()


def _exit_with_parent(sentinel: int) -> None:
    """Wait until the parent process is gone, then end this process without a word."""
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def prepare_in_worker(unit: WorkUnit) -> UnitStats:
    """Prepare one unit in a pool process (see ``init_worker``)."""
    global _PREPARER, _THREADS
    assert _SETTINGS is not None, "init_worker was not called in this process"
    if _PREPARER is None:
        _THREADS = cap_worker_threads()
        _PREPARER = UnitPreparer(_SETTINGS)
        _THREADS = cap_worker_threads()  # again: the embedder may have imported torch
    stats = _PREPARER.run(unit)
    return dataclasses.replace(stats, worker_threads=(("pid", str(os.getpid())), *_THREADS))


def cluster_in_worker(config: Any, plan: Any, work: Path, out: Path) -> Path:
    """Stage *cluster* (``run_cluster``) in a pool process, with numba's default threads."""
    from streammix.pipeline.cluster import run_cluster

    if _PREPARER is not None:  # pool processes run their units on one thread
        import numba

        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        pa.set_cpu_count(os.cpu_count() or 1)
    return run_cluster(config, plan, work, out)

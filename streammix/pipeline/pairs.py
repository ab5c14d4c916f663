"""``streammix-build --pairs``: preference pairs into one tokenized MDS Stream per domain.

For SimpleMix (2025) the domains of a build are pair *sources* (e.g. ``on``: pairs sampled
from the policy by ``streammix pairs``; ``off``: pairs from other models or people); a
``StreamMixDataset`` over the build mixes them per example with static domain weights (or
any policy) and ``streammix.composer.dpo`` trains on them with DPO (Rafailov et al. 2023).

This is a code path of its own beside the text build (``streammix.pipeline.local``): pairs
need no quality scores, MinHash or clusters. It shares the output layout, the resumable
output folder (``streammix.pipeline.workdir``), the reject list, the manifest and the MDS
writer. For each domain, in order, its files (jsonl or parquet, sorted) are read record by
record (``streammix.format.pairs``); bad records are rejected with their location, then, in
batches, the three texts are tokenized (no special tokens; the tokenizer's eos is appended
to both responses unless ``append_eos=False``), a pair whose prompt plus longer response
exceeds ``max_tokens`` is rejected, and the rest are written with ``PairStreamWriter``:
to ``<domain>-val`` when the prompt's split hash (blake2b of seed and prompt, as the text
build hashes documents) falls below ``val_fraction`` (all pairs of one prompt land in the
same split), else to ``<domain>``. The sidecar ``streammix.parquet`` has one row per pair:

``sample_key`` (int64, position among the build's accepted pairs), ``source`` (``path:line``
or ``path#row``), ``pair_source`` (the record's source field, null when absent),
``num_tokens`` (int32, all three parts), ``num_bytes`` (int64, UTF-8 size of all three),
``prompt_num_tokens``, ``chosen_num_tokens``, ``rejected_num_tokens`` (int32), and with
score fields ``chosen_score``, ``rejected_score`` and ``margin`` (float32,
chosen minus rejected score).

A domain's folders are renamed into place and marked done in the work folder (with its
counts and rejects), so a killed build run again redoes only unfinished domains; the
manifest (``kind: pairs``) is written last. The build runs in one process.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from streammix.format.manifest import MANIFEST_VERSION, read_manifest, write_manifest
from streammix.format.mds import parse_compression
from streammix.format.pairs import (
    SIDES,
    PairFields,
    PairRecord,
    PairStreamWriter,
    check_pair_file,
    read_pair_records,
)
from streammix.format.readers import InputError, RecordProblem
from streammix.format.sidecar import index_fingerprint, write_sidecar
from streammix.pipeline.config import DOMAIN_NAME, VAL_SUFFIX, BuildError, DomainSpec
from streammix.pipeline.plan import list_domain_files
from streammix.pipeline.prepare import split_hash, token_dtype_for
from streammix.pipeline.summary import BuildSummary, _versions
from streammix.pipeline.workdir import atomic_write_bytes, atomic_write_json, open_output

REJECTS_NAME = "rejects.jsonl"
TOO_LONG = "pair longer than --max-pair-tokens"
NO_TOKENS = "pair side has no tokens under --tokenizer"


@dataclass(frozen=True, kw_only=True)
class PairsBuildConfig:
    """Everything a pairs build needs (the CLI parses flags into it)."""

    domains: tuple[DomainSpec, ...]
    out: str
    tokenizer: str
    fields: PairFields = field(default_factory=PairFields)
    max_tokens: int = 4096
    append_eos: bool = True
    val_fraction: float = 0.0
    seed: int = 0
    strict: bool = False
    compression: str | None = "zstd"
    size_limit: int = 1 << 26
    batch_size: int = 256
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.domains:
            raise BuildError("no domains given (use --domain NAME=PATH)")
        names = [d.name for d in self.domains]
        for name in names:
            if not DOMAIN_NAME.match(name) or name.endswith(VAL_SUFFIX):
                raise BuildError(f"invalid domain name {name!r}: use letters, digits, '_', '.', '-'"
                                 f" (not ending in {VAL_SUFFIX!r})")
        if len(set(names)) != len(names):
            raise BuildError(f"domain names must be unique, got {names}")
        if not self.out:
            raise BuildError("no output folder given (--out DIR)")
        if not self.tokenizer:
            raise BuildError("a pairs build needs --tokenizer (DPO trains on token ids)")
        if not isinstance(self.fields, PairFields):
            raise TypeError(f"fields must be PairFields, got {type(self.fields).__name__}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 2:
            raise BuildError(f"--max-pair-tokens must be an int >= 2, got {self.max_tokens!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise BuildError(f"--val-fraction must lie in [0, 1), got {self.val_fraction}")
        if self.seed < 0:
            raise BuildError("--seed must be a non-negative integer")
        if self.batch_size < 1 or not 0 < self.size_limit < 1 << 32:
            raise BuildError("batch_size must be >= 1 and the shard size in 1..4 GiB - 1")
        if self.compression is not None:
            try:
                parse_compression(self.compression)
            except ValueError as exc:
                raise BuildError(str(exc)) from None

    def output_fields(self) -> dict[str, Any]:
        """The fields that determine the output, in plain JSON types."""
        import dataclasses
        import os

        return {
            "kind": "pairs",
            "domains": [{"name": d.name, "source": os.path.abspath(os.path.expanduser(d.source))}
                        for d in self.domains],
            "tokenizer": os.path.abspath(os.path.expanduser(self.tokenizer)),
            "fields": dataclasses.asdict(self.fields),
            "max_tokens": self.max_tokens,
            "append_eos": self.append_eos,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "strict": self.strict,
            "compression": self.compression,
            "size_limit": self.size_limit,
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.output_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_pairs_build(config: PairsBuildConfig) -> BuildSummary:
    """Build (or finish building) ``config.out`` from pair records (module docstring)."""
    from streammix.pipeline.tokenizer import load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(config.tokenizer)
    eos = tokenizer.eos_token_id
    if config.append_eos and eos is None:
        raise BuildError(f"--tokenizer {config.tokenizer} has no eos token; pass --no-eos")
    files = {}
    for spec in config.domains:
        files[spec.name] = [path for path, _ in list_domain_files(spec)]
        for path in files[spec.name]:
            try:
                check_pair_file(path)
            except InputError as exc:
                raise BuildError(f"domain {spec.name!r}: {exc}") from None
    state = open_output(config.out, config.fingerprint(), overwrite=config.overwrite)
    if state.finished:
        return BuildSummary.from_manifest(read_manifest(state.out), elapsed=0.0, resumed=True)
    dtype = token_dtype_for(len(tokenizer))
    writer = _DomainWriter(config=config, tokenizer=tokenizer, eos=eos, dtype=dtype,
                           out=state.out, work=state.work)
    results = []
    for domain_id, spec in enumerate(config.domains):
        results.append(writer.domain(domain_id, spec, files[spec.name]))
    rejects = b"".join((state.work / "rejects" / f"{spec.name}.jsonl").read_bytes()
                       for spec in config.domains)
    atomic_write_bytes(state.out / REJECTS_NAME, rejects)
    info = {"tokenizer": config.tokenizer, "vocab_size": len(tokenizer), "dtype": dtype,
            "count_field": "num_tokens"}
    write_manifest(state.out, _manifest(config, info, eos, results))
    shutil.rmtree(state.work, ignore_errors=True)
    return BuildSummary.from_manifest(read_manifest(state.out),
                                      elapsed=time.perf_counter() - started, resumed=False)


@dataclass(kw_only=True)
class _Split:
    """One Stream being written, with its sidecar columns."""

    dirname: str
    writer: PairStreamWriter
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            self.columns.setdefault(key, []).append(value)


@dataclass(kw_only=True)
class _DomainWriter:
    config: PairsBuildConfig
    tokenizer: Any
    eos: int | None
    dtype: str
    out: Path
    work: Path
    next_key: int = 0

    def domain(self, domain_id: int, spec: DomainSpec, paths: list[str]) -> dict[str, Any]:
        """Write one domain's Streams, or reuse them if a previous run finished them."""
        marker = self.work / "written" / f"{spec.name}.json"
        if marker.exists():
            done = json.loads(marker.read_text(encoding="utf-8"))
            self.next_key = done["next_key"]
            return done
        for name in (spec.name, spec.name + VAL_SUFFIX):  # left by a killed run
            for folder in (self.out / name, self.work / "write" / name):
                if folder.exists():
                    shutil.rmtree(folder)
        splits = {value: self._open(spec.name + suffix) for value, suffix in
                  (("train", ""), ("val", VAL_SUFFIX))}
        problems: list[RecordProblem] = []
        read = 0
        bar = self._bar(spec.name)
        try:
            batch: list[PairRecord] = []
            for path in paths:
                for item in read_pair_records(path, self.config.fields):
                    read += 1
                    if isinstance(item, RecordProblem):
                        self._reject(problems, item)
                    else:
                        batch.append(item)
                    if len(batch) == self.config.batch_size:
                        self._write_batch(batch, domain_id, splits, problems, bar)
                        batch = []
            self._write_batch(batch, domain_id, splits, problems, bar)
        except InputError as exc:
            raise BuildError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        result = {"name": spec.name, "id": domain_id, "read": read, "rejected": len(problems),
                  "next_key": self.next_key}
        for value, split in splits.items():
            result[value] = self._finish(split, spec.name, domain_id)
        lines = "".join(json.dumps({"domain": spec.name, "source": p.source, "reason": p.reason,
                                    "detail": p.detail}, ensure_ascii=False) + "\n"
                        for p in problems)
        atomic_write_bytes(self.work / "rejects" / f"{spec.name}.jsonl", lines.encode("utf-8"))
        atomic_write_json(marker, result)
        return result

    def _bar(self, name: str) -> Any:
        if not self.config.progress:
            return None
        from tqdm import tqdm

        return tqdm(desc=f"pairs {name}", unit=" pairs", file=sys.stderr, dynamic_ncols=True)

    def _open(self, dirname: str) -> _Split:
        writer = PairStreamWriter(self.work / "write" / dirname, token_dtype=self.dtype,
                                  compression=self.config.compression,
                                  size_limit=self.config.size_limit)
        return _Split(dirname=dirname, writer=writer)

    def _reject(self, problems: list[RecordProblem], problem: RecordProblem) -> None:
        if self.config.strict:
            raise BuildError(f"{problem.message()} (--strict stops at the first bad record)")
        problems.append(problem)

    def _write_batch(self, batch: list[PairRecord], domain_id: int, splits: dict[str, _Split],
                     problems: list[RecordProblem], bar: Any) -> None:
        if not batch:
            return
        if bar is not None:
            bar.update(len(batch))
        encoded = {side: self.tokenizer([getattr(p, side) for p in batch],
                                        add_special_tokens=False)["input_ids"] for side in SIDES}
        for i, pair in enumerate(batch):
            tokens = {side: list(encoded[side][i]) for side in SIDES}
            if self.config.append_eos:
                tokens["chosen"].append(self.eos)
                tokens["rejected"].append(self.eos)
            empty = [side for side in SIDES if not tokens[side]]
            if empty:
                self._reject(problems, RecordProblem(reason=NO_TOKENS, source=pair.location,
                                                     detail=", ".join(empty)))
                continue
            length = len(tokens["prompt"]) + max(len(tokens["chosen"]), len(tokens["rejected"]))
            if length > self.config.max_tokens:
                self._reject(problems, RecordProblem(
                    reason=TOO_LONG, source=pair.location,
                    detail=f"{length} > {self.config.max_tokens} tokens"))
                continue
            in_val = split_hash(pair.prompt, self.config.seed) < self.config.val_fraction * 2.0**64
            split = splits["val" if in_val else "train"]
            texts = {side: getattr(pair, side) for side in SIDES}
            split.writer.write_pair(texts, tokens, domain_id)
            split.add(self._sidecar_row(pair, tokens))

    def _sidecar_row(self, pair: PairRecord, tokens: dict[str, list[int]]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "sample_key": self.next_key,
            "source": pair.location,
            "pair_source": pair.source,
            "num_tokens": sum(len(t) for t in tokens.values()),
            "num_bytes": sum(len(getattr(pair, s).encode("utf-8")) for s in SIDES),
        }
        self.next_key += 1
        for side in SIDES:
            row[f"{side}_num_tokens"] = len(tokens[side])
        if self.config.fields.has_scores:
            row["chosen_score"] = pair.chosen_score
            row["rejected_score"] = pair.rejected_score
            row["margin"] = pair.margin
        return row

    def _finish(self, split: _Split, name: str, domain_id: int) -> dict[str, Any] | None:
        split.writer.finish()
        tmp = self.work / "write" / split.dirname
        count = len(split.columns.get("sample_key", []))
        if count == 0 and split.dirname != name:  # no held-out pairs: no -val folder
            shutil.rmtree(tmp)
            return None
        write_sidecar(tmp, _sidecar_arrays(split.columns, self.config.fields.has_scores),
                      {"streammix.domain": {"name": name, "id": domain_id},
                       "streammix.kind": "pairs"})
        tmp.rename(self.out / split.dirname)
        columns = split.columns
        return {"dir": split.dirname, "num_samples": count,
                "num_tokens": int(sum(columns.get("num_tokens", []))),
                "num_bytes": int(sum(columns.get("num_bytes", []))),
                "index_sha256": index_fingerprint(self.out / split.dirname)}


def _sidecar_arrays(columns: dict[str, list[Any]], has_scores: bool) -> dict[str, pa.Array]:
    types = {"sample_key": pa.int64(), "source": pa.string(), "pair_source": pa.string(),
             "num_tokens": pa.int32(), "num_bytes": pa.int64(),
             **{f"{s}_num_tokens": pa.int32() for s in SIDES}}
    if has_scores:
        types |= {"chosen_score": pa.float32(), "rejected_score": pa.float32(),
                  "margin": pa.float32()}
    return {name: pa.array(columns.get(name, []), type=kind) for name, kind in types.items()}


def _manifest(config: PairsBuildConfig, tokens: dict[str, Any], eos: int | None,
              results: list[dict[str, Any]]) -> dict[str, Any]:
    domains = []
    for result in results:
        train, val = result["train"], result["val"]
        domains.append({
            "name": result["name"], "id": result["id"], "dir": train["dir"],
            "num_samples": train["num_samples"], "num_tokens": train["num_tokens"],
            "num_bytes": train["num_bytes"], "index_sha256": train["index_sha256"],
            "val": val, "records_read": result["read"], "rejected": result["rejected"],
            "removed_duplicates": 0,
        })
    return {
        "streammix_manifest": MANIFEST_VERSION,
        "kind": "pairs",
        "config_fingerprint": config.fingerprint(),
        "domains": domains,
        "tokens": tokens,
        "pairs": {"columns": [f"{s}_tokens" for s in SIDES], "eos_id": eos,
                  "append_eos": config.append_eos, "max_tokens": config.max_tokens},
        "minhash": {},
        "quality": {},
        "val": {"fraction": config.val_fraction, "seed": config.seed, "hash": "prompt"},
        "rejects": {"count": sum(r["rejected"] for r in results), "list": REJECTS_NAME},
        "config": config.output_fields(),
        "versions": _versions(),
    }


def describe_sidecar_columns(has_scores: bool) -> list[str]:
    """The sidecar column names of a pairs build (for documentation and tests)."""
    return list(_sidecar_arrays({}, has_scores))


"""Stage 1, *plan*: list every domain's input files and cut them into fixed work units.

Files of a domain are listed in sorted order (a folder is walked recursively, hidden
entries skipped; a glob is expanded and sorted). The cut depends only on the files and
``unit_bytes``, never on the number of workers, so the set and order of output samples
cannot depend on it either:

- uncompressed jsonl: byte ranges of about ``unit_bytes`` that end right after a newline;
  the plan counts newlines while it scans, so each unit knows the number of its first line;
- compressed jsonl (.gz, .zst): one unit per file (a compressed stream cannot be entered
  in the middle);
- parquet: consecutive row groups until their stored size reaches ``unit_bytes``;
- plain-text files (one document each): consecutive files until ``unit_bytes`` or
  ``MAX_FILES_PER_UNIT`` files.

The plan is saved as ``plan.json`` in the work folder together with every file's size and
modification time. A resumed build lists the inputs again and refuses to go on if any of
them changed, because finished units would then no longer match the inputs.

A domain may also live on object storage (``s3://bucket/prefix`` or ``s3a://...``, a
prefix listed like a folder, or one object). An uncompressed jsonl object is then one
unit: finding line boundaries would mean reading the whole corpus on the driver, so store
large jsonl corpora as many objects (one per task). Parquet units come from the footers,
read with ranged GETs; text objects are grouped as files are. The samples and their order
are the same as for the same files on disk, since a unit cut never changes them.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import Any

from streammix.format.object_store import ObjectStore, ObjectStoreError, is_object_url
from streammix.format.readers import WorkUnit, input_kind, open_input
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec
from streammix.pipeline.workdir import atomic_write_json

PLAN_NAME = "plan.json"
MAX_FILES_PER_UNIT = 4096
SCAN_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """The work units of a build, in output order, and the input files they came from."""

    units: tuple[WorkUnit, ...]
    files: tuple[tuple[str, int, int], ...]
    input_bytes: int

    def units_of(self, domain: str) -> list[WorkUnit]:
        return [unit for unit in self.units if unit.domain == domain]


def list_inputs(config: BuildConfig) -> dict[str, list[tuple[str, str]]]:
    """Every domain's input files (raises ``BuildError`` for a missing or unreadable input)."""
    store = config.object_store()
    return {spec.name: list_domain_files(spec, store) for spec in config.domains}


def run_plan(
    config: BuildConfig, work: Path, listing: dict[str, list[tuple[str, str]]] | None = None
) -> Plan:
    """Load the saved plan (checking the inputs did not change) or make and save a new one."""
    listing = listing if listing is not None else list_inputs(config)
    store = config.object_store()
    files = tuple(entry for name in listing for entry in _stat_files(listing[name], store))
    saved = work / PLAN_NAME
    if saved.exists():
        plan = _load_plan(saved)
        if plan.files != files:
            changed = _first_difference(plan.files, files)
            raise BuildError(
                f"the inputs changed since this unfinished build started ({changed});"
                " rerun with --overwrite to start again"
            )
        return plan
    units: list[WorkUnit] = []
    for spec in config.domains:
        units.extend(
            _domain_units(spec.name, listing[spec.name], config.unit_bytes, len(units), store)
        )
    plan = Plan(units=tuple(units), files=files, input_bytes=sum(f[1] for f in files))
    atomic_write_json(saved, _plan_to_json(plan))
    return plan


def list_domain_files(
    spec: DomainSpec, store: ObjectStore | None = None
) -> list[tuple[str, str]]:
    """``(path, root)`` of every input file of a domain, sorted; root names text documents."""
    if is_object_url(spec.source):
        return _list_domain_objects(spec, store or ObjectStore())
    source = os.path.expanduser(spec.source)
    if os.path.isdir(source):
        root = os.path.abspath(source)
        found = []
        for folder, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found.extend(os.path.join(folder, n) for n in names if not n.startswith("."))
        paths = sorted(found)
    elif os.path.isfile(source):
        root = os.path.dirname(os.path.abspath(source))
        paths = [os.path.abspath(source)]
    else:
        paths = sorted(os.path.abspath(p) for p in glob.glob(source, recursive=True))
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise BuildError(f"domain {spec.name!r}: no input files at {spec.source!r}")
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
    if not paths:
        raise BuildError(f"domain {spec.name!r}: folder {spec.source!r} holds no files")
    for path in paths:
        if not os.access(path, os.R_OK):
            raise BuildError(f"domain {spec.name!r}: cannot read {path}: permission denied")
    return [(path, root) for path in paths]


def _list_domain_objects(spec: DomainSpec, store: ObjectStore) -> list[tuple[str, str]]:
    """The objects of an ``s3://`` domain (hidden names skipped, as in a folder)."""
    try:
        objects = store.list(spec.source)
    except ObjectStoreError as exc:
        raise BuildError(f"domain {spec.name!r}: {exc}") from None
    source = spec.source.rstrip("/")
    if len(objects) == 1 and objects[0].url == source:
        return [(source, source.rsplit("/", 1)[0])]
    visible = [
        info.url
        for info in objects
        if not any(part.startswith(".") for part in info.url[len(source) + 1 :].split("/"))
    ]
    if not visible:
        raise BuildError(f"domain {spec.name!r}: no objects under {spec.source!r}")
    return [(url, source) for url in visible]


def _stat_files(
    entries: list[tuple[str, str]], store: ObjectStore
) -> list[tuple[str, int, int]]:
    stats = []
    for path, _ in entries:
        if is_object_url(path):
            info = store.stat(path)
            stats.append((path, info.size, info.mtime_ns))
            continue
        stat = os.stat(path)
        stats.append((path, int(stat.st_size), int(stat.st_mtime_ns)))
    return stats


def _domain_units(
    domain: str,
    entries: list[tuple[str, str]],
    unit_bytes: int,
    first_index: int,
    store: ObjectStore | None = None,
) -> list[WorkUnit]:
    units: list[WorkUnit] = []
    pending_text: list[str] = []
    pending_root = ""
    pending_bytes = 0

    def flush_text() -> None:
        nonlocal pending_text, pending_bytes
        if pending_text:
            units.append(
                WorkUnit(
                    index=first_index + len(units),
                    domain=domain,
                    kind="text",
                    path=pending_text[0],
                    files=tuple(pending_text),
                    root=pending_root,
                    num_bytes=pending_bytes,
                )
            )
        pending_text, pending_bytes = [], 0

    for path, root in entries:
        kind = input_kind(path)
        size = store.stat(path).size if is_object_url(path) else os.path.getsize(path)
        if kind == "text":
            if pending_text and pending_root != root:
                flush_text()
            pending_text.append(path)
            pending_root = root
            pending_bytes += size
            if pending_bytes >= unit_bytes or len(pending_text) >= MAX_FILES_PER_UNIT:
                flush_text()
            continue
        flush_text()
        for fields in _file_units(path, kind, size, unit_bytes, store or ObjectStore()):
            units.append(
                WorkUnit(
                    index=first_index + len(units),
                    domain=domain,
                    kind=kind,
                    path=path,
                    root=root,
                    **fields,
                )
            )
    flush_text()
    return units


def _file_units(
    path: str, kind: str, size: int, unit_bytes: int, store: ObjectStore
) -> list[dict[str, Any]]:
    if kind == "jsonl" and is_object_url(path):
        return [{"byte_start": 0, "byte_end": size, "first_line": 1, "num_bytes": size}]
    if kind == "jsonl":
        return [
            {"byte_start": start, "byte_end": end, "first_line": line, "num_bytes": end - start}
            for start, end, line in jsonl_ranges(path, size, unit_bytes)
        ]
    if kind == "parquet":
        return _parquet_units(path, unit_bytes, store)
    return [{"byte_start": 0, "byte_end": -1, "first_line": 1, "num_bytes": size}]


def jsonl_ranges(path: str, size: int, unit_bytes: int) -> list[tuple[int, int, int]]:
    """``(byte_start, byte_end, first_line)`` ranges of about ``unit_bytes`` cut after newlines."""
    if size <= unit_bytes:
        return [(0, size, 1)]
    ranges = []
    start, start_line, target = 0, 1, unit_bytes
    position, lines = 0, 0
    try:
        with open(path, "rb") as stream:
            while block := stream.read(SCAN_BLOCK):
                while target < position + len(block):
                    cut = block.find(b"\n", max(0, target - position))
                    if cut < 0:
                        break
                    end = position + cut + 1
                    ranges.append((start, end, start_line))
                    start_line = lines + block.count(b"\n", 0, cut + 1) + 1
                    start, target = end, end + unit_bytes
                lines += block.count(b"\n")
                position += len(block)
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror or exc}") from None
    if start < size:
        ranges.append((start, size, start_line))
    return ranges


def _parquet_units(path: str, unit_bytes: int, store: ObjectStore) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open_input(path, store) as stream:
            metadata = pq.ParquetFile(stream).metadata
    except (OSError, pa.ArrowException) as exc:
        raise BuildError(f"cannot read parquet file {path}: {exc}") from None
    units, first_group, first_row, row, stored = [], 0, 0, 0, 0
    for group in range(metadata.num_row_groups):
        row += metadata.row_group(group).num_rows
        stored += metadata.row_group(group).total_byte_size
        if stored >= unit_bytes or group == metadata.num_row_groups - 1:
            units.append(
                {
                    "row_groups": (first_group, group + 1),
                    "first_row": first_row,
                    "num_bytes": stored,
                }
            )
            first_group, first_row, stored = group + 1, row, 0
    return units


def _plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "files": [list(entry) for entry in plan.files],
        "input_bytes": plan.input_bytes,
        "units": [dataclasses.asdict(unit) for unit in plan.units],
    }


def _load_plan(path: Path) -> Plan:
    data = json.loads(path.read_text(encoding="utf-8"))
    units = []
    for fields in data["units"]:
        fields["row_groups"] = tuple(fields["row_groups"])
        fields["files"] = tuple(fields["files"])
        units.append(WorkUnit(**fields))
    files = tuple((str(p), int(s), int(m)) for p, s, m in data["files"])
    return Plan(units=tuple(units), files=files, input_bytes=int(data["input_bytes"]))


def _first_difference(old: tuple, new: tuple) -> str:
    old_map = {entry[0]: entry for entry in old}
    new_map = {entry[0]: entry for entry in new}
    for path in sorted(set(old_map) | set(new_map)):
        if path not in new_map:
            return f"{path} is gone"
        if path not in old_map:
            return f"{path} is new"
        if old_map[path] != new_map[path]:
            return f"{path} was modified"
    return "the file order changed"

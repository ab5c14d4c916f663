"""Plan: work units depend only on the inputs; ranges cover files exactly; changes detected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.format.readers import ReadOptions, read_unit
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec
from streammix.pipeline.plan import jsonl_ranges, list_domain_files, run_plan


def _config(tmp_path: Path, *domains: tuple[str, str], unit_bytes: int = 1000) -> BuildConfig:
    specs = tuple(DomainSpec(name=n, source=s) for n, s in domains)
    return BuildConfig(domains=specs, out=str(tmp_path / "out"), unit_bytes=unit_bytes)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    unit_bytes=st.integers(1, 2000),
    trailing_newline=st.booleans(),
)
def test_jsonl_ranges_cut_after_newlines_and_count_lines(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    unit_bytes: int,
    trailing_newline: bool,
) -> None:
    lines = [b"x" * n for n in lengths]
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path = tmp_path_factory.mktemp("r") / "a.jsonl"
    path.write_bytes(data)
    ranges = jsonl_ranges(str(path), len(data), unit_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) or not data
    for (start, end, first_line), nxt in zip(ranges, ranges[1:] + [None]):
        assert start < end or not data
        assert first_line == data[:start].count(b"\n") + 1
        if nxt is not None:
            assert nxt[0] == end and data[end - 1 : end] == b"\n"


def test_jsonl_ranges_scan_across_read_blocks(tmp_path: Path, monkeypatch) -> None:
    import streammix.pipeline.plan as plan_module

    monkeypatch.setattr(plan_module, "SCAN_BLOCK", 7)
    data = b"".join(b"%d\n" % (i * 997) for i in range(300))
    path = tmp_path / "a.jsonl"
    path.write_bytes(data)
    ranges = jsonl_ranges(str(path), len(data), 50)
    assert [r[0] for r in ranges[1:]] == [r[1] for r in ranges[:-1]]
    for start, _, first_line in ranges:
        assert data[start - 1 : start] in (b"", b"\n")
        assert first_line == data[:start].count(b"\n") + 1


def test_units_read_back_every_record_once(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(500)))
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(300)]}), parquet, row_group_size=20)
    plan = run_plan(_config(tmp_path, ("a", str(path)), ("b", str(parquet))), tmp_path)
    assert len(plan.units_of("a")) > 3 and len(plan.units_of("b")) > 1
    texts = [r.text for u in plan.units for r in read_unit(u, ReadOptions())]
    assert texts == [f"doc {i}" for i in range(500)] + [f"row {i}" for i in range(300)]
    assert [u.index for u in plan.units] == list(range(len(plan.units)))


def test_folder_listing_is_sorted_recursive_and_skips_hidden(tmp_path: Path) -> None:
    for name in ("b.txt", "a/c.txt", "a/.hidden", ".git/x", "z.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text " + name)
    files = list_domain_files(DomainSpec(name="d", source=str(tmp_path)))
    assert [os.path.relpath(p, tmp_path) for p, _ in files] == ["a/c.txt", "b.txt", "z.txt"]
    assert {root for _, root in files} == {str(tmp_path)}


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no input files"):
        list_domain_files(DomainSpec(name="d", source=str(tmp_path / "*.jsonl")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="holds no files"):
        list_domain_files(DomainSpec(name="d", source=str(tmp_path / "empty")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n')
    path.chmod(0)
    with pytest.raises(BuildError, match="cannot read"):
        list_domain_files(DomainSpec(name="d", source=str(path)))


def test_text_files_group_into_units_by_bytes(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{i:02d}.txt").write_text("w" * 100)
    plan = run_plan(_config(tmp_path, ("d", str(tmp_path / "docs")), unit_bytes=350), tmp_path)
    assert [len(u.files) for u in plan.units] == [4] * 7 + [2]
    assert plan.input_bytes == 3000


def test_rerun_reuses_plan_and_detects_changed_inputs(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(100)))
    config = _config(tmp_path, ("a", str(path)), unit_bytes=300)
    first = run_plan(config, tmp_path)
    assert run_plan(config, tmp_path) == first
    path.write_text(path.read_text() + json.dumps({"text": "new"}) + "\n")
    with pytest.raises(BuildError, match="inputs changed.*was modified"):
        run_plan(config, tmp_path)

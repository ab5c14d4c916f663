"""Readers: every input kind streams the same documents; every per-record defect is typed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from streammix.format import readers as R
from streammix.format.readers import (
    InputError,
    RawRecord,
    ReadOptions,
    RecordProblem,
    WorkUnit,
    input_kind,
    read_unit,
)

OPTIONS = ReadOptions(text_field="text", id_field=None, max_doc_bytes=1000)


def _unit(path: Path, kind: str | None = None, **fields) -> WorkUnit:
    kind = kind or input_kind(str(path))
    return WorkUnit(index=0, domain="d", kind=kind, path=str(path), **fields)


def _read(unit: WorkUnit, options: ReadOptions = OPTIONS) -> list:
    return list(read_unit(unit, options))


def _lines(records: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("a.jsonl.gz", "jsonl.gz"),
        ("a.jsonl.zst", "jsonl.zst"),
        ("a.jsonl.zstd", "jsonl.zst"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.txt", "text"),
        ("a.py", "text"),
        ("a.json", "text"),
        ("a.gz", "text"),
    ],
)
def test_input_kind_by_name(name: str, kind: str) -> None:
    assert input_kind(f"/x/{name}") == kind


def test_jsonl_plain_gz_and_zst_give_the_same_documents(tmp_path: Path) -> None:
    records = [{"text": f"document {i}", "n": i} for i in range(50)]
    data = _lines(records)
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    results = {}
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst"):
        docs = _read(_unit(tmp_path / name))
        assert all(isinstance(d, RawRecord) for d in docs)
        results[name] = [(d.text, d.record["n"], d.source.rsplit(":", 1)[1]) for d in docs]
    assert results["a.jsonl"] == results["a.jsonl.gz"] == results["a.jsonl.zst"]
    assert results["a.jsonl"][7] == ("document 7", 7, "8")


def test_every_per_record_problem_is_typed_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        b'{"text": "fine", "id": 1}',
        b'{"text": "broken"',
        b"[1, 2]",
        b'{"body": "no text field", "id": 2}',
        b'{"text": 17, "id": 3}',
        b'{"text": "caf\xff", "id": 4}',
        b'{"text": "lone \\ud800 surrogate", "id": 5}',
        b'{"text": "  \\n\\t ", "id": 6}',
        b'{"text": "' + b"x" * 2000 + b'", "id": 7}',
        b'{"text": "no id"}',
        b"",
        b'{"text": "after a blank line", "id": 9}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = _read(_unit(path), ReadOptions(text_field="text", id_field="id", max_doc_bytes=1000))
    reasons = [
        (i.reason, i.source.rsplit(":", 1)[1])
        if isinstance(i, RecordProblem)
        else ("ok", i.source.rsplit(":", 1)[1])
        for i in items
    ]
    assert reasons == [
        ("ok", "1"),
        (R.MALFORMED_JSON, "2"),
        (R.NOT_AN_OBJECT, "3"),
        (R.MISSING_TEXT, "4"),
        (R.TEXT_NOT_STRING, "5"),
        (R.INVALID_UTF8, "6"),
        (R.INVALID_UTF8, "7"),
        (R.EMPTY_DOCUMENT, "8"),
        (R.TOO_LARGE, "9"),
        (R.MISSING_ID, "10"),
        ("ok", "12"),
    ]
    assert items[0].doc_id == "1"
    assert "2000 > 1000" in items[8].message()


def test_byte_ranges_read_exactly_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(_lines([{"text": f"t{i}"} for i in range(10)]))
    data = path.read_bytes()
    cut = data.index(b"\n", 40) + 1
    first = _read(_unit(path, byte_start=0, byte_end=cut, first_line=1))
    second = _read(
        _unit(path, byte_start=cut, byte_end=len(data), first_line=data[:cut].count(b"\n") + 1)
    )
    texts = [d.text for d in first + second]
    assert texts == [f"t{i}" for i in range(10)]
    assert second[0].source.endswith(f":{len(first) + 1}")


def test_parquet_rows_nulls_and_binary_text(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    table = pa.table({"text": ["one", None, "three", "  "], "k": [1, 2, 3, 4]})
    pq.write_table(table, path, row_group_size=2)
    items = _read(_unit(path, row_groups=(0, 2), first_row=0))
    assert [type(i).__name__ for i in items] == [
        "RawRecord",
        "RecordProblem",
        "RawRecord",
        "RecordProblem",
    ]
    assert items[2].source.endswith("#2") and items[2].record["k"] == 3
    assert [i.reason for i in items if isinstance(i, RecordProblem)] == [
        R.MISSING_TEXT,
        R.EMPTY_DOCUMENT,
    ]
    second_group = _read(_unit(path, row_groups=(1, 2), first_row=2))
    assert [i.source.rsplit("#", 1)[1] for i in second_group] == ["2", "3"]
    binary = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"\xff"], pa.binary())}), binary)
    items = _read(_unit(binary, row_groups=(0, 1)))
    assert items[0].text == "ok" and items[1].reason == R.INVALID_UTF8


def test_parquet_without_the_text_column_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(InputError, match="no column 'text'"):
        _read(_unit(path, row_groups=(0, 1)))


def test_corrupt_compressed_and_parquet_files_are_input_errors(tmp_path: Path) -> None:
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(b"definitely not gzip")
    with pytest.raises(InputError, match="cannot read"):
        _read(_unit(gz))
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(b"definitely not zstd")
    with pytest.raises(InputError, match="cannot read"):
        _read(_unit(zst))
    bad = tmp_path / "a.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(InputError, match="cannot read parquet"):
        _read(_unit(bad, row_groups=(0, 1)))
    with pytest.raises(InputError, match="cannot read"):
        _read(_unit(tmp_path / "missing.jsonl"))


def test_text_files_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    files = {
        "a.txt": b"hello world",
        "sub/b.py": b"print('hi')\n",
        "c.bin": b"\xff\xfe",
        "d.txt": b"   \n",
        "e.txt": b"y" * 1500,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    unit = _unit(
        tmp_path / "a.txt",
        kind="text",
        root=str(tmp_path),
        files=tuple(str(tmp_path / n) for n in files),
    )
    items = _read(unit, ReadOptions(id_field="path", max_doc_bytes=1000))
    assert items[0].text == "hello world" and items[0].record == {"path": "a.txt"}
    assert items[1].doc_id == "sub/b.py"
    assert [i.reason for i in items[2:]] == [R.INVALID_UTF8, R.EMPTY_DOCUMENT, R.TOO_LARGE]


def test_real_stdlib_sources_read_as_text(tmp_path: Path) -> None:
    root = Path(json.__file__).parent
    paths = sorted(str(p) for p in root.glob("*.py"))
    unit = _unit(Path(paths[0]), kind="text", root=str(root), files=tuple(paths))
    docs = _read(unit, ReadOptions(max_doc_bytes=10_000_000))
    assert [d.text for d in docs] == [Path(p).read_text(encoding="utf-8") for p in paths]


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown input kind"):
        _read(_unit(tmp_path / "x", kind="csv"))

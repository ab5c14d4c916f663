"""``StreamWriter`` writes the same files as ``streaming.MDSWriter``, which is the oracle."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.format.mds import StreamWriter, mds_columns, parse_compression, shape_header


def _table(texts: list[str], token_lengths: list[int], high: int = 1 << 16) -> pa.Table:
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, high, size=n).tolist() for n in token_lengths]
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "num_bytes": pa.array([len(t.encode()) for t in texts], pa.int64()),
            "tokens": pa.array(tokens, pa.list_(pa.uint32())),
            "id": pa.array([f"doc-{i}" for i in range(len(texts))], pa.string()),
        }
    )


def _with_mds_writer(
    folder: Path, table: pa.Table, *, token_dtype, with_id, compression, size_limit, domain_id
) -> None:
    """The samples ``StreamWriter`` stands for, written one by one with ``MDSWriter``."""
    from streaming import MDSWriter

    columns = mds_columns(token_dtype=token_dtype, with_id=with_id)
    rows = table.to_pylist()
    with MDSWriter(
        columns=columns, out=str(folder), compression=compression, size_limit=size_limit
    ) as writer:
        for row in rows:
            sample = {"text": row["text"], "domain": np.int32(domain_id)}
            if token_dtype is not None:
                sample["tokens"] = np.asarray(row["tokens"]).astype(token_dtype)
                sample["num_tokens"] = np.int32(len(row["tokens"]))
            else:
                sample["num_bytes"] = np.int32(row["num_bytes"])
            if with_id:
                sample["id"] = row["id"]
            writer.write(sample)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _both(tmp_path: Path, table: pa.Table, chunks: int = 1, threads: int = 1, **options) -> tuple:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with StreamWriter(ours, compress_threads=threads, **options) as writer:
        for piece in np.array_split(np.arange(table.num_rows), chunks):
            if piece.size:
                writer.write_table(table.slice(int(piece[0]), piece.size), domain_id=5)
    _with_mds_writer(theirs, table, domain_id=5, **options)
    return _files(ours), _files(theirs)


@pytest.mark.parametrize("token_dtype", [None, "uint16", "uint32"])
@pytest.mark.parametrize("with_id", [False, True])
@pytest.mark.parametrize("compression", [None, "zstd", "zstd:9"])
def test_same_bytes_as_mds_writer(tmp_path, token_dtype, with_id, compression) -> None:
    lengths = [1, 7, 255, 256, 300, 65535, 65536, 70000, 3] * 3
    texts = [f"Dokument {i}: naïve café ☕ " * (i % 5 + 1) for i in range(len(lengths))]
    table = _table(texts, lengths, high=70000 if token_dtype == "uint32" else 1 << 16)
    ours, theirs = _both(
        tmp_path,
        table,
        chunks=4,
        threads=2,
        token_dtype=token_dtype,
        with_id=with_id,
        compression=compression,
        size_limit=1 << 17 if token_dtype else 600,
    )
    assert len(ours) > 3  # several shards
    assert ours == theirs


@pytest.mark.parametrize("compression", ["br:1", "bz2", "snappy"])
def test_other_codecs_match_too(tmp_path, compression) -> None:
    table = _table([f"text {i} " * 50 for i in range(60)], [5] * 60)
    ours, theirs = _both(
        tmp_path,
        table,
        token_dtype="uint16",
        with_id=False,
        compression=compression,
        size_limit=4096,
    )
    assert ours == theirs


def test_gzip_is_reproducible_and_decodes_to_the_same_shards(tmp_path) -> None:
    table = _table([f"text {i} " * 50 for i in range(60)], [5] * 60)
    options = dict(token_dtype=None, with_id=True, compression="gz:6", size_limit=4096)
    ours, theirs = _both(tmp_path, table, **options)
    again = tmp_path / "again"
    with StreamWriter(again, **options) as writer:
        writer.write_table(table, domain_id=5)
    assert _files(again) == ours  # no timestamp inside
    assert ours["index.json"] == theirs["index.json"]
    for name, data in ours.items():
        if name.endswith(".gz"):
            assert gzip.decompress(data) == gzip.decompress(theirs[name])


@settings(max_examples=30, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=40),
    size_limit=st.sampled_from([None, 64, 300, 2000]),
    threads=st.integers(1, 3),
)
def test_any_text_and_shard_size(tmp_path_factory, texts, size_limit, threads) -> None:
    """Also samples bigger than the limit (MDSWriter puts an empty shard before them)."""
    tmp_path = tmp_path_factory.mktemp("mds")
    table = _table(texts, [len(t) % 9 + 1 for t in texts], high=1 << 20)
    ours, theirs = _both(
        tmp_path,
        table,
        chunks=3,
        threads=threads,
        token_dtype="uint32",
        with_id=True,
        compression="zstd",
        size_limit=size_limit,
    )
    assert ours == theirs


def test_readable_by_streaming_and_large_strings(tmp_path) -> None:
    from streaming.base.format import reader_from_json

    texts = ["alpha", "beta ß", "gamma " * 1000]
    table = _table(texts, [2, 3, 4]).set_column(0, "text", pa.array(texts, pa.large_string()))
    with StreamWriter(
        tmp_path, token_dtype="uint32", with_id=False, compression=None, size_limit=None
    ) as writer:
        writer.write_table(table, domain_id=1)
    index = json.loads((tmp_path / "index.json").read_text())
    (shard,) = index["shards"]
    reader = reader_from_json(str(tmp_path), None, shard)
    samples = [reader.get_item(i) for i in range(3)]
    assert [s["text"] for s in samples] == texts
    assert [int(s["num_tokens"]) for s in samples] == [2, 3, 4]
    assert all(int(s["domain"]) == 1 for s in samples)
    assert samples[2]["tokens"].dtype == np.uint32


def test_shape_header() -> None:
    assert shape_header(1) == bytes([4, 1])
    assert shape_header(256) == bytes([5]) + (256).to_bytes(2, "little")
    assert shape_header(70000) == bytes([6]) + (70000).to_bytes(4, "little")
    with pytest.raises(ValueError, match="at least one element"):
        shape_header(0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lz4", "unknown compression 'lz4'"),
        ("zstd:0", r"1\.\.22"),
        ("zstd:x", r"1\.\.22"),
        ("snappy:3", "takes no level"),
    ],
)
def test_bad_compression(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_compression(text)


def test_parse_compression_levels() -> None:
    assert parse_compression("zstd")[1] is None
    assert parse_compression("br:0")[1] == 0
    assert parse_compression("gz:9")[0].name == "gz"


def test_bad_writer_input(tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    options = dict(token_dtype=None, with_id=True, compression=None, size_limit=None)
    with pytest.raises(FileExistsError, match="not empty"):
        StreamWriter(tmp_path / "full", **options)
    with pytest.raises(ValueError, match="size_limit"):
        StreamWriter(tmp_path / "a", **(options | {"size_limit": 1 << 32}))
    with pytest.raises(ValueError, match="compress_threads"):
        StreamWriter(tmp_path / "b", compress_threads=0, **options)
    table = pa.table(
        {"text": ["a", "b"], "num_bytes": [1, 1], "id": pa.array(["x", None], pa.string())}
    )
    with pytest.raises(ValueError, match="missing values"):
        with StreamWriter(tmp_path / "c", **options) as writer:
            writer.write_table(table, domain_id=0)
    assert not (tmp_path / "c" / "index.json").exists()
    with pytest.raises(ValueError, match="does not fit uint16"):
        with StreamWriter(tmp_path / "d", **(options | {"token_dtype": "uint16"})) as writer:
            writer.write_table(_table(["a"], [3], high=1 << 20), domain_id=0)

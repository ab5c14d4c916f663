"""``ShardTokens`` reads the token column as upstream's MDS reader decodes it (the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.format.mds_reader import ShardTokens, token_column_layout


def _write(folder: Path, columns: dict[str, str], samples: list[dict]) -> list[Path]:
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns=columns, compression=None,
                   size_limit=1 << 24) as writer:
        for sample in samples:
            writer.write(sample)
    return sorted(folder.glob("shard.*.mds"))


def _open(folder: Path, shard: int = 0) -> ShardTokens:
    info = json.loads((folder / "index.json").read_text())["shards"][shard]
    return ShardTokens(folder / info["raw_data"]["basename"], column="tokens",
                       column_names=info["column_names"],
                       column_encodings=info["column_encodings"],
                       column_sizes=info["column_sizes"])


def _upstream_samples(folder: Path) -> list[dict]:
    """Every sample of the folder's only shard, decoded by upstream's MDS reader."""
    from streaming.base.format.mds.reader import MDSReader

    (info,) = json.loads((folder / "index.json").read_text())["shards"]
    reader = MDSReader.from_json(str(folder), None, info)
    return [reader.get_item(i) for i in range(reader.samples)]


# lengths around the shape-size steps of the encoding (uint8, uint16, uint32 shapes)
LENGTHS = st.lists(st.sampled_from([1, 2, 255, 256, 300, 65535, 65536, 70_000]) |
                   st.integers(1, 600), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None)
@given(lengths=LENGTHS, dtype=st.sampled_from(["uint16", "uint32", "int64"]))
def test_tokens_equal_upstream_decoding_around_other_columns(tmp_path_factory, lengths,
                                                             dtype) -> None:
    folder = tmp_path_factory.mktemp("shard")
    rng = np.random.default_rng(len(lengths))
    columns = {"a_text": "str", "count": "int", "tokens": f"ndarray:{dtype}", "z_id": "str"}
    samples = [{"a_text": "x" * int(rng.integers(0, 40)), "count": i,
                "tokens": rng.integers(0, 60_000, size=n).astype(dtype), "z_id": f"doc-{i}"}
               for i, n in enumerate(lengths)]
    (path,) = _write(folder, columns, samples)
    shard = _open(folder)
    assert shard.num_samples == len(samples)
    for i, expected in enumerate(_upstream_samples(folder)):
        got = shard.tokens(i)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected["tokens"])


def test_a_fixed_shape_token_column(tmp_path) -> None:
    rng = np.random.default_rng(1)
    samples = [{"tokens": rng.integers(0, 9, size=8).astype(np.uint32), "text": "t" * i}
               for i in range(5)]
    _write(tmp_path, {"tokens": "ndarray:uint32:8", "text": "str"}, samples)
    shard = _open(tmp_path)
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(shard.tokens(i), sample["tokens"])


def test_bad_shards_and_columns_are_refused(tmp_path) -> None:
    samples = [{"tokens": np.arange(1, 6, dtype=np.uint16)}, {"tokens": np.arange(3,
                                                                                 dtype=np.uint16)}]
    _write(tmp_path, {"tokens": "ndarray:uint16"}, samples)
    shard = _open(tmp_path)
    with pytest.raises(IndexError):
        shard.tokens(2)
    with pytest.raises(ValueError, match="no column"):
        ShardTokens(shard.path, column="input_ids", column_names=["tokens"],
                    column_encodings=["ndarray:uint16"], column_sizes=[None])
    truncated = tmp_path / "truncated.mds"
    truncated.write_bytes(Path(shard.path).read_bytes()[:-4])
    cut = ShardTokens(truncated, column="tokens", column_names=["tokens"],
                      column_encodings=["ndarray:uint16"], column_sizes=[None])
    with pytest.raises(ValueError, match="not increasing within the file"):
        cut.tokens(0)
    with pytest.raises(FileNotFoundError):
        ShardTokens(tmp_path / "missing.mds", column="tokens", column_names=["tokens"],
                    column_encodings=["ndarray:uint16"], column_sizes=[None])
    matrix = tmp_path / "matrix"
    _write(matrix, {"tokens": "ndarray:uint16"}, [{"tokens": np.ones((2, 3), np.uint16)}])
    with pytest.raises(ValueError, match="not 1-D"):
        _open(matrix).tokens(0)
    for encoding in ("ndarray", "str", "ndarray:float32", "ndarray:uint16:2,3"):
        with pytest.raises(ValueError):
            token_column_layout(encoding)

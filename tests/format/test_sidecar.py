"""Sidecar: aligned with the Stream, fingerprinted by index.json, mismatches are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streammix.format.mds import StreamWriter, mds_columns
from streammix.format.sidecar import (
    SIDECAR_NAME,
    SidecarMismatchError,
    index_fingerprint,
    read_sidecar,
    sidecar_metadata,
    write_sidecar,
)


def _stream(folder: Path, texts: list[str], token_dtype: str | None = None) -> None:
    table = {"text": texts, "num_bytes": [len(t.encode()) for t in texts], "id": texts}
    if token_dtype:
        table["tokens"] = pa.array(
            [[len(t), 70000 if token_dtype == "uint32" else 7] for t in texts],
            pa.list_(pa.uint32()),
        )
    with StreamWriter(
        folder, token_dtype=token_dtype, with_id=True, compression="zstd", size_limit=1 << 12
    ) as writer:
        writer.write_table(pa.table(table), domain_id=3)


def test_roundtrip_and_metadata(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(40)]
    _stream(tmp_path, texts)
    write_sidecar(
        tmp_path,
        {"sample_key": np.arange(40), "q": np.linspace(0, 1, 40)},
        {"streammix.minhash": {"scheme": "affine32", "num_perm": 4}},
    )
    table = read_sidecar(tmp_path)
    assert table["sample_key"].to_pylist() == list(range(40))
    meta = sidecar_metadata(table)
    assert meta["streammix.minhash"] == {"scheme": "affine32", "num_perm": 4}
    assert meta["streammix.index_sha256"] == index_fingerprint(tmp_path)
    assert read_sidecar(tmp_path, columns=["q"]).column_names == ["q"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_rewritten_stream_is_detected(tmp_path: Path) -> None:
    _stream(tmp_path, ["a", "b"])
    write_sidecar(tmp_path, {"k": [0, 1]})
    index = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps(index, indent=2))
    with pytest.raises(SidecarMismatchError, match="rewritten after its sidecar"):
        read_sidecar(tmp_path)


def test_wrong_row_count_missing_sidecar_and_columns(tmp_path: Path) -> None:
    _stream(tmp_path, ["a", "b", "c"])
    with pytest.raises(ValueError, match="has 2 rows but the Stream has 3 samples"):
        write_sidecar(tmp_path, {"k": [0, 1]})
    with pytest.raises(SidecarMismatchError, match=f"no {SIDECAR_NAME}"):
        read_sidecar(tmp_path)
    write_sidecar(tmp_path, {"k": [0, 1, 2]})
    with pytest.raises(ValueError, match="no column"):
        read_sidecar(tmp_path, columns=["nope"])
    with pytest.raises(SidecarMismatchError, match="cannot read"):
        index_fingerprint(tmp_path / "missing")


@pytest.mark.parametrize("token_dtype", [None, "uint16", "uint32"])
def test_streaming_dataset_reads_the_stream(tmp_path: Path, token_dtype: str | None) -> None:
    from streaming import StreamingDataset

    texts = [f"sample number {i} " * (i % 5 + 1) for i in range(25)]
    _stream(tmp_path / "s", texts, token_dtype)
    dataset = StreamingDataset(local=str(tmp_path / "s"), shuffle=False, batch_size=1)
    samples = [dataset[i] for i in range(dataset.num_samples)]
    assert [s["text"] for s in samples] == texts
    assert all(int(s["domain"]) == 3 for s in samples)
    assert [s["id"] for s in samples] == texts
    if token_dtype is None:
        assert [int(s["num_bytes"]) for s in samples] == [len(t.encode()) for t in texts]
    else:
        assert samples[4]["tokens"].dtype == np.dtype(token_dtype)
        assert int(samples[4]["num_tokens"]) == 2
        assert samples[4]["tokens"][0] == len(texts[4])


def test_mds_columns() -> None:
    assert mds_columns(token_dtype=None, with_id=False) == {
        "text": "str",
        "domain": "int32",
        "num_bytes": "int32",
    }
    assert mds_columns(token_dtype="uint16", with_id=True) == {
        "text": "str",
        "domain": "int32",
        "tokens": "ndarray:uint16",
        "num_tokens": "int32",
        "id": "str",
    }
    with pytest.raises(ValueError, match="token_dtype"):
        mds_columns(token_dtype="int8", with_id=False)

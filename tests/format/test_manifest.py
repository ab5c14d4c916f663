"""Manifest: written atomically, read back with absolute paths, damage is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from streammix.format.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ManifestError,
    read_manifest,
    write_manifest,
)


def _data() -> dict:
    domain = {
        "name": "web",
        "id": 0,
        "dir": "web",
        "num_samples": 10,
        "num_tokens": 100,
        "num_bytes": 400,
        "index_sha256": "ab",
        "records_read": 12,
        "rejected": 2,
        "removed_duplicates": 0,
        "val": {
            "dir": "web-val",
            "num_samples": 2,
            "num_tokens": 20,
            "num_bytes": 80,
            "index_sha256": "cd",
        },
    }
    code = {**domain, "name": "code", "id": 1, "dir": "code", "val": None}
    return {
        "streammix_manifest": MANIFEST_VERSION,
        "config_fingerprint": "f" * 64,
        "domains": [domain, code],
        "tokens": {
            "tokenizer": "/tok",
            "vocab_size": 400,
            "dtype": "uint16",
            "count_field": "num_tokens",
        },
        "minhash": {"scheme": "affine32", "seed": 1, "num_perm": 128, "shingle": {"n": 5}},
        "quality": {"scorer": "heuristic"},
        "config": {"seed": 0},
        "versions": {"streammix": "0.1.0"},
    }


def test_roundtrip(tmp_path: Path) -> None:
    write_manifest(tmp_path, _data())
    manifest = read_manifest(tmp_path)
    assert manifest.domain_names == ("web", "code")
    web = manifest.domain("web")
    assert web.dir == tmp_path / "web" and web.val_dir == tmp_path / "web-val"
    assert (web.num_samples, web.val_num_samples, web.rejected) == (10, 2, 2)
    assert manifest.domain("code").val_dir is None
    assert manifest.token_dtype == "uint16" and manifest.minhash["num_perm"] == 128
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]
    with pytest.raises(KeyError, match="no domain 'x'"):
        manifest.domain("x")


def test_missing_or_damaged_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a finished streammix build"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("a: [")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("just: text\n")
    with pytest.raises(ManifestError, match="not a streammix manifest"):
        read_manifest(tmp_path)
    data = _data()
    del data["tokens"]
    write_manifest(tmp_path, data)
    with pytest.raises(ManifestError, match="incomplete"):
        read_manifest(tmp_path)

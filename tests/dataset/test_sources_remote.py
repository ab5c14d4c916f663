"""What a training job fetches from a build's remote: little, once per node, checked.

A local folder stands in for object storage here (upstream's LocalDownloader); the S3 tests
in tests/integration/test_s3.py run the same paths against a real S3-compatible server.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from streammix import MixingConfig, StreamMixDataset
from streammix.dataset.sources import BuildLayoutError
from streammix.format.remote import RemoteFileMissing, fetch_file
from streammix.format.sidecar import SIDECAR_NAME, TOKEN_COUNTS_NAME, read_sidecar


def _remote_dataset(build: Path, cache: Path, **mixing) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(remote=str(build), local=str(cache), batch_size=4,
                            mixing=MixingConfig(**mixing))


def test_training_fetches_no_sidecar_and_packing_only_token_counts(build, tmp_path) -> None:
    cache = tmp_path / "cache"
    dataset = _remote_dataset(build, cache, seed=1)
    next(iter(dataset))
    assert not list(cache.rglob(SIDECAR_NAME)) and not list(cache.rglob(TOKEN_COUNTS_NAME))
    del dataset
    packed = _remote_dataset(build, cache, seed=1, sequence_length=32, separator_id=0)
    next(iter(packed))
    fetched = sorted(p.parent.name for p in cache.rglob(TOKEN_COUNTS_NAME))
    assert fetched == ["code", "web"] and not list(cache.rglob(SIDECAR_NAME))
    for name in fetched:  # 4 bytes a sample, the same numbers as the sidecar's column
        counts = np.load(cache / name / TOKEN_COUNTS_NAME)
        assert counts.dtype == np.int32
        sidecar = read_sidecar(build / name, columns=["num_tokens"])
        assert counts.tolist() == sidecar["num_tokens"].to_pylist()
        assert (build / name / TOKEN_COUNTS_NAME).stat().st_size < \
            (build / name / SIDECAR_NAME).stat().st_size / 20
    del packed


def test_older_build_without_token_counts_packs_from_the_sidecar(build, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(build, old)
    for path in old.rglob(TOKEN_COUNTS_NAME):
        path.unlink()
    packed = _remote_dataset(old, tmp_path / "cache", seed=1, sequence_length=32,
                             separator_id=0)
    assert len(next(iter(packed))["input_ids"]) == 32
    del packed


def test_a_rewritten_stream_is_refused_against_the_manifest(build, tmp_path) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(build, changed)
    index = json.loads((changed / "web" / "index.json").read_text())
    index["shards"][0]["raw_data"]["hashes"] = {"sha1": "0" * 40}
    (changed / "web" / "index.json").write_text(json.dumps(index))
    gc.collect()
    with pytest.raises(BuildLayoutError, match="'web'.*does not match the build's manifest"):
        StreamMixDataset(local=str(changed), batch_size=4)


def test_a_plain_mds_remote_is_one_domain_per_folder(mds_domains, tmp_path) -> None:
    gc.collect()
    dataset = StreamMixDataset(remote=str(mds_domains[0]), local=str(tmp_path / "c"),
                               batch_size=8)
    assert dataset.domain_names == ("c",) and len(dataset) == 120
    assert not (tmp_path / "c" / "streammix.yaml").exists()


def test_a_build_without_tokens_warns_at_creation_and_cannot_pack(tmp_path) -> None:
    import subprocess
    import sys

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} " * (5 + i)}) + "\n"
                            for i in range(12)))
    out = tmp_path / "text-only"
    subprocess.run([sys.executable, "-m", "streammix.cli.build", "--domain", f"docs={docs}",
                    "--out", str(out), "--workers", "1", "--quiet"], check=True)
    gc.collect()
    with pytest.warns(UserWarning, match="no token ids.*--tokenizer"):
        dataset = StreamMixDataset(local=str(out), batch_size=4)
    assert "text" in next(iter(dataset))
    del dataset
    gc.collect()
    with pytest.raises(ValueError, match="cannot pack: this build has no token ids"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StreamMixDataset(local=str(out), batch_size=4,
                         mixing=MixingConfig(sequence_length=16))


def _fetch_many(remote: str, local: str, out: mp.Queue) -> None:
    try:
        path = fetch_file(remote, local, "blob.bin")
        out.put(("ok", path.read_bytes() == b"x" * 200_000))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(("error", repr(exc)))


def test_processes_fetching_the_same_file_download_it_once(tmp_path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "local"
    remote.mkdir()
    (remote / "blob.bin").write_bytes(b"x" * 200_000)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_fetch_many, args=(str(remote), str(local), out))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert results == [("ok", True)] * 4
    leftovers = sorted(p.name for p in local.iterdir())
    assert leftovers == ["blob.bin"]  # no partial or temporary file, no lock file


def test_a_missing_remote_file_is_a_file_not_found(tmp_path) -> None:
    (tmp_path / "remote").mkdir()
    with pytest.raises(RemoteFileMissing, match="does not exist"):
        fetch_file(str(tmp_path / "remote"), tmp_path / "local", "nothing.bin")
    with pytest.raises(FileNotFoundError, match="no remote was given"):
        fetch_file(None, tmp_path / "local", "nothing.bin")

"""Small real MDS domains for dataset tests."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from streaming import MDSWriter


def write_domain(root: Path, name: str, num_samples: int, *, shard_samples: int) -> Path:
    """One MDS folder whose samples say which domain and index they are."""
    out = root / name
    # size_limit in bytes: each sample is ~40 bytes, so this gives ~shard_samples per shard
    with MDSWriter(out=str(out), columns={"text": "str", "index": "int"},
                   compression=None, size_limit=shard_samples * 40) as writer:
        for i in range(num_samples):
            writer.write({"text": f"{name}:{i:06d}".ljust(24), "index": i})
    return out


@pytest.fixture
def mds_domains(tmp_path: Path) -> list[Path]:
    dirs = [write_domain(tmp_path, "alpha", 120, shard_samples=16),
            write_domain(tmp_path, "beta", 60, shard_samples=16),
            write_domain(tmp_path, "gamma", 36, shard_samples=16)]
    yield dirs
    gc.collect()

"""Small real MDS domains for dataset tests."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from streaming import MDSWriter

from streammix.demo.tokenizer import train_tokenizer


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


def _write_jsonl(path: Path, files: list[Path]) -> list[str]:
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    with open(path, "w") as out:
        for f, text in zip(files, texts):
            out.write(json.dumps({"text": text, "id": f.name}) + "\n")
    return texts


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = sorted(p for p in (stdlib / "json").glob("*.py")) + sorted((stdlib / "email").glob("*.py"))
    docs = sorted(p for p in (stdlib / "email" / "mime").glob("*.py")) + sorted(
        (stdlib / "http").glob("*.py"))
    texts = _write_jsonl(root / "code.jsonl", code) + _write_jsonl(root / "web.jsonl", docs)
    train_tokenizer(texts, root / "tok", vocab_size=512)
    out = root / "out"
    subprocess.run([sys.executable, "-m", "streammix.cli.build", "--domain",
                    f"code={root / 'code.jsonl'}", "--domain", f"web={root / 'web.jsonl'}",
                    "--out", str(out), "--tokenizer", str(root / "tok"), "--val-samples", "3",
                    "--workers", "1", "--quiet"], check=True)
    return out


@pytest.fixture
def mds_writer():
    """``write_domain``, for tests that lay out their own MDS folders."""
    return write_domain


@pytest.fixture(autouse=True)
def release_upstream_shared_memory():
    """After each test, release the shared memory upstream StreamingDataset instances made.

    Upstream keeps every segment it creates or attaches to alive until interpreter exit (an
    atexit hook), and each new dataset attaches to every earlier prefix while looking for a
    free one, so a process that makes hundreds of datasets runs out of file descriptors. A
    training job makes one dataset; the test suite makes many, so it cleans up between tests.
    """
    yield
    from streaming.base.shared.memory import SharedMemory

    gc.collect()
    for obj in gc.get_objects():
        if type(obj) is SharedMemory:  # not isinstance: it would touch lazy torch attributes
            try:
                obj.cleanup()
            except (FileNotFoundError, BufferError):
                pass

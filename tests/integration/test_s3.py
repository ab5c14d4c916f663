"""Training from real object storage: an S3-compatible server (moto) on 127.0.0.1.

The server runs in its own process and logs every request; the tests count the GETs per
object. Upstream streaming reads ``S3_ENDPOINT_URL``; the credentials are moto's dummies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runs import SCRIPT, free_port, global_batches, train  # noqa: E402
from s3_server import BUCKET, s3_fixture  # noqa: E402, F401 - the fixture 's3'

OPEN_SCRIPT = Path(__file__).with_name("open_remote.py")


@pytest.fixture(scope="module")
def text_build(tmp_path_factory) -> Path:
    """A real streammix build (sidecars, manifest, held-out splits) of standard-library code."""
    from streammix.demo.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("s3-build")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name, package in (("code", "json"), ("web", "email")):
        files = sorted((stdlib / package).glob("*.py"))
        with open(root / f"{name}.jsonl", "w") as out:
            for f in files:
                text = f.read_text(encoding="utf-8", errors="replace")
                texts.append(text)
                out.write(json.dumps({"text": text}) + "\n")
    train_tokenizer(texts, root / "tok", vocab_size=512)
    out = root / "out"
    subprocess.run([sys.executable, "-m", "streammix.cli.build", "--domain",
                    f"code={root / 'code.jsonl'}", "--domain", f"web={root / 'web.jsonl'}",
                    "--out", str(out), "--tokenizer", str(root / "tok"), "--val-samples", "4",
                    "--shard-size", "20000", "--workers", "1", "--quiet"], check=True)
    return out


def test_two_ranks_from_an_empty_cache_fetch_each_object_once(s3, text_build, tmp_path):
    keys = s3.upload(text_build, "build")
    before = s3.gets()
    run, cache = tmp_path / "run", tmp_path / "cache"
    aioli = json.dumps({"lp_rounds": 1, "lp_steps": 2, "update_steps": 8, "eta": 1.0})
    train(f"s3://{BUCKET}/build", run, "--build", "--remote", "--cache", str(cache),
          "--vocab", "512", "--policy", "aioli", "--policy-options", aioli,
          "--save-interval", "100", ranks=2, batches=6)
    assert sorted(global_batches(run)) == list(range(6))
    fetched = s3.gets() - before
    assert fetched, "nothing was read from the S3 server"
    repeated = {k: n for k, n in fetched.items() if n > 1}
    assert not repeated, f"objects downloaded more than once on one node: {repeated}"
    assert not [k for k in fetched if k.endswith(".parquet")]  # training never reads sidecars
    assert "build/streammix.yaml" in fetched
    assert any(k.startswith("build/code-val/") for k in fetched)  # held-out for Aioli
    assert set(fetched) <= set(keys)
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob(".*.part"))


def test_two_ranks_open_an_s3_build_from_an_empty_cache(s3, text_build, tmp_path):
    """The start-up that failed 7 times in 10 (two processes writing one temporary file);
    ten times in a row under ``-m slow``."""
    _open_twice(s3, text_build, tmp_path, 0)


@pytest.mark.slow
def test_two_ranks_open_an_s3_build_from_an_empty_cache_ten_times(s3, text_build, tmp_path):
    for repeat in range(10):
        _open_twice(s3, text_build, tmp_path / str(repeat), repeat)


def _open_twice(s3, text_build: Path, tmp_path: Path, repeat: int) -> None:
    prefix = f"open{repeat}-{tmp_path.name}"
    s3.upload(text_build, prefix)
    before = s3.gets()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "composer.cli.launcher", "-n", "2", "--master_port",
           str(free_port()), str(OPEN_SCRIPT), "--remote", f"s3://{BUCKET}/{prefix}",
           "--cache", str(tmp_path / "cache"), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["held_out"] == ranks[1]["held_out"]
    assert {k: len(v) for k, v in ranks[0]["held_out"].items()} == {"code": 4, "web": 4}
    fetched = s3.gets() - before
    assert max(fetched.values()) == 1, fetched


@pytest.fixture(scope="module")
def plain_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    subprocess.run([sys.executable, str(SCRIPT), "make-data", str(out)], check=True)
    return out


def test_plain_mds_on_s3_with_a_small_cache_limit_trains_the_local_batches(
        s3, plain_data, tmp_path):
    s3.upload(plain_data, "plain")
    local, remote = tmp_path / "local", tmp_path / "remote"
    train(plain_data, local, "--save-interval", "100", batches=8)
    shard = max(p.stat().st_size for p in plain_data.glob("*/shard.*.mds"))
    train(f"s3://{BUCKET}/plain", remote, "--remote", "--cache", str(tmp_path / "cache"),
          "--cache-limit", str(6 * shard + 4096), "--save-interval", "100", batches=8)
    assert global_batches(remote) == global_batches(local)

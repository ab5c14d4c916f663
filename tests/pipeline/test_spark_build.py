"""The Spark engine on ``local[2]`` against the local engine: the same samples, metadata and
duplicate clusters from the same input and options; bad input counted; a failed job leaves no
manifest; StreamMixDataset reads the Spark build."""

from __future__ import annotations

import gc
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from build_helpers import generated_records, write_jsonl

from streammix.format.manifest import read_manifest
from streammix.format.sidecar import read_sidecar
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec
from streammix.pipeline.local import run_build

pytest.importorskip("pyspark")

BAD_LINES = [b"{oops", b'{"no_text": 1, "id": "x"}', b'{"text": "   ", "id": "blank"}']


@pytest.fixture(scope="module")
def spark():
    from streammix.pipeline.spark_session import local_spark_session

    session = local_spark_session("local[2]", shuffle_partitions=3)
    yield session
    session.stop()


def _near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


def _corpus(folder: Path) -> list[DomainSpec]:
    """Three domains with exact and near duplicates inside and across domains, bad records."""
    rng = random.Random(7)
    web = generated_records(60, seed=1, prefix="web")
    books = generated_records(40, seed=2, prefix="book")
    code = generated_records(30, seed=3, prefix="code")
    for i in range(0, 12, 2):  # near copies of web documents in books and code
        books.append({"text": _near_copy(web[i]["text"], rng), "id": f"book-copy-{i}"})
        code.append({"text": web[i + 1]["text"], "id": f"code-copy-{i}"})
    web.extend({"text": books[i]["text"], "id": f"web-copy-{i}"} for i in range(5))
    (folder / "web").mkdir()
    write_jsonl(folder / "web" / "a.jsonl", web[:40], raw_lines=BAD_LINES[:1])
    write_jsonl(folder / "web" / "b.jsonl", web[40:], raw_lines=BAD_LINES[1:])
    write_jsonl(folder / "books.jsonl", books, raw_lines=[b"[1, 2]"])
    write_jsonl(folder / "code.jsonl", code)
    return [
        DomainSpec(name="web", source=str(folder / "web")),
        DomainSpec(name="books", source=str(folder / "books.jsonl")),
        DomainSpec(name="code", source=str(folder / "code.jsonl")),
    ]


def _config(domains: list[DomainSpec], out: Path, **options) -> BuildConfig:
    fields = dict(
        domains=tuple(domains),
        out=str(out),
        id_field="id",
        dedup=True,
        dedup_threshold=0.7,
        val_fraction=0.15,
        unit_bytes=6000,
        size_limit=1 << 14,
        workers=0,
        progress=False,
    )
    return BuildConfig(**(fields | options))


def _samples(out: Path) -> tuple[Counter, list[frozenset[str]]]:
    """The multiset of (domain, text, count, quality, signature, val) and the dup partition."""
    manifest = read_manifest(out)
    rows: Counter = Counter()
    members: dict[int, set[str]] = {}
    for entry in manifest.raw["domains"]:
        for dirname, is_val in ((entry["dir"], False), ((entry["val"] or {}).get("dir"), True)):
            if dirname is None:
                continue
            samples = _mds_samples(out, dirname)
            texts = [sample["text"] for sample in samples]
            sidecar = read_sidecar(out / dirname)
            assert [sample["id"] for sample in samples] == sidecar["id"].to_pylist()
            signature = sidecar["signature"].to_pylist()
            for i, text in enumerate(texts):
                rows[
                    (
                        entry["name"],
                        text,
                        int(sidecar["num_bytes"][i].as_py()),
                        float(sidecar["quality"][i].as_py()),
                        tuple(signature[i]),
                        is_val,
                    )
                ] += 1
                key = int(sidecar["dup_cluster_id"][i].as_py())
                members.setdefault(key, set()).add(sidecar["id"][i].as_py())
    return rows, sorted(frozenset(m) for m in members.values())


def _mds_samples(out: Path, dirname: str) -> list[dict]:
    """Every sample of a Stream through upstream's shard reader (no shared memory)."""
    from streaming.base.compression import decompress
    from streaming.base.format import reader_from_json

    index = json.loads((out / dirname / "index.json").read_text())
    samples = []
    for info in index["shards"]:
        raw = out / dirname / info["raw_data"]["basename"]
        if info.get("zip_data") and not raw.exists():
            data = (out / dirname / info["zip_data"]["basename"]).read_bytes()
            raw.write_bytes(decompress(info["compression"], data))
        shard = reader_from_json(str(out), dirname, info)
        samples += [shard.get_item(i) for i in range(shard.samples)]
    return samples


def _removed(out: Path) -> list[frozenset[str]]:
    lines = (out / "dedup_removed.jsonl").read_text().splitlines()
    groups: dict[str, set[str]] = {}
    for line in lines:
        entry = json.loads(line)
        groups.setdefault(entry["duplicate_of"]["id"], {entry["duplicate_of"]["id"]}).add(
            entry["id"]
        )
    return sorted(frozenset(group) for group in groups.values())


def test_spark_build_equals_local_build(spark, tmp_path: Path) -> None:
    from streammix.pipeline.spark import run_spark_build

    domains = _corpus(tmp_path)
    local = run_build(_config(domains, tmp_path / "local"))
    on_spark = run_spark_build(_config(domains, tmp_path / "spark"), spark)
    assert on_spark.rows == local.rows
    local_rows, local_clusters = _samples(tmp_path / "local")
    spark_rows, spark_clusters = _samples(tmp_path / "spark")
    assert spark_rows == local_rows
    assert spark_clusters == local_clusters
    assert _removed(tmp_path / "spark") == _removed(tmp_path / "local")
    assert len(_removed(tmp_path / "local")) >= 5  # the corpus has cross-domain copies
    assert any(is_val for *_, is_val in local_rows)
    for name in ("rejects.jsonl",):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    manifest = read_manifest(tmp_path / "spark")
    assert manifest.raw["rejects"]["count"] == 4
    assert manifest.raw["config_fingerprint"] == read_manifest(tmp_path / "local").raw[
        "config_fingerprint"
    ]
    for entry in manifest.raw["domains"]:  # the sidecar follows the MDS order
        sidecar = pq.read_table(tmp_path / "spark" / entry["dir"] / "streammix.parquet")
        keys = sidecar["sample_key"].to_numpy()
        assert np.all(np.diff(keys) > 0)
    assert not (tmp_path / "spark" / ".streammix-work").exists()
    from streammix import StreamMixDataset

    gc.collect()
    dataset = StreamMixDataset(local=str(tmp_path / "spark"), batch_size=4)
    samples = [sample for _, sample in zip(range(16), iter(dataset))]
    assert len({sample["text"] for sample in samples}) == 16
    assert {int(sample["domain"]) for sample in samples} <= {0, 1, 2}


@pytest.mark.slow
def test_ngram_quality_on_spark_scores_like_the_local_build(spark, tmp_path: Path) -> None:
    """The reference model is trained on the driver, broadcast, and scores every document
    with the local engine's scorer: the same quality (raw and normalized) for every sample."""
    from streammix.pipeline.spark import run_spark_build

    domains = _corpus(tmp_path)
    local = _config(domains, tmp_path / "local", scorer="ngram:books", dedup=False)
    run_build(local)
    run_spark_build(_config(domains, tmp_path / "spark", scorer="ngram:books", dedup=False), spark)
    assert _samples(tmp_path / "spark") == _samples(tmp_path / "local")
    qualities = set()
    for entry in read_manifest(tmp_path / "local").raw["domains"]:
        tables = [read_sidecar(tmp_path / name / entry["dir"]) for name in ("local", "spark")]
        columns = [c for c in tables[0].column_names if c.startswith(("quality", "signal"))]
        assert "quality" in columns and set(columns) <= set(tables[1].column_names)
        order = [np.argsort(t["sample_key"].to_numpy()) for t in tables]
        for column in columns:
            values = [t[column].to_numpy()[o] for t, o in zip(tables, order)]
            np.testing.assert_array_equal(values[0], values[1])
        qualities |= set(tables[0]["quality"].to_pylist())
    assert len(qualities) > 50  # real per-document scores, not a constant


def test_a_failed_spark_job_leaves_no_manifest_and_names_the_record(spark, tmp_path) -> None:
    from streammix.pipeline.spark import run_spark_build

    domains = _corpus(tmp_path)
    out = tmp_path / "spark"
    with pytest.raises(BuildError, match="--strict stops at the first bad record"):
        run_spark_build(_config(domains, out, strict=True), spark)
    assert not (out / "streammix.yaml").exists()
    (tmp_path / "bad").mkdir()
    write_jsonl(tmp_path / "bad" / "x.jsonl", [], raw_lines=[b"{oops"] * 3)
    bad = [*domains, DomainSpec(name="bad", source=str(tmp_path / "bad"))]
    with pytest.raises(BuildError, match="all 3 records .* malformed"):
        run_spark_build(_config(bad, tmp_path / "other"), spark)
    assert not (tmp_path / "other" / "streammix.yaml").exists()


def test_connected_components_match_union_find(spark) -> None:
    from streammix.pipeline.spark import connected_components

    rng = np.random.default_rng(5)
    n = 300
    pairs = {(int(a), int(b)) for a, b in rng.integers(0, n, size=(260, 2)) if a != b}
    pairs |= {(i + 1, i) for i in range(100, 160)}  # a long chain
    edges = spark.createDataFrame(
        [(max(a, b), min(a, b)) for a, b in pairs], "u long, v long"
    ).distinct()
    found = {row["node"]: row["component"] for row in connected_components(edges).collect()}
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = {i: root(i) for i in range(n) if root(i) != i}
    assert found == expected


@pytest.mark.slow
def test_a_killed_spark_build_leaves_no_manifest_and_a_rerun_continues(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streammix.pipeline import spark as engine

    domains = _corpus(tmp_path)
    config = _config(domains, tmp_path / "spark")
    original = engine._run_write

    def fail(*args, **kwargs):
        raise RuntimeError("executor lost")

    monkeypatch.setattr(engine, "_run_write", fail)
    with pytest.raises(RuntimeError, match="executor lost"):
        engine.run_spark_build(config, spark)
    assert not (tmp_path / "spark" / "streammix.yaml").exists()
    assert (tmp_path / "spark" / ".streammix-work" / engine.DOCS_DIR / "_SUCCESS").exists()

    def no_prepare(*args, **kwargs):
        raise AssertionError("the finished prepare stage ran again")

    monkeypatch.setattr(engine, "_run_write", original)
    monkeypatch.setattr(engine, "_prepare_units", no_prepare)
    summary = engine.run_spark_build(config, spark)
    assert (tmp_path / "spark" / "streammix.yaml").exists()
    local = run_build(_config(domains, tmp_path / "local"))
    assert summary.rows == local.rows
    assert _samples(tmp_path / "spark") == _samples(tmp_path / "local")


def test_the_local_session_jvm_uses_the_client_compiler_and_the_parallel_collector(spark):
    """The local session's JVM options (``local_spark_session``, issue 20) are in force."""
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    arguments = list(runtime.getInputArguments())
    assert "-XX:TieredStopAtLevel=1" in arguments
    assert "-XX:+UseParallelGC" in arguments

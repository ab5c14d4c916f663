"""The whole build in process: MDS readable by plain streaming, sidecar aligned, nothing lost."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from build_helpers import generated_records, output_files, stdlib_glob, write_jsonl

from streammix.format.manifest import read_manifest
from streammix.format.sidecar import read_sidecar
from streammix.pipeline import local as pipeline
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec
from streammix.pipeline.local import run_build

BAD_LINES = [b"{oops", b'{"no_text": 1, "id": "x"}', b'{"text": "   ", "id": "blank"}']


def _corpus(tmp_path: Path) -> dict[str, str]:
    records = generated_records(400, seed=1, prefix="web")
    records += [dict(r, id=r["id"] + "-copy") for r in records[:15]]  # exact duplicates
    web = write_jsonl(tmp_path / "web.jsonl", records, raw_lines=BAD_LINES)
    books = tmp_path / "books.parquet"
    rows = generated_records(150, seed=2, prefix="book")
    pq.write_table(pa.Table.from_pylist(rows), books, row_group_size=40)
    return {"web": str(web), "code": stdlib_glob("json"), "books": str(books)}


def _config(tmp_path: Path, sources: dict[str, str], **changes) -> BuildConfig:
    fields = {
        "domains": tuple(DomainSpec(name=n, source=s) for n, s in sources.items()),
        "out": str(tmp_path / "out"),
        "id_field": "id",
        "workers": 0,
        "progress": False,
        "unit_bytes": 6000,
        "size_limit": 1 << 14,
        "minhash_num_perm": 64,
    }
    return BuildConfig(**{**fields, **changes})


def _expected_texts(sources: dict[str, str]) -> dict[str, list[str]]:
    web = [
        json.loads(line)
        for line in Path(sources["web"]).read_bytes().splitlines()
        if line.startswith(b'{"text": "web')
    ]
    code = [p.read_text() for p in sorted(Path(sources["code"]).parent.glob("*.py"))]
    books = pq.read_table(sources["books"])["text"].to_pylist()
    return {"web": [r["text"] for r in web], "code": code, "books": books}


def _stream_texts(folder: Path) -> list[dict]:
    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(folder), shuffle=False, batch_size=1)
    return [dataset[i] for i in range(dataset.num_samples)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path):
    tmp_path = tmp_path_factory.mktemp("built")
    sources = _corpus(tmp_path)
    config = _config(tmp_path, sources, tokenizer=str(tokenizer_dir), val_fraction=0.2, dedup=True)
    return config, sources, run_build(config)


def test_streaming_reads_every_domain_and_nothing_is_lost(built) -> None:
    config, sources, summary = built
    manifest = read_manifest(config.out)
    assert manifest.domain_names == ("web", "code", "books")
    assert manifest.token_dtype == "uint16"
    expected = _expected_texts(sources)
    removed = [
        json.loads(line)
        for line in (Path(config.out) / "dedup_removed.jsonl").read_text().splitlines()
    ]
    for entry in manifest.domains:
        train = _stream_texts(entry.dir)
        val = _stream_texts(entry.val_dir)
        assert {int(s["domain"]) for s in train + val} == {entry.id}
        got = [s["text"] for s in train] + [s["text"] for s in val]
        gone = [r for r in removed if r["domain"] == entry.name]
        assert sorted(got) == sorted(set(expected[entry.name]))
        assert len(got) + len(gone) == len(expected[entry.name])
        assert entry.num_samples == len(train) and entry.val_num_samples == len(val)
        assert len(val) > 0 and len(train) > 2 * len(val)
    web = manifest.domain("web")
    assert web.rejected == len(BAD_LINES) and web.removed_duplicates == 15
    rejects = [
        json.loads(line) for line in (Path(config.out) / "rejects.jsonl").read_text().splitlines()
    ]
    assert [r["reason"] for r in rejects if r["domain"] == "web"] == [
        "malformed json",
        "missing text field",
        "empty or whitespace-only document",
    ]
    assert rejects[0]["source"].endswith("web.jsonl:416")
    assert summary.num_samples == sum(d.num_samples + d.val_num_samples for d in manifest.domains)


def test_sidecar_lines_up_with_mds_sample_for_sample(built, tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    config, _, _ = built
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    manifest = read_manifest(config.out)
    keys = []
    for entry in manifest.domains:
        for folder in (entry.dir, entry.val_dir):
            samples = _stream_texts(folder)
            side = read_sidecar(folder)
            assert side.num_rows == len(samples)
            assert side["num_bytes"].to_pylist() == [len(s["text"].encode()) for s in samples]
            assert side["num_tokens"].to_pylist() == [int(s["num_tokens"]) for s in samples]
            assert side["id"].to_pylist() == [s["id"] for s in samples]
            for sample in samples[:20]:
                assert tokenizer.decode(sample["tokens"].tolist()) == sample["text"]
            signature = np.stack(side["signature"].to_numpy(zero_copy_only=False))
            assert signature.shape == (len(samples), 64) and signature.dtype == np.uint32
            diversity = side["diversity"].to_numpy()
            assert np.all((diversity >= 0) & (diversity <= 1))
            quality = side["quality_norm"].to_numpy()
            assert np.all((quality >= 0) & (quality <= 1))
            distance = side["topic_distance"].to_numpy()
            assert np.all((distance >= 0) & (distance <= 1))
            assert np.all(side["topic_cluster_size"].to_numpy() >= 1)
            for name in ("topic_compactness", "topic_separation"):
                assert np.all(side[name].to_numpy() <= 1)
            assert np.all(np.diff(side["sample_key"].to_numpy()) > 0)
            keys.extend(side["sample_key"].to_pylist())
    assert len(set(keys)) == len(keys)


def test_removed_duplicates_point_at_kept_samples(built) -> None:
    config, _, _ = built
    out = Path(config.out)
    kept = {}
    for entry in read_manifest(out).domains:
        for folder in (entry.dir, entry.val_dir):
            side = read_sidecar(folder, columns=["sample_key", "source", "dup_cluster_id"])
            for key, source, cluster in zip(*(side[c].to_pylist() for c in side.column_names)):
                kept[key] = (source, cluster)
    removed = [json.loads(line) for line in (out / "dedup_removed.jsonl").read_text().splitlines()]
    assert len(removed) == 15
    for entry in removed:
        original = entry["duplicate_of"]
        assert entry["sample_key"] not in kept
        assert kept[original["sample_key"]][0] == original["source"]
        assert kept[original["sample_key"]][1] == original["sample_key"]
        assert entry["id"] == original["id"] + "-copy"


def test_validation_split_is_chosen_by_text_hash_not_position(built, tmp_path: Path) -> None:
    config, sources, _ = built
    manifest = read_manifest(config.out)
    val_web = {s["text"] for s in _stream_texts(manifest.domain("web").val_dir)}
    # Reversed input order: the same documents go to validation.
    lines = Path(sources["web"]).read_bytes().splitlines()[::-1]
    (tmp_path / "rev.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    other = _config(
        tmp_path,
        {"web": str(tmp_path / "rev.jsonl")},
        val_fraction=0.2,
        dedup=True,
        out=str(tmp_path / "rev"),
    )
    run_build(other)
    assert {s["text"] for s in _stream_texts(Path(other.out) / "web-val")} == val_web


def test_val_samples_takes_an_exact_count_per_domain(tmp_path: Path) -> None:
    sources = {
        "a": str(write_jsonl(tmp_path / "a.jsonl", generated_records(60, prefix="a"))),
        "b": str(write_jsonl(tmp_path / "b.jsonl", generated_records(40, prefix="b"))),
    }
    run_build(_config(tmp_path, sources, val_samples=7))
    manifest = read_manifest(tmp_path / "out")
    assert [(d.num_samples, d.val_num_samples) for d in manifest.domains] == [(53, 7), (33, 7)]
    with pytest.raises(BuildError, match="leaves no training samples in domain 'b'"):
        run_build(_config(tmp_path, sources, val_samples=40, out=str(tmp_path / "o2")))


def test_interrupted_build_resumes_to_identical_output(tmp_path: Path, monkeypatch) -> None:
    sources = _corpus(tmp_path)
    reference = _config(tmp_path, sources, out=str(tmp_path / "ref"), dedup=True)
    run_build(reference)
    config = dataclasses.replace(reference, out=str(tmp_path / "out"))
    original = pipeline.run_write
    calls = []

    def failing_write(context, on_samples):
        def counting(n: int) -> None:
            calls.append(n)
            if len(calls) == 2:
                raise KeyboardInterrupt
            on_samples(n)

        return original(context, counting)

    monkeypatch.setattr(pipeline, "run_write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run_build(config)
    assert not (Path(config.out) / "streammix.yaml").exists()
    assert (Path(config.out) / "web").is_dir()
    units = sorted((Path(config.out) / ".streammix-work" / "units").glob("*.parquet"))
    units[3].unlink()
    (Path(config.out) / ".streammix-work" / "written" / "web").unlink()  # renamed, no marker
    monkeypatch.setattr(pipeline, "run_write", original)
    run_build(config)
    assert output_files(Path(config.out)) == output_files(Path(reference.out))


def test_ngram_quality_from_a_domain_or_from_files(tmp_path: Path) -> None:
    sources = _corpus(tmp_path)
    scores = {}
    for reference in ("books", stdlib_glob("json")):
        out = tmp_path / ("by-domain" if reference == "books" else "by-files")
        config = _config(tmp_path, sources, out=str(out), scorer=f"ngram:{reference}")
        run_build(config)
        side = read_sidecar(out / "web")
        assert "q_lm_log_prob" in side.column_names and "q_heuristic" in side.column_names
        quality = side["quality"].to_numpy()
        assert np.all(quality <= 0) and len(np.unique(quality)) > 0.8 * len(quality)
        assert read_manifest(out).domain_names == ("web", "code", "books")
        scores[reference] = quality
    assert not np.array_equal(*scores.values())  # the reference matters
    pooled = _config(
        tmp_path, sources, out=str(tmp_path / "pooled"), scorer="ngram:books", workers=2
    )
    run_build(pooled)
    assert output_files(Path(pooled.out)) == output_files(tmp_path / "by-domain")


def test_unknown_ngram_reference_is_an_error_before_any_output(tmp_path: Path) -> None:
    sources = {"a": stdlib_glob("json")}
    config = _config(tmp_path, sources, scorer=f"ngram:{tmp_path / 'nothing' / '*.txt'}")
    with pytest.raises(BuildError, match="not a domain of this build"):
        run_build(config)
    assert not Path(config.out).exists()


def test_output_folder_rules(tmp_path: Path) -> None:
    sources = {"a": str(write_jsonl(tmp_path / "a.jsonl", generated_records(30)))}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty and holds no streammix build"):
        run_build(_config(tmp_path, sources, out=str(tmp_path / "other")))
    with pytest.raises(BuildError, match="holds no streammix build"):
        run_build(_config(tmp_path, sources, out=str(tmp_path / "other"), overwrite=True))
    config = _config(tmp_path, sources)
    (Path(config.out) / ".streammix-work").mkdir(parents=True)  # killed before its config
    run_build(config)
    before = output_files(Path(config.out))
    assert run_build(config).resumed
    assert output_files(Path(config.out)) == before
    changed = dataclasses.replace(config, val_fraction=0.1)
    with pytest.raises(BuildError, match="finished build with a different configuration"):
        run_build(changed)
    run_build(dataclasses.replace(changed, overwrite=True))
    assert read_manifest(config.out).domain("a").val_dir is not None
    # An --overwrite run killed after the manifest went: the rerun clears the remnant.
    (Path(config.out) / "streammix.yaml").unlink()
    with pytest.raises(BuildError, match="holds no streammix build"):
        run_build(config)
    run_build(dataclasses.replace(config, overwrite=True))
    assert output_files(Path(config.out)) == before


def test_strict_stops_at_the_first_bad_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", generated_records(5), raw_lines=[b"{oops"])
    with pytest.raises(BuildError, match=r"a\.jsonl:6: malformed json .*--strict"):
        run_build(_config(tmp_path, {"a": str(path)}, strict=True))


def test_domain_without_usable_documents_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(BuildError, match="domain 'a' has no usable documents"):
        run_build(_config(tmp_path, {"a": str(path)}, id_field=None))


def test_unknown_tokenizer_path_is_an_error_before_any_output(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", generated_records(3))
    with pytest.raises(BuildError, match="no such folder"):
        run_build(_config(tmp_path, {"a": str(path)}, tokenizer=str(tmp_path / "nope")))
    (tmp_path / "empty_tok").mkdir()
    with pytest.raises(BuildError, match="cannot load a tokenizer"):
        run_build(_config(tmp_path, {"a": str(path)}, tokenizer=str(tmp_path / "empty_tok")))
    assert not (tmp_path / "out").exists()


def test_pool_runs_prepare_and_cluster_with_the_same_output(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    """workers=2 (cluster in a pool process), also resumed with one unit left, equals workers=0."""
    sources = _corpus(tmp_path)
    changes = {"tokenizer": str(tokenizer_dir), "val_fraction": 0.2, "dedup": True}
    reference = _config(tmp_path, sources, out=str(tmp_path / "ref"), **changes)
    run_build(reference)
    pooled = _config(tmp_path, sources, out=str(tmp_path / "pool"), workers=2, **changes)
    assert run_build(pooled).stage_seconds["cluster"] >= 0
    assert output_files(Path(pooled.out)) == output_files(Path(reference.out))
    resumed = dataclasses.replace(pooled, out=str(tmp_path / "resumed"))
    work = Path(resumed.out) / ".streammix-work"
    original = pipeline.run_write

    def stop_before_write(*args, **kwargs):
        raise KeyboardInterrupt

    pipeline.run_write = stop_before_write
    try:
        with pytest.raises(KeyboardInterrupt):
            run_build(resumed)
    finally:
        pipeline.run_write = original
    (work / "cluster.parquet").unlink()
    sorted((work / "units").glob("*.parquet"))[2].unlink()  # a pool of one process
    run_build(resumed)
    assert output_files(Path(resumed.out)) == output_files(Path(reference.out))


def test_cluster_errors_in_a_pool_process_reach_the_caller(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(BuildError, match="domain 'a' has no usable documents"):
        run_build(_config(tmp_path, {"a": str(path)}, id_field=None, workers=2))


def test_pool_call_without_a_pool_runs_in_this_process() -> None:
    workers = pipeline._Workers(workers=2, settings=None)
    assert workers.call(sum, [1, 2]) == 3


def test_a_build_imports_neither_torch_nor_streaming(tmp_path: Path) -> None:
    """The build writes MDS itself: the heavy ML imports would cost seconds per build."""
    path = write_jsonl(tmp_path / "a.jsonl", generated_records(30, seed=4, prefix="x"))
    script = (
        "import sys\n"
        "from streammix.cli.build import main\n"
        f"main(['--domain', 'a={path}', '--out', {str(tmp_path / 'out')!r}, '--workers', '1',"
        " '--quiet'])\n"
        "print(sorted(m for m in ('torch', 'streaming', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "streammix.yaml").exists()


def test_two_pool_workers_cap_their_threads_and_build_what_one_worker_builds(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    """Each worker of a real 2-process pool reports one thread for the tokenizer, numba and
    Arrow; the output of 2 workers is byte-identical to that of 1."""
    from streammix.pipeline.plan import list_inputs, run_plan
    from streammix.pipeline.prepare import settings_from_config

    sources = _corpus(tmp_path)
    config = _config(tmp_path, sources, out=str(tmp_path / "two"), workers=2,
                     tokenizer=str(tokenizer_dir))
    work = tmp_path / "work"
    work.mkdir()
    plan = run_plan(config, work, list_inputs(config))
    _, tokenizer_json = pipeline._check_tokenizer_and_scorer(config)
    settings = settings_from_config(config, work, tokenizer_json)
    with pipeline._Workers(workers=2, settings=settings) as workers:
        stats = pipeline._run_prepare(config, plan, workers)
    reports = [dict(s.worker_threads) for s in stats]
    assert len(stats) >= 4 and all(reports)
    assert len({report.pop("pid") for report in reports}) == 2  # both workers took units
    assert all(
        report == {"arrow_cpu": "1", "numba": "1", "tokenizers_parallelism": "false"}
        for report in reports
    )
    run_build(config)
    one = dataclasses.replace(config, out=str(tmp_path / "one"), workers=1)
    run_build(one)
    assert output_files(Path(config.out)) == output_files(Path(one.out))

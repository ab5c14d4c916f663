"""Builds from and to S3-compatible object storage (moto's server on 127.0.0.1).

Inputs given as ``s3a://``/``s3://`` URLs must give the same samples, metadata, duplicate
clusters and rejects as the same files on disk, with either engine; an ``s3://`` output is
uploaded with the manifest last and opened by StreamMixDataset with ``remote=``; a missing
bucket or prefix is a clear error.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from build_helpers import generated_records, write_jsonl
from test_spark_build import _config, _corpus, _samples

from streammix.pipeline.config import BuildError, DomainSpec
from streammix.pipeline.local import run_build

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from s3_server import BUCKET, s3_fixture  # noqa: E402, F401 - the fixture 's3'

PUT_LINE = re.compile(r'"PUT /(?P<key>[^ ?]+)(?:\?[^ ]*)? HTTP/1\.\d" (?P<status>\d+)')


def _upload_corpus(s3, folder: Path, prefix: str) -> list[DomainSpec]:
    """The equivalence corpus, on disk and under ``prefix`` (domains as s3a:// URLs)."""
    domains = _corpus(folder)
    s3.upload(folder, prefix)
    return [
        DomainSpec(
            name=spec.name,
            source=f"s3a://{BUCKET}/{prefix}/{Path(spec.source).relative_to(folder).as_posix()}",
        )
        for spec in domains
    ]


def _mixed_kinds(folder: Path) -> list[DomainSpec]:
    """A parquet domain (several row groups) and a folder of text files, one per document."""
    records = generated_records(50, seed=5, prefix="pq")
    pq.write_table(pa.Table.from_pylist(records), folder / "docs.parquet", row_group_size=7)
    (folder / "notes" / "deeper").mkdir(parents=True)
    for i, record in enumerate(generated_records(12, seed=6, prefix="note")):
        sub = "deeper/" if i % 3 == 0 else ""
        (folder / "notes" / f"{sub}n{i:02d}.txt").write_text(record["text"])
    (folder / "notes" / ".hidden.txt").write_text("skipped like a hidden file")
    return [
        DomainSpec(name="tables", source=str(folder / "docs.parquet")),
        DomainSpec(name="notes", source=str(folder / "notes")),
    ]


def _as_urls(domains: list[DomainSpec], folder: Path, prefix: str) -> list[DomainSpec]:
    return [
        DomainSpec(
            name=d.name,
            source=f"s3://{BUCKET}/{prefix}/{Path(d.source).relative_to(folder).as_posix()}",
        )
        for d in domains
    ]


def _rejects(out: Path, *roots: str) -> list[str]:
    text = (out / "rejects.jsonl").read_text()
    for root in roots:
        text = text.replace(root, "ROOT")
    return text.splitlines()


def test_local_engine_reads_objects_like_files(s3, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    domains = _corpus(data) + _mixed_kinds(data)
    s3.upload(data, "mixed")
    remote = _as_urls(domains, data, "mixed")
    endpoint = s3.endpoint
    run_build(_config(domains, tmp_path / "disk"))
    run_build(_config(remote, tmp_path / "objects", s3_endpoint_url=endpoint))
    assert _samples(tmp_path / "objects")[0] == _samples(tmp_path / "disk")[0]
    assert _rejects(tmp_path / "objects", f"s3://{BUCKET}/mixed") == _rejects(
        tmp_path / "disk", str(data)
    )


def test_an_s3_output_is_uploaded_manifest_last_and_read_with_remote(s3, tmp_path: Path) -> None:
    from streammix import StreamMixDataset

    data = tmp_path / "data"
    data.mkdir()
    domains = _corpus(data)
    url = f"s3://{BUCKET}/built/run1"
    summary = run_build(_config(domains, url, s3_endpoint_url=s3.endpoint))
    assert summary.out == url
    s3._log_file.flush()
    puts = [m["key"] for m in PUT_LINE.finditer(s3.log.read_text()) if "built/run1" in m["key"]]
    assert puts[-1] == f"{BUCKET}/built/run1/streammix.yaml"
    assert any(key.endswith("index.json") for key in puts)
    # the same configuration again: nothing to do; another one: refused, or with --overwrite
    # replaces every object under the prefix
    again = run_build(_config(domains, url, s3_endpoint_url=s3.endpoint))
    assert again.resumed
    with pytest.raises(BuildError, match="another configuration"):
        run_build(_config(domains, url, s3_endpoint_url=s3.endpoint, seed=5))
    s3.client.put_object(Bucket=BUCKET, Key="built/run1/web/stale.bin", Body=b"old")
    run_build(_config(domains, url, s3_endpoint_url=s3.endpoint, seed=5, overwrite=True))
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="built/run1/")["Contents"]
    assert "built/run1/web/stale.bin" not in {item["Key"] for item in listed}
    run_build(_config(domains, url, s3_endpoint_url=s3.endpoint, overwrite=True))
    gc.collect()
    dataset = StreamMixDataset(remote=url, local=str(tmp_path / "cache"), batch_size=4)
    samples = [sample for _, sample in zip(range(12), iter(dataset))]
    assert len({sample["text"] for sample in samples}) == 12


def test_a_missing_bucket_or_prefix_is_a_clear_error(s3, tmp_path: Path) -> None:
    endpoint = s3.endpoint
    missing_bucket = [DomainSpec(name="web", source="s3a://no-such-bucket/web")]
    with pytest.raises(BuildError, match="domain 'web': cannot list s3a://no-such-bucket/web"):
        run_build(_config(missing_bucket, tmp_path / "a", s3_endpoint_url=endpoint))
    missing_prefix = [DomainSpec(name="web", source=f"s3a://{BUCKET}/nothing/here")]
    with pytest.raises(BuildError, match="domain 'web': no objects under"):
        run_build(_config(missing_prefix, tmp_path / "b", s3_endpoint_url=endpoint))
    data = tmp_path / "data"
    data.mkdir()
    domains = _corpus(data)
    with pytest.raises(BuildError, match="bucket 'no-such-bucket' does not exist"):
        run_build(_config(domains, "s3://no-such-bucket/out", s3_endpoint_url=endpoint))


@pytest.mark.slow
def test_spark_build_from_s3a_equals_the_local_build_from_disk(s3, tmp_path: Path) -> None:
    """Executors read the objects themselves (boto3, endpoint in the pickled settings)."""
    pytest.importorskip("pyspark")
    from streammix.pipeline.spark import run_spark_build
    from streammix.pipeline.spark_session import local_spark_session

    data = tmp_path / "data"
    data.mkdir()
    remote = _upload_corpus(s3, data, "corpus")
    local_domains = _corpus_specs(data)
    run_build(_config(local_domains, tmp_path / "local"))
    url = f"s3://{BUCKET}/spark-out"
    # PySpark keeps one JVM per Python process, with the environment of its first start
    # (another test's session may have started it before the s3 fixture set the
    # credentials), so the executors get them as executorEnv, as a cluster's would
    credentials = {f"spark.executorEnv.{key}": os.environ[key]
                   for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    spark = local_spark_session("local[2]", shuffle_partitions=3, conf=credentials)
    try:
        run_spark_build(_config(remote, url, s3_endpoint_url=s3.endpoint), spark)
    finally:
        spark.stop()
    downloaded = tmp_path / "downloaded"
    for key in s3.client.list_objects_v2(Bucket=BUCKET, Prefix="spark-out/")["Contents"]:
        target = downloaded / key["Key"].removeprefix("spark-out/")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.client.download_file(BUCKET, key["Key"], str(target))
    assert _samples(downloaded) == _samples(tmp_path / "local")
    assert _rejects(downloaded, f"s3a://{BUCKET}/corpus") == _rejects(
        tmp_path / "local", str(data)
    )


def _corpus_specs(folder: Path) -> list[DomainSpec]:
    return [
        DomainSpec(name="web", source=str(folder / "web")),
        DomainSpec(name="books", source=str(folder / "books.jsonl")),
        DomainSpec(name="code", source=str(folder / "code.jsonl")),
    ]


def test_the_cli_builds_from_and_to_object_storage(s3, tmp_path: Path, capsys) -> None:
    from streammix.cli.build import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "web").mkdir()
    write_jsonl(data / "web" / "a.jsonl", generated_records(40, seed=9, prefix="cli"))
    s3.upload(data, "cli-in")
    common = ["--domain", f"web=s3a://{BUCKET}/cli-in/web", "--s3-endpoint-url", s3.endpoint,
              "--workers", "1", "--quiet"]
    assert main([*common, "--out", f"s3://{BUCKET}/cli-out"]) == 0
    assert s3.client.head_object(Bucket=BUCKET, Key="cli-out/streammix.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--out", "s3://no-such-bucket/out"])
    assert exit_info.value.code == 2
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err


def test_a_failed_upload_leaves_no_manifest_and_a_rerun_uploads_the_staged_build(
    s3, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = _config(_corpus(data), f"s3://{BUCKET}/flaky", s3_endpoint_url=s3.endpoint,
                     staging=str(tmp_path / "staging"))
    client = config.object_store().client()
    real_upload, uploaded = client.upload_file, []

    def upload_then_fail(filename, bucket, key, *args, **kwargs):
        if len(uploaded) == 3:
            raise OSError("connection reset")
        uploaded.append(key)
        return real_upload(filename, bucket, key, *args, **kwargs)

    monkeypatch.setattr(client, "upload_file", upload_then_fail)
    with pytest.raises(BuildError, match="cannot upload .* the build is complete in"):
        run_build(config)
    keys = {item["Key"] for item in s3.client.list_objects_v2(Bucket=BUCKET, Prefix="flaky/")
            .get("Contents", [])}
    assert keys and "flaky/streammix.yaml" not in keys  # some objects, no manifest
    assert (tmp_path / "staging" / "build" / "streammix.yaml").exists()
    monkeypatch.undo()
    summary = run_build(config)
    assert summary.resumed  # the staged build was finished: only the upload ran again
    assert s3.client.head_object(Bucket=BUCKET, Key="flaky/streammix.yaml")
    assert not (tmp_path / "staging" / "build").exists()

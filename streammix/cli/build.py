"""``streammix-build``: parse flags (and an optional YAML config) into a ``BuildConfig``.

Precedence: a flag given on the command line beats the same key in ``--config``, which
beats the default. Domains from the file come first, then those from ``--domain``. Every
user mistake ends with exit status 2 and one line ``streammix-build: error: ...``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

PROG = "streammix-build"

EXAMPLES = """\
examples:
  # two jsonl domains and a folder of text files, tokenized, with a 1% validation split
  streammix-build --domain web='data/web/*.jsonl.zst' --domain books=data/books.parquet \\
      --domain code=/usr/lib/python3.11 --tokenizer ./my-tokenizer --val-fraction 0.01 \\
      --out built/ --workers 8

  # the same from a YAML file (keys are the long flag names with '_' for '-')
  #   domains: {web: 'data/web/*.jsonl.zst', books: data/books.parquet}
  #   tokenizer: ./my-tokenizer
  #   val_fraction: 0.01
  streammix-build --config build.yaml --out built/

  # near-duplicate removal across all domains (removed samples: OUT/dedup_removed.jsonl)
  streammix-build --domain web=web.jsonl --dedup --out built/

Output (OUT): one MDS Stream per domain (OUT/<domain>, OUT/<domain>-val) with a
streammix.parquet metadata sidecar, OUT/rejects.jsonl (skipped records and why) and
OUT/streammix.yaml, written last. Without --tokenizer the samples carry num_bytes (UTF-8
size) in place of num_tokens. A killed build resumes when run again with the same flags.
"""

SIZE_SUFFIXES = {
    "": 1,
    "b": 1,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --help)")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(2)


def parse_size(text: str) -> int:
    """``"64MB"`` -> 67108864 (binary multiples; a plain number is bytes)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in SIZE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64MB)")
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2).lower()]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Shard raw corpora into MDS Streams (one per domain) "
        "with per-sample metadata: token counts, quality, MinHash, clusters, diversity.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None,
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument(
        "--domain",
        action="append",
        metavar="NAME=PATH_OR_GLOB",
        help="a domain: a jsonl(.gz/.zst) or parquet file, a folder (every file "
        "inside; plain-text files are one document each) or a glob; or s3:// / s3a://"
        " object or prefix; repeatable",
    )
    io.add_argument("--config", metavar="YAML", help="read settings from a YAML file")
    io.add_argument("--out", metavar="DIR", help="output folder (new, empty, or this build's), or s3://bucket/prefix")
    io.add_argument(
        "--text-field", metavar="FIELD", help="jsonl/parquet field holding the text (default: text)"
    )
    io.add_argument(
        "--id-field",
        metavar="FIELD",
        help="field carried through as the sample id (text files: their relative path)",
    )
    io.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace a previous streammix build in --out",
    )
    meta = p.add_argument_group("tokens and metadata")
    meta.add_argument("--tokenizer", metavar="DIR", help="local Hugging Face tokenizer folder")
    meta.add_argument(
        "--quality",
        metavar="SPEC",
        help="quality scorer: heuristic (default), ngram:REFERENCE (perplexity under a "
        "Kneser-Ney 3-gram model of a domain or files, plus the heuristic rules), "
        "column:FIELD, callable:module:function or hf:/local/model",
    )
    meta.add_argument(
        "--minhash-perm", metavar="N", type=int, help="MinHash permutations (default 128)"
    )
    meta.add_argument("--minhash-seed", metavar="N", type=int, help="MinHash seed (default 1)")
    meta.add_argument(
        "--minhash-scheme", metavar="NAME", help="affine32 (default; datasketch 2.x), legacy, fast"
    )
    meta.add_argument("--shingle-unit", choices=("word", "char"), help="shingle unit (word)")
    meta.add_argument(
        "--shingle-size", metavar="N", type=int, help="shingle n-gram size (default 5)"
    )
    meta.add_argument(
        "--dedup",
        action="store_true",
        default=None,
        help="keep one sample per near-duplicate cluster",
    )
    meta.add_argument(
        "--dedup-threshold", metavar="J", type=float, help="Jaccard threshold (default 0.8)"
    )
    meta.add_argument(
        "--topic-clusters",
        metavar="K",
        type=int,
        help="number of topic clusters (k-medoids over unigram MinHash) for diversity "
        "(default 0: round(sqrt(documents)), at most 256)",
    )
    meta.add_argument(
        "--topic-shingle-size",
        metavar="N",
        type=int,
        help="word n-grams of the topic signatures (default 1: unigrams)",
    )
    meta.add_argument(
        "--topic-perm", metavar="N", type=int, help="topic MinHash permutations (default 64)"
    )
    meta.add_argument(
        "--topic-backend",
        metavar="SPEC",
        help="minhash (default) or embeddings:DIR (k-means over embeddings of a local "
        "sentence-transformers model; needs the [embeddings] extra)",
    )
    split = p.add_argument_group("validation split")
    split.add_argument(
        "--val-fraction", metavar="F", type=float, help="hold out this fraction per domain"
    )
    split.add_argument(
        "--val-samples", metavar="N", type=int, help="hold out exactly N samples per domain"
    )
    split.add_argument("--seed", metavar="N", type=int, help="seed of the split hash (default 0)")
    run = p.add_argument_group("run")
    run.add_argument("--workers", metavar="N", type=int, help="worker processes (default 1)")
    run.add_argument(
        "--max-doc-bytes", metavar="SIZE", type=parse_size, help="reject larger documents (10MB)"
    )
    run.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="stop at the first bad record instead of skipping it",
    )
    run.add_argument(
        "--compression",
        metavar="NAME",
        help="MDS shard compression: zstd (default), zstd:LEVEL (1-22), br, bz2, gz, snappy "
        "(br/bz2/gz also take :LEVEL), or none",
    )
    run.add_argument(
        "--shard-size", metavar="SIZE", type=parse_size, help="MDS shard size limit (default 64MB)"
    )
    run.add_argument(
        "--unit-size", metavar="SIZE", type=parse_size, help="input bytes per work unit (16MB)"
    )
    io.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="the S3-compatible server of s3:// and s3a:// inputs and --out (e.g. MinIO);"
        " default: AWS. Credentials and region come from boto3's standard chain",
    )
    io.add_argument(
        "--staging",
        metavar="DIR",
        help="with an s3:// --out: build here, then upload (keep it to resume; on a Spark"
        " cluster a folder the driver and executors share); default: a temporary folder",
    )
    run.add_argument("--quiet", action="store_true", default=None, help="no progress, no summary")
    engine = p.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: a process pool on this machine (default); spark: PySpark, same output"
        ' (needs pip install "streammix[spark]")',
    )
    engine.add_argument(
        "--spark-master",
        metavar="URL",
        help="with --engine spark: the master, e.g. local[8]; default: spark-submit's, else local[*]",
    )
    return p


# YAML key (== flag dest) -> BuildConfig field.
FIELD_OF = {
    "out": "out",
    "text_field": "text_field",
    "id_field": "id_field",
    "tokenizer": "tokenizer",
    "quality": "scorer",
    "minhash_perm": "minhash_num_perm",
    "minhash_seed": "minhash_seed",
    "minhash_scheme": "minhash_scheme",
    "dedup": "dedup",
    "dedup_threshold": "dedup_threshold",
    "topic_clusters": "topic_clusters",
    "topic_shingle_size": "topic_shingle_size",
    "topic_perm": "topic_num_perm",
    "topic_backend": "topic_backend",
    "val_fraction": "val_fraction",
    "val_samples": "val_samples",
    "seed": "seed",
    "workers": "workers",
    "max_doc_bytes": "max_doc_bytes",
    "strict": "strict",
    "compression": "compression",
    "shard_size": "size_limit",
    "unit_size": "unit_bytes",
    "overwrite": "overwrite",
    "s3_endpoint_url": "s3_endpoint_url",
    "staging": "staging",
}
SHINGLE_KEYS = {"shingle_unit": "unit", "shingle_size": "n"}


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream) or {}
    except OSError as exc:
        _fail(f"--config {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        _fail(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})")
    if not isinstance(data, dict):
        _fail(f"--config {path}: expected a mapping of settings")
    allowed = set(FIELD_OF) | set(SHINGLE_KEYS) | {"domains", "quiet"}
    unknown = sorted(
        str(k).replace("-", "_") for k in data if str(k).replace("-", "_") not in allowed
    )
    if unknown:
        _fail(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _domains(file_domains: Any, flag_domains: list[str] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if isinstance(file_domains, dict):
        pairs += [(str(k), str(v)) for k, v in file_domains.items()]
    elif isinstance(file_domains, list):
        for item in file_domains:
            if not isinstance(item, dict) or not {"name", "path"} <= set(item):
                _fail("--config: each entry of 'domains' needs 'name' and 'path'")
            pairs.append((str(item["name"]), str(item["path"])))
    elif file_domains is not None:
        _fail("--config: 'domains' must be a mapping NAME: PATH or a list of {name, path}")
    for text in flag_domains or []:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            _fail(f"--domain {text!r}: expected NAME=PATH_OR_GLOB")
        pairs.append((name, path))
    return pairs


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge flags over the YAML file into a ``BuildConfig`` (raises ``BuildError``)."""
    from streammix.metadata.shingle import ShingleConfig
    from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec

    settings = _read_yaml(args.config) if args.config else {}
    for key in (*FIELD_OF, *SHINGLE_KEYS, "quiet"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    fields: dict[str, Any] = {FIELD_OF[k]: v for k, v in settings.items() if k in FIELD_OF}
    if isinstance(fields.get("compression"), str) and fields["compression"].lower() == "none":
        fields["compression"] = None
    for key in ("size_limit", "unit_bytes", "max_doc_bytes"):
        if isinstance(fields.get(key), str):
            try:
                fields[key] = parse_size(fields[key])
            except argparse.ArgumentTypeError as exc:
                raise BuildError(f"{key}: {exc}") from None
    shingle = {SHINGLE_KEYS[k]: settings[k] for k in SHINGLE_KEYS if k in settings}
    try:
        if shingle:
            fields["shingle"] = ShingleConfig(**shingle)
    except (TypeError, ValueError) as exc:
        raise BuildError(f"shingle settings: {exc}") from None
    if fields.get("workers") is not None and fields["workers"] < 1:
        raise BuildError(f"--workers must be >= 1, got {fields['workers']}")
    domains = tuple(
        DomainSpec(name=n, source=s) for n, s in _domains(settings.get("domains"), args.domain)
    )
    fields["progress"] = not settings.get("quiet", False)
    try:
        return BuildConfig(domains=domains, out=fields.pop("out", None) or "", **fields)
    except TypeError as exc:
        raise BuildError(f"bad setting type: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--pairs" in argv:  # preference pairs: a build of its own (streammix.pipeline.pairs)
        from streammix.cli.build_pairs import main as pairs_main

        return pairs_main([a for a in argv if a != "--pairs"])
    args = build_parser().parse_args(argv)
    from streammix.format.manifest import ManifestError
    from streammix.format.readers import InputError
    from streammix.pipeline.config import BuildError

    try:
        config = config_from_args(args)
        if args.engine == "spark":
            summary = _run_on_spark(config, args.spark_master)
        else:
            if args.spark_master:
                raise BuildError("--spark-master needs --engine spark")
            from streammix.pipeline.local import run_build

            summary = run_build(config)
    except (BuildError, InputError, ManifestError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; run the same command again to resume\n")
        return 130
    if config.progress:
        print(summary.format())
    return 0


def _run_on_spark(config: Any, master: str | None) -> Any:
    from streammix.pipeline.spark import run_spark_build
    from streammix.pipeline.spark_session import local_spark_session

    spark = local_spark_session(master)
    try:
        return run_spark_build(config, spark)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of ``streammix-build`` against a plain ``MDSWriter`` loop over the same documents.

The corpus is real text present on every machine: the Python standard library's sources,
cut into documents of about ``--doc-bytes`` bytes and written to one jsonl file. A byte-level
BPE tokenizer is trained on it in process (no downloads). In one run, repeated ``--repeats``
times (the median is reported), the script measures:

- ``plain text``: read the jsonl, ``json.loads``, write ``text`` with ``MDSWriter`` (zstd);
- ``plain tokens``: the same plus batched tokenization (``tokens``, ``num_tokens`` columns);
- ``build w=1`` / ``build w=2``: the ``streammix-build`` command (a real process) with
  ``--tokenizer`` and the default heuristic quality scorer, MinHash, clusters, diversity,
  sidecar and manifest, with 1 and 2 worker processes.

Every measurement is the wall-clock time of a fresh process doing the complete step, so
each side pays its own start-up: the plain loop imports ``streaming`` (hence torch) and
transformers, as a user's script would; the build imports neither (its own MDS writer and
the ``tokenizers`` shortcut), which is part of its advantage. Goals:
``build w=1`` at most 2x ``plain tokens``; ``build w=2`` at least 1.7x faster than
``build w=1``.

With ``--spark`` the same run also builds the corpus with ``--engine spark`` on ``local[1]``
and ``local[2]`` (the ``[spark]`` extra), each in a fresh process that reports three times:
the session start (JVM), a first build (which also starts the Python workers and loads
numba's kernels) and a second build of the same corpus into a new folder on the warm session.
The fixed start-up cost is the session start plus (first - second); the per-document
throughput once running is documents / second build. Goal: ``local[2]`` at least 1.6x
``local[1]`` on the second build.

    python3 benchmarks/bench_build.py            # 20000 documents, 3 repeats
    python3 benchmarks/bench_build.py --quick    # 3000 documents, 1 repeat
    python3 benchmarks/bench_build.py --quick --spark
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_corpus(folder: Path, num_docs: int, doc_bytes: int) -> Path:
    """Standard-library sources cut into documents at line boundaries, as jsonl."""
    stdlib = Path(json.__file__).parent.parent
    path = folder / "corpus.jsonl"
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for source in sorted(stdlib.rglob("*.py")):
            try:
                text = source.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            piece: list[str] = []
            size = 0
            for line in text.splitlines(keepends=True):
                piece.append(line)
                size += len(line)
                if size >= doc_bytes:
                    if "".join(piece).strip():
                        out.write(json.dumps({"text": "".join(piece)}) + "\n")
                        written += 1
                    piece, size = [], 0
                    if written >= num_docs:
                        return path
    return path


def make_tokenizer(folder: Path, corpus: Path) -> Path:
    """The demo's byte-level BPE (vocabulary 8000) trained on the first 2000 documents."""
    from streammix.demo.tokenizer import train_tokenizer

    with open(corpus, encoding="utf-8") as stream:
        sample = [json.loads(line)["text"] for _, line in zip(range(2000), stream)]
    return train_tokenizer(sample, folder, vocab_size=8000)


def plain_loop(corpus: Path, out: Path, tokenizer_dir: Path | None) -> None:
    """The baseline: what a user would write without streammix."""
    import numpy as np
    from streaming import MDSWriter

    columns = {"text": "str"}
    backend = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(str(tokenizer_dir)).backend_tokenizer
        columns |= {"tokens": "ndarray:uint16", "num_tokens": "int32"}
    with (
        MDSWriter(columns=columns, out=str(out), compression="zstd") as writer,
        open(corpus, encoding="utf-8") as stream,
    ):
        batch: list[str] = []
        for line in stream:
            batch.append(json.loads(line)["text"])
            if len(batch) == 256:
                _write_batch(writer, batch, backend, np)
                batch = []
        _write_batch(writer, batch, backend, np)


def _write_batch(writer, texts: list[str], backend, np) -> None:
    if backend is None:
        for text in texts:
            writer.write({"text": text})
        return
    for text, encoding in zip(texts, backend.encode_batch(texts, add_special_tokens=False)):
        tokens = np.asarray(encoding.ids, dtype=np.uint16)
        writer.write({"text": text, "tokens": tokens, "num_tokens": len(tokens)})


def timed(function, *args) -> tuple[float, float]:
    """Wall-clock seconds and CPU seconds (user + system of the child processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    function(*args)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_plain(corpus: Path, out: Path, tokenizer_dir: Path | None) -> None:
    """The plain loop in a fresh process, so it pays the same imports as the build command."""
    command = [sys.executable, __file__, "--plain-loop", str(corpus), str(out)]
    if tokenizer_dir is not None:
        command.append(str(tokenizer_dir))
    subprocess.run(command, check=True)


def run_cli(corpus: Path, out: Path, tokenizer_dir: Path, workers: int, unit_size: str) -> None:
    command = [
        sys.executable,
        "-m",
        "streammix.cli.build",
        "--domain",
        f"code={corpus}",
        "--tokenizer",
        str(tokenizer_dir),
        "--workers",
        str(workers),
        "--out",
        str(out),
        "--unit-size",
        unit_size,
    ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    print(result.stdout.strip().splitlines()[-1], file=sys.stderr)  # the build's stage times


def spark_run(master: str, corpus: Path, out: Path, tokenizer_dir: Path, unit_size: str) -> None:
    """One Spark measurement (fresh process): prints JSON seconds of start, first, second."""
    from streammix.cli.build import parse_size
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.spark import run_spark_build
    from streammix.pipeline.spark_session import local_spark_session

    started = time.perf_counter()
    spark = local_spark_session(master, shuffle_partitions=4)
    seconds = {"start": time.perf_counter() - started}
    for name in ("first", "second"):
        config = BuildConfig(
            domains=(DomainSpec(name="code", source=str(corpus)),),
            out=str(out / name),
            tokenizer=str(tokenizer_dir),
            unit_bytes=parse_size(unit_size),
            progress=False,
        )
        started = time.perf_counter()
        run_spark_build(config, spark)
        seconds[name] = time.perf_counter() - started
    spark.stop()
    print(json.dumps(seconds))


def run_spark(corpus: Path, out: Path, tokenizer_dir: Path, master: str, unit_size: str) -> dict:
    command = [sys.executable, __file__, "--spark-run", master, str(corpus), str(out),
               str(tokenizer_dir), unit_size]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000, help="number of documents")
    parser.add_argument("--doc-bytes", type=int, default=2000, help="approximate document size")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--quick", action="store_true", help="3000 documents, 1 repeat")
    parser.add_argument("--unit-size", default="2MB", help="streammix-build --unit-size")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--spark", action="store_true", help="also Spark local[1] and local[2]")
    parser.add_argument("--plain-loop", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--spark-run", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spark_run:
        master, corpus, out, tokenizer, unit_size = args.spark_run
        spark_run(master, Path(corpus), Path(out), Path(tokenizer), unit_size)
        return
    if args.plain_loop:
        corpus, out, *tokenizer = args.plain_loop
        plain_loop(Path(corpus), Path(out), Path(tokenizer[0]) if tokenizer else None)
        return
    if args.quick:
        args.docs, args.repeats, args.unit_size = 3000, 1, "512kb"
    # The plain loop and each build worker tokenize on one thread: same work per core.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    folder = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        corpus = make_corpus(folder, args.docs, args.doc_bytes)
        num_docs = sum(1 for _ in open(corpus, encoding="utf-8"))
        megabytes = corpus.stat().st_size / 1e6
        tokenizer_dir = make_tokenizer(folder / "tok", corpus)
        cases = {
            "plain text": lambda o: run_plain(corpus, o, None),
            "plain tokens": lambda o: run_plain(corpus, o, tokenizer_dir),
            "build w=1": lambda o: run_cli(corpus, o, tokenizer_dir, 1, args.unit_size),
            "build w=2": lambda o: run_cli(corpus, o, tokenizer_dir, 2, args.unit_size),
        }
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, case in cases.items():
                out = folder / "out"
                shutil.rmtree(out, ignore_errors=True)
                wall, cpu_seconds = timed(case, out)
                times[name].append(wall)
                cpu[name].append(cpu_seconds)
        spark: dict[str, list[dict]] = {}
        if args.spark:
            for _ in range(args.repeats):
                for master in ("local[1]", "local[2]"):
                    out = folder / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    spark.setdefault(master, []).append(
                        run_spark(corpus, out, tokenizer_dir, master, args.unit_size)
                    )
        table = report(times, cpu, num_docs, megabytes)
        if spark:
            table += "\n" + spark_report(spark, median_w1=statistics.median(times["build w=1"]),
                                         num_docs=num_docs)
        table += "\nload average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}".format(
            *load_before
        )
        table += ", at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(table)
        if args.output is not None:
            args.output.write_text(table + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(
    times: dict[str, list[float]], cpu: dict[str, list[float]], num_docs: int, megabytes: float
) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    lines = [
        f"{num_docs} documents, {megabytes:.1f} MB, {os.cpu_count()} cores",
        "",
        "| step | median wall s | docs/s | MB/s | median CPU s | wall runs (s) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, seconds in median.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        lines.append(
            f"| {name} | {seconds:.2f} | {num_docs / seconds:,.0f} | {megabytes / seconds:.2f}"
            f" | {cpu_median[name]:.2f} | {runs} |"
        )
    ratio = median["build w=1"] / median["plain tokens"]
    cpu_ratio = cpu_median["build w=1"] / cpu_median["plain tokens"]
    lines += [
        "",
        f"build w=1 / plain tokens: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (goal <= 2x)",
        f"speed-up w=1 -> w=2: {median['build w=1'] / median['build w=2']:.2f}x (goal >= 1.7x)",
    ]
    return "\n".join(lines)


def spark_report(runs: dict[str, list[dict]], *, median_w1: float, num_docs: int) -> str:
    lines = [
        "",
        "| Spark | session start s | first build s | second build s | fixed cost s"
        " | docs/s once running |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    second = {}
    for master, values in runs.items():
        median = {k: statistics.median(v[k] for v in values) for k in ("start", "first", "second")}
        second[master] = median["second"]
        fixed = median["start"] + median["first"] - median["second"]
        lines.append(
            f"| {master} | {median['start']:.2f} | {median['first']:.2f} | {median['second']:.2f}"
            f" | {fixed:.2f} | {num_docs / median['second']:,.0f} |"
        )
    lines += [
        "",
        f"Spark local[1] -> local[2] (second build): "
        f"{second['local[1]'] / second['local[2]']:.2f}x (goal >= 1.6x); "
        f"local engine build w=1 (whole process) / Spark local[1] second build: "
        f"{median_w1 / second['local[1]']:.2f}x",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

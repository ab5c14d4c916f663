"""Issue 16's goals for SampleMix metadata, measured on real builds (``--goals`` of
``bench_quality.py`` runs this).

Corpora (everything from files on this machine, see ``streammix.demo.local_corpus``):

* ``demo``: the demo corpus, ``--demo-docs`` documents per domain (code, docs, packages);
* ``injected``: the same plus, in every domain, ``--inject`` documents of each pathology:
  near-copies (three copies of a document with two words changed each, so a near-duplicate
  cluster of four), boilerplate (navigation-menu lines) and random-character junk.

Each corpus is built with ``streammix-build --workers 2`` by this checkout with
``--quality ngram:DEMO/docs.jsonl`` (the new continuous score; the reference is the demo
corpus's ``docs`` file, so clean text for both corpora, as CCNet uses an outside reference:
``ngram:docs`` on the injected corpus would train the model on the injected junk itself
and score it in-sample) and with ``--quality heuristic``, and by the baseline commit (``--baseline``, the code
before issue 16) exported with ``git archive``; every build runs in its own process, and
the timed builds run after one untimed warm-up build per code version (numba caches).
The ``demo`` builds run once; the ``injected`` builds ``--repeats`` times, interleaved,
and the build time ratio compares the fastest run of each (the machine is shared).
Reported per build: the number of distinct values of quality (``quality_norm``) and
diversity and the share of the most common value, the topic cluster size histogram, and
for the injected corpus the share of each pathology in the bottom quartile of
``p = 0.8 * diversity + 0.2 * quality_norm`` over the whole build; and the build times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ("code", "docs", "packages")
KINDS = ("copy", "boilerplate", "junk")
MENU = [
    "Home",
    "Contact us",
    "Privacy policy",
    "Login",
    "Sign up",
    "Terms of use",
    "Cart",
    "About",
    "Careers",
    "Help center",
    "Newsletter",
    "Cookie settings",
]


def _near_copy(text: str, rnd: random.Random) -> str:
    words = text.split(" ")
    for _ in range(2):
        words[rnd.randrange(len(words))] = f"edit{rnd.randrange(10**6)}"
    return " ".join(words)


def _pathologies(texts: list[str], count: int, rnd: random.Random) -> list[dict]:
    docs = []
    long_enough = [t for t in texts if len(t.split(" ")) > 50]
    for i in range(count):
        source = long_enough[rnd.randrange(len(long_enough))]
        for c in range(3):
            docs.append({"text": _near_copy(source, rnd), "id": f"inject-copy-{i}-{c}"})
        lines = [" | ".join(rnd.sample(MENU, 4)) for _ in range(rnd.randint(20, 60))]
        docs.append({"text": "\n".join(lines), "id": f"inject-boilerplate-{i}"})
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#$%&*@!"
        junk = " ".join(
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 10)))
            for _ in range(rnd.randint(100, 400))
        )
        docs.append({"text": junk, "id": f"inject-junk-{i}"})
    return docs


def make_corpora(root: Path, docs: int, inject: int) -> dict[str, Path]:
    from streammix.demo.local_corpus import collect_local_corpus

    demo = root / "demo"
    paths = collect_local_corpus(demo, max_docs_per_domain=docs)
    injected = root / "injected"
    injected.mkdir()
    rnd = random.Random(16)
    for name in DOMAINS:
        lines = paths[name].read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines]
        extra = [json.dumps(d) for d in _pathologies(texts, inject, rnd)]
        mixed = lines + extra
        random.Random(len(mixed)).shuffle(mixed)
        (injected / f"{name}.jsonl").write_text("\n".join(mixed) + "\n", encoding="utf-8")
    return {"demo": demo, "injected": injected}


def run_build(code: Path, corpus: Path, out: Path, quality: str) -> float:
    args = [f"--domain={d}={corpus / (d + '.jsonl')}" for d in DOMAINS]
    args += [
        "--out",
        str(out),
        "--id-field",
        "id",
        "--workers",
        "2",
        "--quiet",
        "--quality",
        quality,
    ]
    script = "import sys; from streammix.cli.build import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(code))
    started = time.perf_counter()
    done = subprocess.run(  # cwd: the code's own folder, so '' on sys.path finds it
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(code),
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"build failed ({code}): {done.stderr[-2000:]}")
    return elapsed


def read_build(out: Path) -> dict[str, np.ndarray]:
    columns = {"quality_norm": [], "diversity": [], "topic_cluster_id": [], "id": [], "domain": []}
    for d, name in enumerate(DOMAINS):
        table = pq.read_table(out / name / "streammix.parquet")
        for key in ("quality_norm", "diversity", "topic_cluster_id"):
            columns[key].append(table[key].to_numpy())
        columns["id"].append(np.array(table["id"].to_pylist(), dtype=object))
        columns["domain"].append(np.full(table.num_rows, d))
    return {k: np.concatenate(v) for k, v in columns.items()}


def top_share(values: np.ndarray) -> tuple[int, float]:
    _, counts = np.unique(values, return_counts=True)
    return int(counts.size), float(counts.max() / values.size)


SIZE_BINS = ((1, 1), (2, 4), (5, 9), (10, 24), (25, 49), (50, 99), (100, 249), (250, 10**9))


def size_histogram(cluster_id: np.ndarray) -> str:
    _, sizes = np.unique(cluster_id, return_counts=True)
    parts = []
    for lo, hi in SIZE_BINS:
        n = int(((sizes >= lo) & (sizes <= hi)).sum())
        if n:
            label = str(lo) if lo == hi else (f"{lo}+" if hi > 10**6 else f"{lo}-{hi}")
            parts.append(f"{label}: {n}")
    return (
        f"{sizes.size} clusters, largest {sizes.max()} ({sizes.max() / cluster_id.size:.1%}),"
        f" singletons hold {(sizes == 1).sum() / cluster_id.size:.1%} of samples; sizes "
        + ", ".join(parts)
    )


def report(label: str, data: dict[str, np.ndarray], injected: bool) -> list[str]:
    lines = [f"### {label}", ""]
    lines.append(
        "| domain | samples | quality distinct | quality top share | "
        "diversity distinct | diversity top share |"
    )
    lines.append("|---|---|---|---|---|---|")
    for d, name in [*enumerate(DOMAINS), (-1, "all")]:
        mask = data["domain"] == d if d >= 0 else np.ones(data["domain"].size, bool)
        qd, qs = top_share(data["quality_norm"][mask])
        dd, ds = top_share(data["diversity"][mask])
        lines.append(f"| {name} | {mask.sum()} | {qd} | {qs:.1%} | {dd} | {ds:.1%} |")
    lines += ["", "topic clusters: " + size_histogram(data["topic_cluster_id"])]
    if injected:
        p = 0.8 * data["diversity"].astype(np.float64) + 0.2 * data["quality_norm"]
        bottom = p <= np.quantile(p, 0.25)
        ids = data["id"]
        parts = []
        for kind in KINDS:
            mask = np.array([str(i).startswith(f"inject-{kind}-") for i in ids])
            parts.append(f"{kind} {bottom[mask].mean():.0%} of {mask.sum()}")
        lines.append(
            "injected documents in the bottom quartile of p (alpha 0.8): " + ", ".join(parts)
        )
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-docs", type=int, default=300, help="documents per demo domain")
    parser.add_argument("--inject", type=int, default=10, help="documents per pathology")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs on 'injected'")
    parser.add_argument("--baseline", default="f43ddd0", help="git commit of the baseline code")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        base_code = root / "baseline-code"
        base_code.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline, "streammix"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base_code)], input=archive, check=True)
        corpora = make_corpora(root, args.demo_docs, args.inject)
        builds = {  # label -> (code, quality)
            "baseline (heuristic, LSH topics)": (base_code, "heuristic"),
            "new, --quality heuristic": (REPO, "heuristic"),
            "new, --quality ngram:demo/docs.jsonl": (
                REPO,
                f"ngram:{corpora['demo'] / 'docs.jsonl'}",
            ),
        }
        for code in (base_code, REPO):  # warm-up: numba caches, imports
            run_build(code, corpora["demo"], root / f"warm-{code.name}", "heuristic")
        lines = [
            f"corpora: {args.demo_docs} documents per demo domain; injected corpus adds "
            f"{args.inject} x (3 near-copies, 1 boilerplate, 1 junk) per domain",
            "",
        ]
        times: dict[tuple[str, str], list[float]] = {}
        for corpus_name, corpus in corpora.items():
            repeats = args.repeats if corpus_name == "injected" else 1
            for repeat in range(repeats):  # interleaved, so load changes hit every build
                for label, (code, quality) in builds.items():
                    out = root / f"{corpus_name}-{label[:3]}-{quality[:5]}-{repeat}"
                    seconds = run_build(code, corpus, out, quality)
                    times.setdefault((corpus_name, label), []).append(seconds)
                    if repeat == 0:
                        data = read_build(out)
                        lines += report(f"{corpus_name}: {label}", data, corpus_name == "injected")
        lines += [
            "| corpus | build | wall seconds (each run) | ratio of the fastest runs to baseline |",
            "|---|---|---|---|",
        ]
        for (corpus_name, label), runs in times.items():
            base = min(times[(corpus_name, next(iter(builds)))])
            each = ", ".join(f"{t:.1f}" for t in runs)
            lines.append(f"| {corpus_name} | {label} | {each} | {min(runs) / base:.2f}x |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

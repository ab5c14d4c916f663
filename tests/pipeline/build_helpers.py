"""Shared helpers for the build tests: corpora, a tiny tokenizer, output comparison."""

from __future__ import annotations

import json
import os
from pathlib import Path

STDLIB = Path(json.__file__).parent.parent


def stdlib_glob(package: str = "json") -> str:
    """A glob of real Python sources present on every machine (one document per file)."""
    return str(STDLIB / package / "*.py")


def write_jsonl(path: Path, records: list, *, raw_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as stream:
        for record in records:
            stream.write(json.dumps(record).encode("utf-8") + b"\n")
        for line in raw_lines:
            stream.write(line + b"\n")
    return path


def generated_records(count: int, *, seed: int = 0, prefix: str = "doc") -> list[dict]:
    """Documents with varied words, so MinHash sees distinct texts."""
    import random

    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "model",
        "token",
        "stream",
        "river",
        "stone",
        "garden",
        "winter",
        "signal",
        "matrix",
        "forest",
        "orange",
        "violet",
        "copper",
    ]
    records = []
    for i in range(count):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
        records.append(
            {"text": f"{prefix} {i}. {body}.", "id": f"{prefix}-{i}", "score": rng.random()}
        )
    return records


def make_tokenizer(folder: Path) -> Path:
    """Train a tiny byte-level BPE in process (no downloads) and save it as a fast tokenizer."""
    from streammix.demo.tokenizer import train_tokenizer

    corpus = [r["text"] for r in generated_records(200)]
    corpus += [p.read_text() for p in sorted((STDLIB / "json").glob("*.py"))]
    return train_tokenizer(corpus, folder, vocab_size=400)


def output_files(out: Path) -> dict[str, bytes]:
    """Every file of a finished build, by relative path (the comparison of two builds)."""
    found = {}
    for root, _, names in os.walk(out):
        for name in names:
            path = Path(root) / name
            found[str(path.relative_to(out))] = path.read_bytes()
    return found

"""The README's Build, Plan and Train snippets run as written, at tiny scale.

The test reads README.md, takes every ``streammix-build`` and ``streammix plan`` command from
its ```bash blocks (continuation lines joined) and every ```python block, and runs them in
README order in an empty folder that holds the inputs the Build snippet names
(``data/web/*.jsonl.zst``, ``data/code.parquet``, ``data/papers/``, ``path/to/hf-tokenizer``,
made here from a seeded word list). The commands run through ``bash -c`` (so the glob
expands as in a shell); the python blocks run one after the other in one fresh interpreter,
as a reader pasting them would.

Only sizes, worker counts and a cache path change, through ``SUBSTITUTIONS``: exact strings
of the README mapped to tiny values. Every key must occur in the README, so editing a
snippet without updating the mapping fails here instead of silently running the full size.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent

# README text -> what the test runs instead (sizes only; "{tmp}" is the test's folder).
SUBSTITUTIONS = {
    "--val-samples 500": "--val-samples 8",         # held-out documents per domain
    "--workers 8": "--workers 1",                   # build processes
    "--token-budget 2e9": "--token-budget 2e4",     # the plan's budget for a tiny build
    "/tmp/cache/built": "{tmp}/cache/built",        # the streaming cache, inside the test folder
    "max_seq_len=1024": "max_seq_len=64",           # context length of the collator
    "n_positions=1024, n_layer=12, n_head=12, n_embd=768": "n_positions=64, n_layer=1, n_head=2, n_embd=32",
    "num_workers=2": "num_workers=0",               # DataLoader workers (each imports torch)
    'max_duration="10000ba"': 'max_duration="6ba"',  # training length
}
COMMANDS = ("streammix-build ", "streammix plan ")

WORDS = (
    "data mixing weights domain sample order shard token model train loss held out stream "
    "batch rank worker seed plan budget quality diversity cluster topic signature"
).split()


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


QUICK_START = ("## Quick start", "\n## ")  # the section these snippets come from


def quick_start(text: str) -> str:
    """The README's Quick start section (Build, Plan, Train): the path a new user runs."""
    start = text.index(QUICK_START[0])
    end = text.find(QUICK_START[1], start + len(QUICK_START[0]))
    return text[start:end if end >= 0 else len(text)]


def readme_snippets(text: str) -> tuple[list[str], str]:
    """The streammix shell commands and the python blocks (joined) of the Quick start."""
    commands, python = [], []
    for language, body in readme_blocks(quick_start(text)):
        if language == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                line = " ".join(line.split())
                if line.startswith(COMMANDS):
                    commands.append(line)
        elif language == "python":
            python.append(body)
    return commands, "\n".join(python)


def substitute(text: str, tmp: Path) -> str:
    for old, new in SUBSTITUTIONS.items():
        text = text.replace(old, new.format(tmp=tmp))
    return text


def _document(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))) + "."


def make_inputs(root: Path) -> None:
    """The files and the tokenizer the README's Build snippet reads, 40 documents a domain."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    from streammix.demo.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = {d: [_document(rng) for _ in range(40)] for d in ("web", "code", "papers")}
    (root / "data/web").mkdir(parents=True)
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts["web"])
    (root / "data/web/part-000.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(lines.encode())
    )
    pq.write_table(pa.table({"text": texts["code"]}), root / "data/code.parquet")
    (root / "data/papers").mkdir()
    for i, text in enumerate(texts["papers"]):
        (root / f"data/papers/paper-{i:03d}.txt").write_text(text)
    train_tokenizer(
        [t for group in texts.values() for t in group], root / "path/to/hf-tokenizer",
        vocab_size=300,
    )


def test_every_substitution_matches_the_readme() -> None:
    commands, python = readme_snippets(README.read_text())
    text = "\n".join(commands) + "\n" + python
    missing = [old for old in SUBSTITUTIONS if old not in text]
    assert not missing, f"README snippets no longer contain {missing}: update SUBSTITUTIONS"
    assert [c.split()[0:2] for c in commands] == [["streammix-build", "--domain"],
                                                  ["streammix", "plan"]]
    assert "trainer.fit()" in python


def test_readme_build_plan_and_train_run_as_written(tmp_path: Path) -> None:
    commands, python = readme_snippets(README.read_text())
    make_inputs(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for command in commands:
        done = subprocess.run(["bash", "-c", substitute(command, tmp_path)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "built/streammix.yaml").exists()
    assert (tmp_path / "plan.npz").exists() and (tmp_path / "plots/plan.png").exists()
    script = tmp_path / "readme_snippets.py"
    script.write_text(substitute(python, tmp_path))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script.read_text()}\n{done.stdout}\n{done.stderr}"
    history = (tmp_path / "mixing/history.jsonl").read_text().splitlines()
    assert json.loads(history[0])["domains"] == ["web", "code", "papers"]
    assert len(history) > 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

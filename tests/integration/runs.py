"""Launching the real training script (composer_train.py) and reading what it recorded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("composer_train.py")
TOTAL = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(data: Path, run: Path, *extra: str, ranks: int = 1, batches: int = TOTAL,
           wait: bool = True) -> subprocess.Popen | None:
    args = ["train", "--data", str(data), "--run", str(run), "--batches", str(batches), *extra]
    if ranks == 1:
        cmd = [sys.executable, str(SCRIPT), *args]
    else:
        cmd = [sys.executable, "-m", "composer.cli.launcher", "-n", str(ranks),
               "--master_port", str(free_port()), str(SCRIPT), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(run.parent / f"{run.name}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    if not wait:
        return proc
    code = proc.wait(timeout=600)
    log.close()
    assert code == 0, (run.parent / f"{run.name}.log").read_text()[-4000:]
    return None


def global_batches(run: Path) -> dict[int, list]:
    """Global batch index -> the samples of all ranks in rank order (last record wins)."""
    per_rank = sorted(run.glob("record.rank*.jsonl"))
    batches: dict[int, list] = {}
    for path in per_rank:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            batches.setdefault(record["batch"], {})[path.name] = record["samples"]
    return {b: [s for name in sorted(parts) for s in parts[name]] for b, parts in batches.items()}


def checkpoint(run: Path, batch: int) -> str:
    return str(run / "checkpoints" / f"ep0-ba{batch}-rank0.pt")

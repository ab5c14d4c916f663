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


def train(data: Path | str, run: Path, *extra: str, ranks: int = 1, batches: int = TOTAL,
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


def records(run: Path) -> dict[int, list[list]]:
    """Global batch index -> every time it was served (all ranks joined), in file order.

    A run killed and resumed appends to the same files, so a batch served before a kill and
    again after the resume appears twice; both must be the planned batch.
    """
    seen: dict[int, dict[str, list]] = {}
    for path in sorted(run.glob("record.rank*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            seen.setdefault(record["batch"], {}).setdefault(path.name, []).append(
                record["samples"])
    joined: dict[int, list[list]] = {}
    for batch, parts in seen.items():
        names = sorted(parts)
        for k in range(min(len(parts[name]) for name in names)):
            joined.setdefault(batch, []).append([s for name in names for s in parts[name][k]])
    return joined


def kill_at_batch(proc: subprocess.Popen, run: Path, batch: int, *, skip_lines: int = 0,
                  timeout_s: float = 300) -> None:
    """SIGKILL the process group once rank 0 recorded global batch ``batch`` (in the lines
    after the first ``skip_lines``, which earlier attempts wrote)."""
    import signal
    import time

    record = run / "record.rank0.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = record.read_text().splitlines()[skip_lines:] if record.exists() else []
        if any(json.loads(line)["batch"] >= batch for line in lines[-3:]):
            break
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before batch {batch} could be killed")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def epoch_checkpoint(run: Path, epoch: int, batch: int) -> str:
    """Composer's name for a checkpoint written with the timestamp at (epoch, batch)."""
    return str(run / "checkpoints" / f"ep{epoch}-ba{batch}-rank0.pt")

"""Run mosaicml-streaming's own tests against StreamMixDataset (upstream's code is never committed).

    python3 tools/upstream_suite.py [--modules test_mixing.py ...] [--workdir DIR]

1. ``pip download --no-deps --no-binary :all: mosaicml-streaming==<installed version>`` into
   the work folder and unpack its ``tests/``.
2. Write a shim ``tests/conftest.py`` there: ``streaming.StreamingDataset`` becomes
   ``StreamMixDataset`` (test modules import it after the conftest runs), and upstream's
   ``clean_stale_shared_memory()``, which unlinks every streaming shared-memory segment on
   the machine, becomes a no-op, so the run never disturbs another job.
3. Run each test function in its own process (upstream leaks shared-memory handles across
   datasets), each under a time limit, with upstream's pytest options replaced by none.
4. Compare with ``tools/upstream_exclusions.txt`` (one ``module::function  reason`` a line):
   a failure not listed is an error; a listed function that passes is reported.

The 0.13.0 sdist ships ``tests/`` without ``tests/common/`` (upstream's helpers and the
fixtures most modules use), so only the modules that need none of it run by default; the
shim provides the one fixture they use, ``local_remote_dir``. Exit status 1 on any
unlisted failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_MODULES = ("test_mixing.py", "test_laziness.py", "test_unsafe_types.py")
EXCLUSIONS = Path(__file__).with_name("upstream_exclusions.txt")
REPO = Path(__file__).resolve().parent.parent

SHIM = '''"""Shim written by streammix's tools/upstream_suite.py: StreamingDataset is StreamMixDataset."""
import pytest

import streammix.dataset.dataset as _streammix
import streaming
import streaming.base
import streaming.base.util as _util


def _no_clean() -> None:
    """Upstream unlinks every streaming segment on the machine here; never in this run."""


_util.clean_stale_shared_memory = _no_clean
streaming.StreamingDataset = _streammix.StreamMixDataset
streaming.base.StreamingDataset = _streammix.StreamMixDataset


@pytest.fixture
def local_remote_dir(tmp_path):
    yield str(tmp_path / "local"), str(tmp_path / "remote")
'''


def fetch_tests(workdir: Path) -> Path:
    """Download and unpack the pinned sdist; the folder holding its ``tests/``."""
    version = importlib.metadata.version("mosaicml-streaming")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                    ":all:", f"mosaicml-streaming=={version}", "-d", str(workdir), "-q"],
                   check=True)
    sdist = next(workdir.glob(f"mosaicml_streaming-{version}.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir, filter="data")
    root = workdir / f"mosaicml_streaming-{version}"
    (root / "tests" / "conftest.py").write_text(SHIM)
    return root


def _pytest(root: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p",
                           "no:cacheprovider", "-W", "ignore::pytest.PytestRemovedIn9Warning",
                           "-q", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_functions(root: Path, modules: list[str]) -> list[str]:
    """``tests/<module>::<function>`` for every collected test function (params grouped)."""
    done = _pytest(root, "--collect-only", *[f"tests/{m}" for m in modules], timeout_s=300)
    ids = [line.strip() for line in done.stdout.splitlines() if "::" in line]
    return list(dict.fromkeys(i.split("[")[0] for i in ids))


def read_exclusions(path: Path) -> dict[str, str]:
    exclusions = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            node, _, reason = line.partition("  ")
            if not reason.strip():
                raise ValueError(f"{path}: exclusion {node!r} gives no reason")
            exclusions[node.strip()] = reason.strip()
    return exclusions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="streammix-upstream-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = fetch_tests(workdir)
    exclusions = read_exclusions(EXCLUSIONS)
    passed, excluded, unexpected, failed = [], [], [], []
    for node in test_functions(root, args.modules):
        result = _pytest(root, node, timeout_s=args.timeout_s)  # one process per function
        ok = result.returncode == 0
        if node in exclusions:
            (unexpected if ok else excluded).append(node)
        elif ok:
            passed.append(node)
        else:
            failed.append(node)
            print(result.stdout[-3000:], file=sys.stderr)
    for name, nodes in (("passed", passed), ("excluded", excluded),
                        ("excluded but passed", unexpected), ("FAILED", failed)):
        print(f"{name}: {len(nodes)}")
        for node in nodes:
            print(f"  {node}" + (f"  ({exclusions[node]})" if node in exclusions else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""mosaicml-streaming's own tests against StreamMixDataset (tools/upstream_suite.py).

Tests download nothing, and upstream's tests are not ours to commit, so this test needs a
checkout of upstream at the installed version's tag, named on the command line:

    git clone --depth 1 --branch v0.13.0 https://github.com/mosaicml/streaming /tmp/upstream
    python3 -m pytest -m slow tests/upstream --upstream-checkout /tmp/upstream

Without ``--upstream-checkout`` it is skipped with that message. It runs each upstream
module in one process and every failing function again in a process of its own: tens of
minutes on 2 cores, hence slow. The last measured counts are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_upstream_suite_has_no_unlisted_failure(tmp_path, pytestconfig) -> None:
    checkout = pytestconfig.getoption("--upstream-checkout")
    if checkout is None:
        pytest.skip("needs --upstream-checkout DIR: a checkout of github.com/mosaicml/streaming "
                    "at the installed version's tag (tests download nothing)")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "upstream_suite.py"),
                           "--upstream", checkout, "--workdir", str(tmp_path), "--jobs", "2"],
                          capture_output=True, text=True, timeout=3 * 3600)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "FAILED: 0" in done.stdout


def test_the_runner_refuses_a_folder_without_upstream_tests(tmp_path) -> None:
    (tmp_path / "tests").mkdir()
    done = subprocess.run([sys.executable, str(REPO / "tools" / "upstream_suite.py"),
                           "--upstream", str(tmp_path), "--workdir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "holds no tests/common/" in done.stderr

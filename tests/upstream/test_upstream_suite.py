"""mosaicml-streaming's own tests against StreamMixDataset (tools/upstream_suite.py).

Downloads the pinned sdist at run time (network needed) and runs each upstream test
function in its own process: minutes on 2 cores, hence slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_upstream_suite_has_no_unlisted_failure(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "tools" / "upstream_suite.py"),
                           "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "FAILED: 0" in done.stdout

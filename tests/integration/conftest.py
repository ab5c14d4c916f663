"""Fixtures shared by the Composer integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("composer_train.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two token domains (pattern, noise) with held-out splits, made by the training script."""
    out = tmp_path_factory.mktemp("tokens")
    subprocess.run([sys.executable, str(SCRIPT), "make-data", str(out)], check=True)
    return out

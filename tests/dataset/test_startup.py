"""Start-up: the dataset module loads the order's numba kernels once, before any fork."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_dataset_module_loads_the_order_kernels() -> None:
    code = (
        "from streammix.core.passes import stream_samples_nb\n"
        "assert not stream_samples_nb.signatures\n"
        "import streammix.dataset.dataset\n"
        "assert stream_samples_nb.signatures, 'kernels not loaded at import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

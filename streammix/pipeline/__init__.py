"""The offline pipeline behind ``streammix-build``: stages, worker processes, resumable runs.

``run_build(BuildConfig(...))`` is the library entry point (``streammix.pipeline.local``);
names are resolved lazily so that importing a submodule (e.g. ``hf_quality``) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BuildConfig": "streammix.pipeline.config",
    "BuildError": "streammix.pipeline.config",
    "DomainSpec": "streammix.pipeline.config",
    "run_build": "streammix.pipeline.local",
    "BuildSummary": "streammix.pipeline.summary",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammix.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

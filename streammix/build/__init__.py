"""The offline pipeline behind ``streammix-build``: stages, worker processes, resumable runs.

``run_build(BuildConfig(...))`` is the library entry point (``streammix.build.pipeline``);
names are resolved lazily so that importing a submodule (e.g. ``hf_quality``) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BuildConfig": "streammix.build.config",
    "BuildError": "streammix.build.config",
    "DomainSpec": "streammix.build.config",
    "run_build": "streammix.build.pipeline",
    "BuildSummary": "streammix.build.summary",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammix.build' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

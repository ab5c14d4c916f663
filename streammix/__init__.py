"""streammix: data mixing for language-model training on MosaicML's stack.

The pure layers (``streammix.core``, ``streammix.metadata``, ``streammix.mixing``) import
only numpy and numba. Framework-facing names (``StreamMixDataset``, ``OnlineMixing``) are
resolved lazily so that importing the pure layers never pulls in torch or streaming.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "StreamMixDataset": "streammix.dataset.dataset",
    "MixingConfig": "streammix.dataset.config",
    "OnlineMixing": "streammix.composer.callback",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammix' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""Whether streammix's numba kernels are already compiled in numba's on-disk cache.

Every kernel is compiled with ``cache=True``: the first run of a fresh install (or after a
kernel changed) compiles them, which takes tens of seconds with no output, and later runs
load them in well under a second. :func:`cached_kernel_count` counts the kernels of the given
modules whose cache index (numba's ``*.nbi`` file, wherever numba's cache locator puts it)
exists, so the demo can say "compiling numba kernels (first run only)" before the silence
instead of leaving the user to wonder.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

# Modules whose kernels the build (metadata) and the training data path (the order) compile.
BUILD_KERNEL_MODULES = (
    "streammix.metadata.hashing",
    "streammix.metadata.shingle",
    "streammix.metadata.minhash",
    "streammix.metadata.quality_ngrams",
    "streammix.metadata.clusters",
    "streammix.metadata.diversity",
)
ORDER_KERNEL_MODULES = (
    "streammix.core.rng",
    "streammix.core.passes",
    "streammix.core.interleave",
    "streammix.core.greedy_skip",
    "streammix.core.order",
    "streammix.core.partition",
)


def cached_kernel_count(modules: Iterable[str]) -> int:
    """How many numba kernels of ``modules`` have an on-disk cache index.

    Helper kernels that are only inlined into other kernels never get one of their own, so
    the count is never the number of kernels; 0 means nothing of these modules was compiled
    yet (a first run). A numba without the attributes read here counts 0: the message is
    then shown once too often, never too rarely.
    """
    from numba.core.dispatcher import Dispatcher

    count = 0
    for name in modules:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if not isinstance(value, Dispatcher) or getattr(value, "__module__", None) != name:
                continue
            cache = getattr(value, "_cache", None)
            index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
            if index is not None and Path(index).exists():
                count += 1
    return count


def first_compile_notice(modules: Iterable[str], what: str) -> str | None:
    """A line to print before ``what`` if none of ``modules``' kernels is compiled yet."""
    if cached_kernel_count(modules):
        return None
    return (f"   compiling numba kernels for {what} (first run only; later runs load them from "
            "numba's cache): expect up to a minute without progress")

"""The SampleMix plan file: per-sample repeat counts that StreamMixDataset consumes.

One ``.npz`` (numpy's zip of arrays), written to a temporary name and renamed into place
(with the usual permissions: 0666 minus the umask):

* ``counts/<domain>``: int32 repeat count per sample, in the domain's MDS order;
* ``meta``: a JSON string with the format version, the domains in order, each domain's
  ``index.json`` sha256 (the same fingerprint the sidecar carries), the plan's configuration
  and its report.

Reading checks every fingerprint, so a plan can never be applied to samples it was not
computed for.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PLAN_VERSION = 1


class PlanMismatchError(ValueError):
    """The plan was computed for other data than the dataset it is applied to."""


def write_plan(
    path: str | os.PathLike,
    *,
    counts: Mapping[str, np.ndarray],
    index_fingerprints: Mapping[str, str],
    config: Mapping[str, Any],
    report: Mapping[str, Any],
) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"a plan file ends in .npz, got {path.name!r}")
    meta = {
        "version": PLAN_VERSION,
        "domains": list(counts),
        "index_sha256": dict(index_fingerprints),
        "config": dict(config),
        "report": report,
    }
    arrays = {f"counts/{name}": np.asarray(c, dtype=np.int32) for name, c in counts.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # 0o666 minus the umask, like any file a program writes (tempfile.mkstemp would give 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            np.savez_compressed(stream, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_plan(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, counts per domain)`` of a plan file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no plan file at {path} (make one with `streammix plan`)")
    with np.load(path, allow_pickle=False) as data:
        try:
            meta = json.loads(str(data["meta"]))
        except KeyError:
            raise ValueError(f"{path} is not a streammix plan file (no meta)") from None
        if meta.get("version") != PLAN_VERSION:
            raise ValueError(f"{path}: unsupported plan version {meta.get('version')}")
        counts = {name: data[f"counts/{name}"].astype(np.int64) for name in meta["domains"]}
    return meta, counts


def read_plan_counts(
    path: str | os.PathLike, *, names: Sequence[str], index_fingerprints: Sequence[str]
) -> dict[str, np.ndarray]:
    """Counts for the given domains, checked against their ``index.json`` fingerprints."""
    meta, counts = read_plan(path)
    missing = [n for n in names if n not in counts]
    if missing:
        raise PlanMismatchError(
            f"plan {path} has no counts for domains {missing}; it covers {meta['domains']}"
        )
    for name, fingerprint in zip(names, index_fingerprints):
        if meta["index_sha256"].get(name) != fingerprint:
            raise PlanMismatchError(
                f"plan {path} was computed for another version of domain {name!r} "
                "(index.json fingerprint differs); run `streammix plan` again"
            )
    return {name: counts[name] for name in names}

"""The output folder's life cycle: refuse foreign content, resume our own, write atomically.

A build keeps all intermediate state in ``OUT/.streammix-work/``; every file there (and
every final output) is written under a temporary name in the same folder and renamed into
place with ``os.replace``, so a file that exists under its final name is complete. The
manifest ``OUT/streammix.yaml`` is renamed into place last and is the only sign of a
finished build; the work folder is deleted after it.

``open_output`` decides what to do with an existing OUT:

- missing or empty: a fresh build;
- a finished manifest with the same configuration fingerprint: nothing to do;
- an unfinished build (work folder) with the same fingerprint: resume;
- anything else (another configuration, or files that streammix did not write): a
  ``BuildError``; ``overwrite=True`` replaces a previous streammix build, but never
  deletes a folder that does not look like one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streammix.pipeline.config import BuildError

WORK_DIR = ".streammix-work"
MANIFEST_NAME = "streammix.yaml"
CONFIG_NAME = "config.json"


@dataclass(frozen=True, kw_only=True)
class OutputState:
    """What ``open_output`` found: the folders to use and whether the build is done."""

    out: Path
    work: Path
    finished: bool


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.<name>.tmp`` and an atomic rename.

    The temporary name is fixed (each file has one writer), so a file left by a killed run
    is overwritten by the rerun instead of lingering in the output.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as stream:
        stream.write(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def temporary_sibling(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (removed if it was left by a killed run)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    return tmp


def read_manifest_fingerprint(out: Path) -> str | None:
    import yaml

    try:
        with open(out / MANIFEST_NAME, encoding="utf-8") as stream:
            manifest = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"cannot read {out / MANIFEST_NAME}: {exc}") from None
    if not isinstance(manifest, dict):
        return None
    return manifest.get("config_fingerprint")


def open_output(out_dir: str, fingerprint: str, *, overwrite: bool) -> OutputState:
    """Check OUT (see the module docstring) and create the work folder if needed."""
    out = Path(out_dir).absolute()
    work = out / WORK_DIR
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        state = _existing_output(out, work, fingerprint, overwrite=overwrite)
        if state is not None:
            return state
    work.mkdir(parents=True, exist_ok=True)
    if not (work / CONFIG_NAME).exists():
        atomic_write_json(work / CONFIG_NAME, {"config_fingerprint": fingerprint})
    return OutputState(out=out, work=work, finished=False)


def _existing_output(
    out: Path, work: Path, fingerprint: str, *, overwrite: bool
) -> OutputState | None:
    has_manifest = (out / MANIFEST_NAME).is_file()
    has_work = (work / CONFIG_NAME).is_file()
    if not has_manifest and not has_work and {c.name for c in out.iterdir()} == {WORK_DIR}:
        shutil.rmtree(work)  # killed before the work folder got its configuration
        return None
    if not has_manifest and not has_work and overwrite and _only_streammix_files(out):
        _clear(out)  # what a killed --overwrite run left behind
        return None
    if not has_manifest and not has_work:
        raise BuildError(
            f"--out {out} is not empty and holds no streammix build; choose an empty or new folder"
        )
    previous = read_manifest_fingerprint(out) if has_manifest else _work_fingerprint(work)
    if previous == fingerprint:
        if has_manifest:
            if work.exists():
                shutil.rmtree(work)
            return OutputState(out=out, work=work, finished=True)
        return None
    if not overwrite:
        what = "a finished build" if has_manifest else "an unfinished build"
        raise BuildError(
            f"--out {out} holds {what} with a different configuration;"
            " use another folder or --overwrite to replace it"
        )
    _clear(out)
    return None


def _clear(out: Path) -> None:
    """Empty OUT, manifest first so that it never looks finished while half deleted."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for child in sorted(out.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


STREAMMIX_FILES = {MANIFEST_NAME, WORK_DIR, "rejects.jsonl", "dedup_removed.jsonl"}


def _only_streammix_files(out: Path) -> bool:
    """Whether every entry of OUT is something a streammix build writes."""
    for child in out.iterdir():
        if child.name in STREAMMIX_FILES or child.name.endswith(".tmp"):
            continue
        if child.is_dir() and all(
            c.name in ("index.json", "streammix.parquet") or ".mds" in c.name
            for c in child.iterdir()
        ):
            continue
        return False
    return True


def _work_fingerprint(work: Path) -> str | None:
    try:
        return json.loads((work / CONFIG_NAME).read_text(encoding="utf-8"))["config_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

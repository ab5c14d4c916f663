"""The build manifest ``OUT/streammix.yaml``: what a finished ``streammix-build`` produced.

The manifest is written last (temporary name, then an atomic rename), so its presence
means every Stream, sidecar and list beside it is complete. It names the domains with
their ids in the given order (``domain`` column values), their Stream folders (relative to
OUT) with sample, token and byte counts and ``index.json`` fingerprints, the validation
folders, the token dtype, the MinHash and quality settings, the full configuration with
its fingerprint and the versions of streammix, streaming and numpy. It holds no
timestamps, so the same build gives the same bytes.

``read_manifest`` returns a ``BuildManifest`` with absolute folder paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "streammix.yaml"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """A folder without a readable, finished streammix manifest."""


@dataclass(frozen=True, kw_only=True)
class DomainEntry:
    """One domain of a build: its Stream folder and, optionally, its validation folder."""

    name: str
    id: int
    dir: Path
    num_samples: int
    num_tokens: int
    num_bytes: int
    val_dir: Path | None
    val_num_samples: int
    val_num_tokens: int
    rejected: int
    removed_duplicates: int
    index_sha256: str | None = None
    val_index_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class BuildManifest:
    """A parsed ``streammix.yaml``."""

    out: Path
    domains: tuple[DomainEntry, ...]
    token_dtype: str | None
    tokenizer: str | None
    minhash: dict[str, Any]
    quality: dict[str, Any]
    config: dict[str, Any]
    config_fingerprint: str
    versions: dict[str, str]
    raw: dict[str, Any]

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def domain(self, name: str) -> DomainEntry:
        for entry in self.domains:
            if entry.name == name:
                return entry
        raise KeyError(f"no domain {name!r} in {self.out}; domains: {list(self.domain_names)}")


def write_manifest(out_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``streammix.yaml`` atomically (``data`` as built by the build's manifest stage)."""
    import yaml

    out = Path(out_dir)
    class _PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # repeated values written out in full
            return True

    text = yaml.dump(
        data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    tmp = out / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
    return out / MANIFEST_NAME


def read_manifest(out_dir: str | os.PathLike) -> BuildManifest:
    """Parse the manifest of a finished build in ``out_dir``."""
    import yaml

    out = Path(out_dir).absolute()
    path = out / MANIFEST_NAME
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except FileNotFoundError:
        raise ManifestError(
            f"{out} has no {MANIFEST_NAME}: not a finished streammix build"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("streammix_manifest") != MANIFEST_VERSION:
        raise ManifestError(f"{path} is not a streammix manifest (version {MANIFEST_VERSION})")
    try:
        domains = tuple(_domain_entry(out, entry) for entry in data["domains"])
        tokens = data["tokens"]
        return BuildManifest(
            out=out,
            domains=domains,
            token_dtype=tokens["dtype"],
            tokenizer=tokens["tokenizer"],
            minhash=dict(data["minhash"]),
            quality=dict(data["quality"]),
            config=dict(data["config"]),
            config_fingerprint=str(data["config_fingerprint"]),
            versions={str(k): str(v) for k, v in data["versions"].items()},
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path} is incomplete or damaged: {exc!r}") from None


def _domain_entry(out: Path, entry: dict[str, Any]) -> DomainEntry:
    val = entry.get("val") or None
    return DomainEntry(
        name=str(entry["name"]),
        id=int(entry["id"]),
        dir=out / entry["dir"],
        num_samples=int(entry["num_samples"]),
        num_tokens=int(entry["num_tokens"]),
        num_bytes=int(entry["num_bytes"]),
        val_dir=(out / val["dir"]) if val else None,
        val_num_samples=int(val["num_samples"]) if val else 0,
        val_num_tokens=int(val["num_tokens"]) if val else 0,
        rejected=int(entry["rejected"]),
        removed_duplicates=int(entry["removed_duplicates"]),
        index_sha256=entry.get("index_sha256"),
        val_index_sha256=val.get("index_sha256") if val else None,
    )

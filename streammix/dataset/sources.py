"""From a streammix build (local and/or remote) to one upstream ``Stream`` per domain.

A build root holds ``streammix.yaml`` (the manifest) and one MDS folder per domain, each
with its ``streammix.parquet`` sidecar. Given ``local`` (and optionally ``remote``), the
manifest is read (downloaded first when only the remote has it), the requested domains are
resolved to ``Stream(remote=<remote>/<dir>, local=<local>/<dir>)``, and each domain's sidecar
is fetched and checked against that domain's ``index.json`` (a mismatch is a clear error:
the metadata would otherwise silently describe other samples).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streaming import Stream
from streaming.base.storage.download import CloudDownloader

from streammix.format import manifest as manifest_format
from streammix.format import sidecar as sidecar_format

DOWNLOAD_TIMEOUT_S = 60.0


def _fetch(remote_dir: str | None, local_dir: str, name: str) -> Path:
    """Path of ``name`` under ``local_dir``, downloading it from ``remote_dir`` if absent."""
    local_path = Path(local_dir) / name
    if not local_path.exists():
        if remote_dir is None:
            raise FileNotFoundError(f"{local_path} does not exist and no remote was given")
        local_path.parent.mkdir(parents=True, exist_ok=True)
        remote_path = os.path.join(remote_dir, name)
        downloader = CloudDownloader.get(remote_path)
        try:
            downloader.download(remote_path, str(local_path), DOWNLOAD_TIMEOUT_S)
        finally:
            downloader.clean_up()
    return local_path


@dataclass(frozen=True)
class DomainSources:
    """The domains of one StreamMixDataset: names, upstream Streams, index fingerprints."""

    names: tuple[str, ...]
    streams: tuple[Stream, ...]
    local_dirs: tuple[str, ...]
    remote_dirs: tuple[str | None, ...]

    @property
    def index_fingerprints(self) -> tuple[str, ...]:
        return tuple(sidecar_format.index_fingerprint(d) for d in self.local_dirs)

    require_sidecars: bool = True
    val_dirs: tuple[tuple[str | None, str | None], ...] | None = None  # (local, remote) per domain

    def verify_sidecars(self) -> None:
        """Fetch each sidecar and check it describes this domain's index.json.

        Domains of a streammix build must have their sidecar. Plain MDS folders given as
        ``streams=[...]`` may lack one (they then cannot use SampleMix counts).
        """
        for local_dir, remote_dir in zip(self.local_dirs, self.remote_dirs):
            try:
                _fetch(remote_dir, local_dir, sidecar_format.SIDECAR_NAME)
            except FileNotFoundError:
                if self.require_sidecars:
                    raise FileNotFoundError(
                        f"{Path(local_dir) / sidecar_format.SIDECAR_NAME} is missing: every domain of a "
                        "streammix build has a sidecar; rebuild with streammix-build"
                    ) from None
                continue
            sidecar_format.read_sidecar(local_dir, columns=[])  # SidecarMismatchError if stale

    def token_counts(self) -> tuple[np.ndarray, ...]:
        """Per-domain token counts (sidecar ``num_tokens``), needed for packing."""
        counts = []
        for name, local_dir in zip(self.names, self.local_dirs):
            try:
                table = sidecar_format.read_sidecar(local_dir, columns=["num_tokens"])
            except ValueError as exc:
                raise ValueError(f"cannot pack domain {name!r}: {exc} (packing needs a build "
                                 "made with --tokenizer)") from exc
            counts.append(np.asarray(table["num_tokens"], dtype=np.int64))
        return tuple(counts)

    def load_sample_counts(self, plan_path: str | os.PathLike | None
                           ) -> Mapping[str, np.ndarray] | None:
        if plan_path is None:
            return None
        from streammix.format.plan import read_plan_counts

        return read_plan_counts(plan_path, names=self.names,
                                index_fingerprints=self.index_fingerprints)


def _relative(path: Path, root: Path) -> str:
    return str(Path(path).relative_to(root)) if Path(path).is_absolute() else str(path)


def resolve_sources(*, local: str | os.PathLike | None, remote: str | None,
                    streams: Sequence[Stream] | None, split: str,
                    domains: Sequence[str] | None) -> DomainSources:
    if streams is not None:
        if local is not None or remote is not None:
            raise ValueError("give either streams=[...] (one per domain) or local/remote, not both")
        if domains is not None:
            raise ValueError("MixingConfig.domains selects domains of a build; with streams=[...] "
                             "pass only the streams you want")
        streams = tuple(streams)
        names = tuple(os.path.basename(os.path.normpath(s.local)) for s in streams)
        if len(set(names)) != len(names):
            raise ValueError(f"two streams share a domain folder name: {list(names)}")
        locals_ = tuple(os.path.join(s.local, s.split or "") for s in streams)
        remotes = tuple(None if s.remote is None else os.path.join(s.remote, s.split or "")
                        for s in streams)
        sources = DomainSources(names, streams, locals_, remotes, require_sidecars=False)
    else:
        if local is None:
            raise ValueError("StreamMixDataset needs local= (a streammix build folder, or the "
                             "cache folder for remote=) or streams=[...]")
        local = os.fspath(local)
        _fetch(remote, local, manifest_format.MANIFEST_NAME)
        manifest = manifest_format.read_manifest(local)
        available = manifest.domain_names
        chosen = tuple(domains) if domains is not None else available
        unknown = [d for d in chosen if d not in available]
        if unknown:
            raise ValueError(f"domains {unknown} are not in the build at {local}; "
                             f"it has {list(available)}")
        entries = [manifest.domain(name) for name in chosen]
        if split == "val":
            no_val = [e.name for e in entries if e.val_dir is None]
            if no_val:
                raise ValueError(f"domains {no_val} have no held-out split in {local}; rebuild "
                                 "with streammix-build --val-fraction or --val-samples")
        dirs = [_relative(e.val_dir if split == "val" else e.dir, manifest.out) for e in entries]
        locals_ = tuple(os.path.join(local, d) for d in dirs)
        remotes = tuple(None if remote is None else os.path.join(remote, d) for d in dirs)
        built = tuple(Stream(local=lo, remote=re) for lo, re in zip(locals_, remotes))
        val_dirs = []
        for entry in entries:
            val_dir = None if entry.val_dir is None else _relative(entry.val_dir, manifest.out)
            val_dirs.append((None, None) if val_dir is None else
                            (os.path.join(local, val_dir),
                             None if remote is None else os.path.join(remote, val_dir)))
        sources = DomainSources(chosen, built, locals_, remotes, val_dirs=tuple(val_dirs))
    return sources

"""From a streammix build or plain MDS (local and/or remote) to one upstream ``Stream`` per domain.

Plain MDS needs nothing else: a folder with an ``index.json`` is one domain, a folder of such
folders one domain each; features that need a build's files say so when used (the held-out
split, packing's token counts).

A build root holds ``streammix.yaml`` (the manifest) and one MDS folder per domain. Given
``local`` (and optionally ``remote``), the manifest is read (fetched first when only the
remote has it) and the requested domains become ``Stream(remote=<remote>/<dir>,
local=<local>/<dir>)``. Once upstream has fetched each ``index.json``, its sha256 is checked
against the one the manifest recorded, so metadata can never silently describe other
samples. Nothing else is fetched at construction: the per-sample sidecar
(``streammix.parquet``, ~1 KB per sample) is for planning, not training. Packing needs
token counts, read from the compact ``streammix.tokens.npy`` (4 bytes per sample) when a
packed dataset is made. Every fetch goes through ``streammix.format.remote.fetch_file``:
once per node, never two processes writing the same file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from streaming import Stream

from streammix.format import manifest as manifest_format
from streammix.format import sidecar as sidecar_format
from streammix.format.remote import RemoteFileMissing, fetch_file

INDEX_NAME = "index.json"
StreamFactory = Callable[..., Stream]  # (local=..., remote=...) -> a Stream


def registered_stream_factory(stream_name: str, stream_config: Mapping[str, Any] | None
                              ) -> StreamFactory:
    """Upstream's ``stream_name``/``stream_config``: the class registered under
    ``stream_name`` in ``streams_registry``, made with ``stream_config`` plus each domain's
    ``local``/``remote`` (those two are the domain's, as upstream sets the dataset's)."""
    if stream_name == "stream" and not stream_config:
        return Stream
    from streaming.base.registry_utils import construct_from_registry
    from streaming.base.stream import streams_registry

    config = dict(stream_config or {})

    def make(*, local: str, remote: str | None) -> Stream:
        return construct_from_registry(
            name=stream_name, registry=streams_registry, partial_function=False,
            pre_validation_function=None, post_validation_function=None,
            kwargs=dict(config, local=local, remote=remote))

    return make


class BuildLayoutError(ValueError):
    """A build's Stream does not match its manifest (rewritten after the build)."""


class NoDataFound(FileNotFoundError, ValueError):
    """``local``/``remote`` hold no build, no MDS folder and no folder of MDS folders.

    A ``FileNotFoundError`` as upstream raises for a missing ``index.json``, and a
    ``ValueError`` as streammix's other layout errors.
    """


@dataclass(frozen=True)
class DomainSources:
    """The domains of one StreamMixDataset: names, upstream Streams, where they live."""

    names: tuple[str, ...]
    streams: tuple[Stream, ...]
    local_dirs: tuple[str, ...]
    remote_dirs: tuple[str | None, ...]
    val_dirs: tuple[tuple[str | None, str | None], ...] | None = None  # (local, remote) per domain
    index_sha256: tuple[str | None, ...] | None = None  # from the manifest, per domain
    has_tokens: bool | None = None  # None: not known (plain MDS)

    @property
    def index_fingerprints(self) -> tuple[str, ...]:
        return tuple(sidecar_format.index_fingerprint(d) for d in self.local_dirs)

    def verify_layout(self) -> None:
        """Check each fetched ``index.json`` against the manifest (builds only)."""
        if self.index_sha256 is None:
            return
        for name, local_dir, expected, actual in zip(self.names, self.local_dirs,
                                                    self.index_sha256, self.index_fingerprints):
            if expected is not None and expected != actual:
                raise BuildLayoutError(
                    f"domain {name!r}: {Path(local_dir) / 'index.json'} does not match the "
                    "build's manifest (the Stream was rewritten after the build, or the local "
                    "cache holds another build); rebuild, or clear the cache folder"
                )

    def token_counts(self) -> tuple[np.ndarray, ...]:
        """Per-domain token counts per sample, needed for packing."""
        if self.has_tokens is False:
            raise ValueError("cannot pack: this build has no token ids (it was made without "
                             "--tokenizer); rebuild with streammix-build --tokenizer")
        counts = []
        for name, local_dir, remote_dir in zip(self.names, self.local_dirs, self.remote_dirs):
            try:
                fetch_file(remote_dir, local_dir, sidecar_format.TOKEN_COUNTS_NAME)
            except RemoteFileMissing:
                counts.append(self._token_counts_from_sidecar(name, local_dir, remote_dir))
                continue
            counts.append(sidecar_format.read_token_counts(local_dir))
        return tuple(counts)

    @staticmethod
    def _token_counts_from_sidecar(name: str, local_dir: str, remote_dir: str | None
                                   ) -> np.ndarray:
        """Builds older than ``streammix.tokens.npy`` keep the counts only in the sidecar."""
        try:
            fetch_file(remote_dir, local_dir, sidecar_format.SIDECAR_NAME)
        except RemoteFileMissing:
            raise ValueError(
                f"cannot pack domain {name!r}: packing needs per-sample token counts "
                f"({sidecar_format.TOKEN_COUNTS_NAME} or {sidecar_format.SIDECAR_NAME}, as "
                "streammix-build --tokenizer writes them), and its folder has neither"
            ) from None
        try:
            table = sidecar_format.read_sidecar(local_dir, columns=["num_tokens"])
        except ValueError as exc:
            raise ValueError(f"cannot pack domain {name!r}: {exc} (packing needs a build "
                             "made with --tokenizer)") from exc
        return np.asarray(table["num_tokens"], dtype=np.int64)

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
                    domains: Sequence[str] | None,
                    upstream_split: str | None = None,
                    make_stream: StreamFactory = Stream) -> DomainSources:
    """The domains of a dataset from ``streams=[...]``, a build, or plain MDS folders.

    ``local``/``remote`` name, in this order of precedence: a streammix build (has
    ``streammix.yaml``), one plain MDS folder (has ``index.json``: one domain), or a folder
    of MDS folders (one domain per subfolder with an ``index.json``, named by the subfolder;
    on a remote, which cannot be listed, ``MixingConfig.domains`` names the subfolders).
    ``upstream_split`` is upstream's ``split=``: a plain MDS folder's index is then in
    ``<folder>/<split>/``, as upstream reads it. ``make_stream(local=, remote=)`` makes each
    domain's Stream (upstream's ``stream_name``: see :func:`registered_stream_factory`).
    """
    if streams is not None:
        if local is not None or remote is not None:
            raise ValueError("give either streams=[...] (one per domain) or local/remote, not both")
        return _from_streams(tuple(streams), domains)
    if local is None and remote is None:
        raise ValueError("StreamMixDataset needs local= (a streammix build or MDS folder, or "
                         "the cache folder for remote=) or streams=[...]")
    local = temporary_local(remote) if local is None else os.fspath(local)
    try:
        fetch_file(remote, local, manifest_format.MANIFEST_NAME)
    except RemoteFileMissing:
        return _from_plain_mds(local, remote, split, domains, upstream_split or "", make_stream)
    return _from_build(local, remote, split, domains, make_stream)


def temporary_local(remote: str) -> str:
    """The cache folder of ``remote=`` given without ``local=``, as upstream makes it.

    ``<tmp>/<blake2s-128 of remote>`` (upstream's ``Stream`` path, its ``split`` appended
    below it as for any plain MDS folder). Local rank 0 creates it and refuses one that
    exists (it may hold another dataset's files); the node's other ranks wait for it.
    """
    from streaming.base.distributed import barrier, get_local_rank

    digest = hashlib.blake2s(remote.encode("utf-8"), digest_size=16).hexdigest()
    local = os.path.join(tempfile.gettempdir(), digest)
    if get_local_rank() == 0:
        if os.path.exists(local):
            raise FileExistsError(
                f"remote={remote!r} without local=: its temporary cache folder {local} already "
                "exists (another dataset, or an earlier run, left it); give local= to reuse a "
                "cache on purpose, or delete that folder")
        os.makedirs(local)
    barrier()
    return local


def _from_streams(streams: tuple[Stream, ...], domains: Sequence[str] | None) -> DomainSources:
    if domains is not None:
        if len(domains) != len(streams):
            raise ValueError(f"MixingConfig.domains names the streams: give {len(streams)} "
                             f"names for {len(streams)} streams, got {list(domains)}")
        names = tuple(domains)
    else:
        names = tuple(os.path.basename(os.path.normpath(s.local)) for s in streams)
        if len(set(names)) != len(names):
            raise ValueError(f"two streams share a domain folder name: {list(names)}; name the "
                             "domains with MixingConfig(domains=[...]), one per stream")
    locals_ = tuple(os.path.join(s.local, s.split or "") for s in streams)
    remotes = tuple(None if s.remote is None else os.path.join(s.remote, s.split or "")
                    for s in streams)
    return DomainSources(names, streams, locals_, remotes)


def _from_plain_mds(local: str, remote: str | None, split: str,
                    domains: Sequence[str] | None, sub: str,
                    make_stream: StreamFactory) -> DomainSources:
    """One plain MDS folder (one domain) or a folder of MDS folders (one domain each)."""
    if split == "val":
        raise ValueError(f"MixingConfig(split='val') needs a streammix build (its held-out "
                         f"<domain>-val splits); {local} has no {manifest_format.MANIFEST_NAME}")
    def joined(root: str | None, *parts: str) -> str | None:
        return None if root is None else os.path.join(root, *parts, sub)

    try:
        fetch_file(joined(remote), joined(local), INDEX_NAME)
    except RemoteFileMissing:
        pass
    else:
        if domains is not None and len(domains) != 1:
            raise ValueError(f"{local} is one MDS folder, so one domain: MixingConfig.domains "
                             f"may give its one name, got {list(domains)}")
        name = domains[0] if domains is not None else os.path.basename(os.path.normpath(local))
        return DomainSources((name,), (make_stream(local=local, remote=remote),),
                             (joined(local),), (joined(remote),))
    names = tuple(domains) if domains is not None else _mds_subfolders(local, remote, sub)
    for name in names:
        try:
            fetch_file(joined(remote, name), joined(local, name), INDEX_NAME)
        except RemoteFileMissing:
            raise ValueError(f"domain {name!r}: {joined(remote, name) or joined(local, name)} "
                             f"has no {INDEX_NAME} (not an MDS folder)") from None
    streams = tuple(make_stream(local=os.path.join(local, n),
                                remote=None if remote is None else os.path.join(remote, n))
                    for n in names)
    return DomainSources(names, streams, tuple(joined(local, n) for n in names),
                         tuple(joined(remote, n) for n in names))


def _mds_subfolders(local: str, remote: str | None, sub: str) -> tuple[str, ...]:
    where = local if remote is None else f"{remote} (cache {local})"
    found = ()
    if os.path.isdir(local):
        found = tuple(sorted(e.name for e in os.scandir(local)
                             if e.is_dir()
                             and os.path.exists(os.path.join(e.path, sub, INDEX_NAME))))
    if found:
        return found
    raise NoDataFound(
        errno.ENOENT, f"No such file or directory: {where} has no "
        f"{manifest_format.MANIFEST_NAME} (a streammix build), no {INDEX_NAME} (one MDS folder) "
        f"and no subfolders with an {INDEX_NAME} (MDS folders, one domain each)"
        + ("; a remote cannot be listed: name its MDS subfolders with "
           "MixingConfig(domains=[...])" if remote is not None else ""))


def _from_build(local: str, remote: str | None, split: str,
                domains: Sequence[str] | None, make_stream: StreamFactory) -> DomainSources:
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
    built = tuple(make_stream(local=lo, remote=re) for lo, re in zip(locals_, remotes))
    val_dirs = []
    for entry in entries:
        val_dir = None if entry.val_dir is None else _relative(entry.val_dir, manifest.out)
        val_dirs.append((None, None) if val_dir is None else
                        (os.path.join(local, val_dir),
                         None if remote is None else os.path.join(remote, val_dir)))
    sha = tuple(e.val_index_sha256 if split == "val" else e.index_sha256 for e in entries)
    return DomainSources(chosen, built, locals_, remotes, val_dirs=tuple(val_dirs),
                         index_sha256=sha, has_tokens=manifest.token_dtype is not None)

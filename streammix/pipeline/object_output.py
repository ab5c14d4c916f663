"""A build whose ``--out`` is ``s3://bucket/prefix``: built in a local staging folder, then uploaded.

Either engine builds into ``STAGING/build`` exactly as into a local folder (manifest
last, resumable), then every file is uploaded under the prefix with ``streammix.yaml``
last (``ObjectStore.upload_build``), so a failed build or a failed upload leaves no
manifest on the object store and a reader never sees a half-uploaded build as finished.

What is already under the prefix decides, as ``open_output`` does for a folder:

- no ``streammix.yaml``: build and upload (the objects of an interrupted upload are
  overwritten by the same keys);
- a manifest with this configuration's fingerprint: nothing to do;
- a manifest of another configuration: refused, unless ``overwrite``, which deletes the
  manifest first and then every object under the prefix before uploading.

``STAGING`` is ``config.staging`` when given (keep it to resume a failed build or upload;
on a Spark cluster it must be a folder the driver and executors share), else a temporary
folder removed afterwards; the staged copy is deleted once it is uploaded.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from streammix.format.manifest import MANIFEST_NAME, BuildManifest, read_manifest
from streammix.format.object_store import ObjectStoreError, split_url
from streammix.pipeline.config import BuildConfig, BuildError
from streammix.pipeline.summary import BuildSummary

STAGED_BUILD = "build"


def build_to_object_storage(
    config: BuildConfig, build: Callable[[BuildConfig], BuildSummary]
) -> BuildSummary:
    """Run ``build`` on a local copy of ``config`` whose ``out`` is staging, then upload."""
    store = config.object_store()
    url = config.out.rstrip("/")
    bucket, _ = split_url(url)
    try:
        store.client().head_bucket(Bucket=bucket)
    except Exception:
        raise BuildError(f"--out {config.out}: bucket {bucket!r} does not exist or is not"
                         " reachable (check --s3-endpoint-url and the AWS credentials)") from None
    staging = Path(config.staging) if config.staging else Path(tempfile.mkdtemp(prefix="streammix-"))
    try:
        existing = _remote_manifest(config, url)
        if existing is not None:
            if existing.config_fingerprint == config.fingerprint():
                summary = BuildSummary.from_manifest(existing, elapsed=0.0, resumed=True)
                return dataclasses.replace(summary, out=url)
            if not config.overwrite:
                raise BuildError(f"{url} holds a streammix build of another configuration;"
                                 " pass --overwrite to replace it")
            store.delete_prefix(url)
        local = dataclasses.replace(config, out=str(staging / STAGED_BUILD), staging=None)
        summary = build(local)
        try:
            store.upload_build(staging / STAGED_BUILD, url)
        except ObjectStoreError as exc:
            raise BuildError(f"{exc}; the build is complete in {staging / STAGED_BUILD}") from None
        shutil.rmtree(staging / STAGED_BUILD, ignore_errors=True)  # uploaded: not needed again
        return dataclasses.replace(summary, out=url)
    finally:
        if not config.staging:
            shutil.rmtree(staging, ignore_errors=True)


def _remote_manifest(config: BuildConfig, url: str) -> BuildManifest | None:
    """The manifest under ``url``, or None."""
    store = config.object_store()
    bucket, key = split_url(f"{url}/{MANIFEST_NAME}")
    if not store.exists(f"{url}/{MANIFEST_NAME}"):
        return None
    with tempfile.TemporaryDirectory(prefix="streammix-manifest-") as folder:
        store.client().download_file(bucket, key, str(Path(folder) / MANIFEST_NAME))
        return read_manifest(folder)

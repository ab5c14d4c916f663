"""Fetching single files of a build from its remote, once per node.

``fetch_file(remote_dir, local_dir, name)`` returns the local path of ``name``, downloading
it through upstream's downloaders (``s3://``, ``gs://``, local folders, ...) when it is not
in the local folder yet. Every process of a node that shares ``local_dir`` may call it at
the same time: a file lock lets the first one download while the others wait (the lock file
lives in the node's temporary folder, named by a hash of the target's absolute path, so the
cache folder holds nothing but the data, as upstream's does), and the download goes to a temporary name unique to the process before an atomic
rename, so no two processes ever write the same file and a reader never sees a partial one.
Each object is therefore fetched once per node.

A remote object that does not exist raises ``RemoteFileMissing`` (a ``FileNotFoundError``)
whatever the storage: upstream reports S3's 404 as a botocore ``ClientError``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path

DOWNLOAD_TIMEOUT_S = 60.0
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class RemoteFileMissing(FileNotFoundError):
    """The file is neither in the local folder nor on the remote."""


def _is_missing(error: BaseException) -> bool:
    if isinstance(error, FileNotFoundError):
        return True
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) in _MISSING_CODES


def node_lock(path: str | os.PathLike):
    """An inter-process lock for ``path``, shared by the processes of one node.

    The lock file is ``<tmp>/streammix-locks/<sha256 of the absolute path>.lock`` (it stays;
    it is empty), never beside ``path``: upstream's cache folders hold only the data.
    """
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "streammix-locks"
    folder.mkdir(exist_ok=True)
    return FileLock(str(folder / f"{key}.lock"))


def fetch_file(remote_dir: str | None, local_dir: str | os.PathLike, name: str, *,
               timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Local path of ``name`` under ``local_dir``, downloaded from ``remote_dir`` if absent."""
    local_path = Path(local_dir) / name
    if local_path.exists():
        return local_path
    if remote_dir is None:
        raise RemoteFileMissing(f"{local_path} does not exist and no remote was given")
    from streaming.base.storage.download import CloudDownloader

    remote_path = os.path.join(remote_dir, name)
    with node_lock(local_path):
        if local_path.exists():  # another process of this node fetched it meanwhile
            return local_path
        partial = local_path.with_name(f".{local_path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        downloader = CloudDownloader.get(remote_path)
        try:
            downloader.download(remote_path, str(partial), timeout_s)
            os.replace(partial, local_path)
        except Exception as error:
            if _is_missing(error):
                raise RemoteFileMissing(f"{remote_path} does not exist") from None
            raise
        finally:
            downloader.clean_up()
            if partial.exists():
                partial.unlink()
    return local_path

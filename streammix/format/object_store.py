"""Inputs and outputs on S3-compatible object storage, through boto3.

A path ``s3://bucket/key`` or ``s3a://bucket/key`` (Hadoop's name for the same thing, so
a Spark user's URLs work unchanged) names an object; both schemes reach the same bucket
and key. Everything goes through boto3 in Python, on the driver and in every worker or
Spark executor alike, so no Hadoop S3 connector is needed:

- ``ObjectStore.list(url)`` lists the objects under a prefix (a "folder") or one object,
  with sizes and modification times, for the build plan;
- ``ObjectStore.open(url)`` is a seekable, buffered, read-only file whose reads are ranged
  GETs, so the local readers (jsonl byte ranges, parquet footers and row groups, text
  files) read objects exactly as they read files, fetching only the bytes they need;
- ``ObjectStore.upload_build(folder, url)`` copies a finished build, the manifest
  ``streammix.yaml`` last, so an interrupted upload never leaves a manifest behind.

Where the server is and who the caller is: ``endpoint_url`` (for a server other than AWS,
e.g. MinIO) is a field of the store, so it travels inside the pickled settings to every
process; region and credentials come from boto3's standard chain (``AWS_*`` environment
variables, ``~/.aws``, instance roles) in each process.
"""

from __future__ import annotations

import io
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMES = ("s3://", "s3a://")
READ_BUFFER = 8 << 20  # bytes per ranged GET of a sequential reader
UPLOAD_THREADS = 8  # files uploaded at once (boto3 clients are thread-safe)
MANIFEST_NAME = "streammix.yaml"


class ObjectStoreError(ValueError):
    """A missing bucket or prefix, or an object that cannot be read or written."""


def is_object_url(path: str | Path) -> bool:
    return isinstance(path, str) and path.startswith(SCHEMES)


def split_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key`` or ``s3a://bucket/key``."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectStoreError(f"{url}: no bucket in the URL")
    return bucket, key


@dataclass(frozen=True, kw_only=True)
class ObjectInfo:
    url: str
    size: int
    mtime_ns: int


_CLIENTS: dict[str | None, Any] = {}
# (endpoint, url) -> what this process's latest listing said: the plan stats every listed
# object twice, and one HEAD per object would cost minutes on a driver listing 1e5 objects.
_LISTED: dict[tuple[str | None, str], ObjectInfo] = {}


@dataclass(frozen=True, kw_only=True)
class ObjectStore:
    """Where ``s3://`` paths live (picklable; each process makes its own client)."""

    endpoint_url: str | None = None  # None: AWS itself (boto3's default endpoint)

    def client(self) -> Any:
        if self.endpoint_url not in _CLIENTS:
            import boto3

            _CLIENTS[self.endpoint_url] = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url
            )
        return _CLIENTS[self.endpoint_url]

    def list(self, url: str) -> list[ObjectInfo]:
        """The object ``url`` itself, else every object under ``url/`` (sorted by key)."""
        bucket, key = split_url(url)
        scheme = url.split("://", 1)[0] + "://"
        prefix = key.rstrip("/")
        try:
            if prefix:
                exact = [item for item in self._items(bucket, prefix) if item["Key"] == prefix]
                if exact:
                    return self._remember([_info(scheme, bucket, exact[0])])
            items = self._items(bucket, prefix + "/" if prefix else "")
        except Exception as exc:  # botocore's ClientError and connection errors
            raise ObjectStoreError(f"cannot list {url}: {_reason(exc)}") from None
        found = [_info(scheme, bucket, item) for item in items if not item["Key"].endswith("/")]
        return self._remember(sorted(found, key=lambda info: info.url))

    def _remember(self, infos: list[ObjectInfo]) -> list[ObjectInfo]:
        for info in infos:
            _LISTED[(self.endpoint_url, info.url)] = info
        return infos

    def _items(self, bucket: str, prefix: str) -> list[dict]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def stat(self, url: str) -> ObjectInfo:
        """Size and modification time: from this process's latest listing, else a HEAD."""
        listed = _LISTED.get((self.endpoint_url, url))
        return listed if listed is not None else self._head(url)

    def _head(self, url: str) -> ObjectInfo:
        bucket, key = split_url(url)
        try:
            head = self.client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise ObjectStoreError(f"cannot read {url}: {_reason(exc)}") from None
        return ObjectInfo(
            url=url,
            size=int(head["ContentLength"]),
            mtime_ns=_nanoseconds(head["LastModified"]),
        )

    def open(self, url: str, *, size: int | None = None) -> io.BufferedReader:
        """A seekable binary reader of one object (ranged GETs of ``READ_BUFFER`` bytes)."""
        if size is None:
            size = self.stat(url).size
        return io.BufferedReader(_ObjectReader(self, url, size), buffer_size=READ_BUFFER)

    def upload_build(self, folder: Path, url: str, *, threads: int = UPLOAD_THREADS) -> list[str]:
        """Upload every file of ``folder`` under ``url``, ``streammix.yaml`` last; the keys.

        The other files go up ``threads`` at a time; the manifest only once all of them are
        there, so a failed upload never leaves one behind.
        """
        bucket, key = split_url(url)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        manifest = [p for p in files if p.relative_to(folder).as_posix() == MANIFEST_NAME]
        others = [p for p in files if p not in manifest]

        def upload(path: Path) -> str:
            name = posixpath.join(key.rstrip("/"), path.relative_to(folder).as_posix())
            try:
                self.client().upload_file(str(path), bucket, name)
            except Exception as exc:
                raise ObjectStoreError(
                    f"cannot upload to s3://{bucket}/{name}: {_reason(exc)}"
                ) from None
            return name

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            keys = list(pool.map(upload, others))
        return keys + [upload(path) for path in manifest]

    def delete_prefix(self, url: str) -> int:
        """Delete every object under ``url/`` (the manifest first); how many were deleted."""
        objects = [split_url(info.url)[1] for info in self.list(url.rstrip("/") + "/")]
        bucket, _ = split_url(url)
        objects.sort(key=lambda name: posixpath.basename(name) != MANIFEST_NAME)
        for name in objects:
            self.client().delete_object(Bucket=bucket, Key=name)
        for listed in [entry for entry in _LISTED if entry[1].startswith(url.rstrip("/") + "/")]:
            del _LISTED[listed]
        return len(objects)

    def exists(self, url: str) -> bool:
        """Whether the object is there now (always asks the server)."""
        try:
            self._head(url)
        except ObjectStoreError:
            return False
        return True


class _ObjectReader(io.RawIOBase):
    """The raw side of ``ObjectStore.open``: each ``readinto`` is one ranged GET."""

    def __init__(self, store: ObjectStore, url: str, size: int) -> None:
        self.store, self.url, self.size = store, url, size
        self.bucket, self.key = split_url(url)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.position)
        if want <= 0:
            return 0
        end = self.position + want - 1
        try:
            body = self.store.client().get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}"
            )["Body"]
            data = body.read()
        except Exception as exc:
            raise OSError(f"cannot read {self.url}: {_reason(exc)}") from None
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def _info(scheme: str, bucket: str, item: dict) -> ObjectInfo:
    return ObjectInfo(
        url=f"{scheme}{bucket}/{item['Key']}",
        size=int(item["Size"]),
        mtime_ns=_nanoseconds(item["LastModified"]),
    )


def _nanoseconds(moment: Any) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _reason(exc: BaseException) -> str:
    """A one-line cause: the S3 error code and message, or the exception text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        code, message = error.get("Code", ""), error.get("Message", "")
        if code in ("NoSuchBucket", "404") and not message:
            message = "not found"
        return f"{code}: {message}".strip(": ") or str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

"""An S3-compatible server (moto's server mode) on 127.0.0.1 for the object-storage tests.

``S3Server`` runs moto in its own process, logging every request, so a test can count
the GETs per object. The module-scoped ``s3`` fixture starts one with bucket ``BUCKET``
and sets, for the test's process and its children, the variables that boto3
(``AWS_*``: moto's dummy credentials) and upstream streaming (``S3_ENDPOINT_URL``) read.
Import it into a test module: ``from s3_server import BUCKET, s3_fixture``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runs import free_port  # noqa: E402

boto3 = pytest.importorskip("boto3")
BUCKET = "streammix-test"
GET_LINE = re.compile(r'"GET /(?P<key>[^ ?]+)(?:\?[^ ]*)? HTTP/1\.\d" (?P<status>\d+)')


class S3Server:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, log.read_text()
                time.sleep(0.1)
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.client.create_bucket(Bucket=BUCKET)

    def upload(self, folder: Path, prefix: str) -> list[str]:
        keys = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            self.client.upload_file(str(path), BUCKET, key)
            keys.append(key)
        return keys

    def gets(self) -> Counter:
        """Successful GETs per object key since the server started."""
        self._log_file.flush()
        counts: Counter = Counter()
        for match in GET_LINE.finditer(self.log.read_text()):
            if match["status"].startswith("2"):
                counts[match["key"].removeprefix(f"{BUCKET}/")] += 1
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log_file.close()


@pytest.fixture(scope="module", name="s3")
def s3_fixture(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "server.log")
    saved = {k: os.environ.get(k) for k in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(S3_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()



"""The weight channel: new domain weights from the training process to its DataLoader workers.

DataLoader workers are separate processes holding a copy of the dataset made when they
started, so weights chosen during training must travel through something both can see.
The channel is one small JSON file in a node-local directory that only the process which
created it (a rank's main process) writes, always by writing a temporary file and
``os.replace`` (readers never see a half-written state):

    {"run": <key>, "version": n, "horizon": H, "updates": [[start_batch, [w0, w1, ...]], ...]}

``updates`` are the published weight changes, each applying from a global batch index on;
``horizon`` promises that the order of every global batch ``< H`` is final: no update with
a start below ``H`` will ever be published. A worker about to produce batch ``b`` reads the
file only when ``b >= H`` and, in exact mode, waits (polling) until ``H > b``, or raises a
clear error after a timeout instead of hanging.

Every channel directory is new and uniquely named per dataset instance (``<pid>-<uuid>``),
so a run can never read the state of an earlier one; the creating process removes it when
the dataset is garbage collected or the interpreter exits, and removes directories left
behind by processes that no longer exist.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "state.json"
POLL_INTERVAL_S = 0.002
UNBOUNDED = 2**62


class WeightChannelTimeout(RuntimeError):
    """Weights for a batch were not published in time."""


@dataclass(frozen=True)
class ChannelState:
    version: int
    horizon: int
    updates: tuple[tuple[int, tuple[float, ...]], ...]


def _default_root() -> Path:
    return Path(tempfile.gettempdir()) / "streammix-channels"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(root: Path) -> None:
    """Delete channel directories whose creating process has exited."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


class WeightChannel:
    """One writer (the process that created it), any number of reading processes."""

    def __init__(self, directory: str | Path, *, owner_pid: int) -> None:
        self.directory = Path(directory)
        self.owner_pid = owner_pid
        self._cached: ChannelState | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, *, root: str | Path | None = None, horizon: int = 0,
               updates: Sequence[tuple[int, Sequence[float]]] = ()) -> WeightChannel:
        base = Path(root) if root is not None else _default_root()
        base.mkdir(parents=True, exist_ok=True)
        _remove_orphans(base)
        pid = os.getpid()
        directory = base / f"{pid}-{uuid.uuid4().hex}"
        directory.mkdir()
        channel = cls(directory, owner_pid=pid)
        channel._finalizer = weakref.finalize(channel, shutil.rmtree, str(directory), True)
        channel._write(ChannelState(0, horizon, tuple((int(s), tuple(map(float, w)))
                                                      for s, w in updates)))
        return channel

    def __getstate__(self) -> dict:
        # Workers get a read-only handle: no finalizer, no cached state.
        return {"directory": str(self.directory), "owner_pid": self.owner_pid}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], owner_pid=state["owner_pid"])

    @property
    def is_owner(self) -> bool:
        return os.getpid() == self.owner_pid

    def _write(self, state: ChannelState) -> None:
        if not self.is_owner:
            raise RuntimeError("only the process that created a weight channel may publish to it")
        payload = {"run": self.directory.name, "version": state.version,
                   "horizon": state.horizon, "updates": [[s, list(w)] for s, w in state.updates]}
        tmp = self.directory / f".{STATE_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.directory / STATE_FILE)
        self._cached = state

    def read(self) -> ChannelState:
        """The current published state (re-read from disk)."""
        try:
            payload = json.loads((self.directory / STATE_FILE).read_text())
        except FileNotFoundError:
            raise RuntimeError(
                f"the weight channel {self.directory} is gone: the training process that "
                "owned it has exited or closed it"
            ) from None
        if payload["run"] != self.directory.name:
            raise RuntimeError(f"weight channel {self.directory} holds another run's state")
        state = ChannelState(
            int(payload["version"]), int(payload["horizon"]),
            tuple((int(s), tuple(float(x) for x in w)) for s, w in payload["updates"]),
        )
        self._cached = state
        return state

    def state(self) -> ChannelState:
        return self._cached if self._cached is not None else self.read()

    def publish(self, start_batch: int, weights: Sequence[float], *, horizon: int) -> None:
        """Weights that apply from global batch ``start_batch`` on; batches < horizon final."""
        current = self.state()
        if start_batch < current.horizon:
            raise ValueError(
                f"cannot publish weights for batch {start_batch}: batches before "
                f"{current.horizon} are already final (workers may have produced them)"
            )
        if current.updates and start_batch < current.updates[-1][0]:
            raise ValueError(
                f"weight updates must be published in batch order: {start_batch} comes after "
                f"{current.updates[-1][0]}"
            )
        if horizon < current.horizon:
            raise ValueError(f"horizon may only grow ({current.horizon} -> {horizon})")
        updates = tuple(u for u in current.updates if u[0] != start_batch)
        updates += ((int(start_batch), tuple(float(w) for w in weights)),)
        self._write(ChannelState(current.version + 1, int(horizon), updates))

    def commit(self, horizon: int) -> None:
        """Declare every batch below ``horizon`` final without changing weights."""
        current = self.state()
        if horizon < current.horizon:
            raise ValueError(f"horizon may only grow ({current.horizon} -> {horizon})")
        if horizon > current.horizon:
            self._write(ChannelState(current.version + 1, int(horizon), current.updates))

    def wait_until_final(self, batch: int, *, timeout_s: float) -> ChannelState:
        """Block until batch ``batch`` is final (horizon > batch); return the state."""
        cached = self._cached
        if cached is not None and cached.horizon > batch:
            return cached
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.read()
            if state.horizon > batch:
                return state
            if time.monotonic() > deadline:
                raise WeightChannelTimeout(
                    f"weights for global batch {batch} were not published within {timeout_s:g} s "
                    f"(published through batch {state.horizon - 1}). With weight_updates='exact' "
                    "or 'lagged' an OnlineMixing callback (or your code calling "
                    "dataset.publish) must publish them; is it attached to the Trainer?"
                )
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        if self._finalizer is not None and self.is_owner:
            self._finalizer()

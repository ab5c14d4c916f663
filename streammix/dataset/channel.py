"""The weight channel: new domain weights from the training process to its DataLoader workers.

DataLoader workers are separate processes holding a copy of the dataset made when they
started, so weights chosen during training must travel through something both can see.
The channel is a small node-local directory that only the process which created it (a
rank's main process) writes. Both of its files cost O(1) per decision, however long the run:

``updates.bin``
    append-only records, one per published update: ``int64 start_batch`` then
    ``num_domains`` float64 weights. A later record with the same start replaces the
    earlier one. Readers remember how far they have read and parse only new records.
``horizon``
    one int64, memory-mapped by every process (an aligned 8-byte store is atomic, so a
    reader never sees half of it): the order of every global batch ``< horizon`` is final,
    no update with a start below it will ever be published. Polling it costs no system
    call.

The writer appends (and flushes) an update before it raises the horizon past it, so a
reader that sees horizon ``H`` finds every update below ``H`` complete in the file. A
worker about to produce batch ``b`` reads only when ``b >= H`` and, in exact mode, waits
(polling the mapped horizon) until ``H > b``, or raises a clear error after a timeout
instead of hanging, or as soon as the channel's directory is gone.

Every channel directory is new and uniquely named per dataset instance (``<pid>-<uuid>``),
so a run can never read the state of an earlier one; the creating process removes it when
the dataset is garbage collected or the interpreter exits, and removes directories left
behind by processes that no longer exist.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

UPDATES_FILE = "updates.bin"
HORIZON_FILE = "horizon.bin"
GONE_CHECK_S = 1.0  # how often a waiting reader checks that the channel still exists
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

    def __init__(self, directory: str | Path, *, owner_pid: int, num_domains: int) -> None:
        self.directory = Path(directory)
        self.owner_pid = owner_pid
        self.num_domains = num_domains
        self._record = struct.Struct(f"<q{num_domains}d")
        self._cached: ChannelState | None = None
        self._updates: tuple[tuple[int, tuple[float, ...]], ...] = ()
        self._offset = 0  # bytes of updates.bin already parsed
        self._version = 0
        self._horizon: np.ndarray | None = None  # the mapped int64
        self._files: dict[str, BinaryIO] = {}  # "reader", "writer": kept open between calls
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, *, num_domains: int, root: str | Path | None = None, horizon: int = 0,
               updates: Sequence[tuple[int, Sequence[float]]] = ()) -> WeightChannel:
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}")
        base = Path(root) if root is not None else _default_root()
        base.mkdir(parents=True, exist_ok=True)
        _remove_orphans(base)
        pid = os.getpid()
        directory = base / f"{pid}-{uuid.uuid4().hex}"
        directory.mkdir()
        (directory / HORIZON_FILE).write_bytes(struct.pack("<q", 0))
        (directory / UPDATES_FILE).touch()
        channel = cls(directory, owner_pid=pid, num_domains=num_domains)
        channel._finalizer = weakref.finalize(channel, _close_and_remove, channel._files,
                                              str(directory))
        for start, weights in updates:
            channel._append(int(start), weights)
        channel._set_horizon(int(horizon))
        channel.read()
        return channel

    def __getstate__(self) -> dict:
        # Workers get a read-only handle: no finalizer, no open files, nothing read yet.
        return {"directory": str(self.directory), "owner_pid": self.owner_pid,
                "num_domains": self.num_domains}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], owner_pid=state["owner_pid"],
                      num_domains=state["num_domains"])

    @property
    def is_owner(self) -> bool:
        return os.getpid() == self.owner_pid

    def _gone(self) -> RuntimeError:
        return RuntimeError(f"the weight channel {self.directory} is gone: the training "
                            "process that owned it has exited or closed it")

    def _check_owner(self) -> None:
        if not self.is_owner:
            raise RuntimeError("only the process that created a weight channel may publish to it")

    def _horizon_map(self) -> np.ndarray:
        if self._horizon is None:
            try:
                mode = "r+" if self.is_owner else "r"
                self._horizon = np.memmap(self.directory / HORIZON_FILE, dtype="<i8", mode=mode,
                                          shape=(1,))
            except FileNotFoundError:
                raise self._gone() from None
        return self._horizon

    def _append(self, start_batch: int, weights: Sequence[float]) -> None:
        self._check_owner()
        values = tuple(float(w) for w in weights)
        if len(values) != self.num_domains:
            raise ValueError(f"expected {self.num_domains} weights, got {len(values)}")
        writer = self._files.get("writer")
        if writer is None:
            writer = open(self.directory / UPDATES_FILE, "ab", buffering=0)  # noqa: SIM115
            self._files["writer"] = writer
        writer.write(self._record.pack(start_batch, *values))

    def _set_horizon(self, horizon: int) -> None:
        self._check_owner()
        self._horizon_map()[0] = horizon  # after the records it covers were written

    def read(self) -> ChannelState:
        """The current published state: the horizon, then any updates appended since the
        last read (the horizon first, so every update below it is already complete)."""
        horizon = int(self._horizon_map()[0])
        reader = self._files.get("reader")
        if reader is None:
            try:
                reader = open(self.directory / UPDATES_FILE, "rb")  # noqa: SIM115
            except FileNotFoundError:
                raise self._gone() from None
            self._files["reader"] = reader
        # pread, not seek + read: a forked DataLoader worker shares this file's offset
        fd = reader.fileno()
        data = os.pread(fd, max(os.fstat(fd).st_size - self._offset, 0), self._offset)
        size = self._record.size
        complete = len(data) - len(data) % size
        updates = self._updates
        for offset in range(0, complete, size):
            start, *weights = self._record.unpack_from(data, offset)
            if updates and updates[-1][0] == start:  # publish order: only the last can repeat
                updates = updates[:-1]
            updates += ((start, tuple(weights)),)  # copies references only
        self._updates = updates
        self._offset += complete
        cached = self._cached
        if cached is not None and complete == 0 and cached.horizon == horizon:
            return cached
        if complete:
            self._version += 1
        state = ChannelState(self._version, horizon, self._updates)
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
        self._append(int(start_batch), weights)
        self._set_horizon(int(horizon))
        self.read()

    def commit(self, horizon: int) -> None:
        """Declare every batch below ``horizon`` final without changing weights."""
        current = self.state()
        if horizon < current.horizon:
            raise ValueError(f"horizon may only grow ({current.horizon} -> {horizon})")
        if horizon > current.horizon:
            self._set_horizon(int(horizon))
            self.read()

    def wait_until_final(self, batch: int, *, timeout_s: float) -> ChannelState:
        """Block until batch ``batch`` is final (horizon > batch); return the state."""
        cached = self._cached
        if cached is not None and cached.horizon > batch:
            return cached
        horizon = self._horizon_map()
        now = time.monotonic()
        deadline, next_check = now + timeout_s, now + GONE_CHECK_S
        while True:
            if int(horizon[0]) > batch:
                return self.read()
            now = time.monotonic()
            if now > next_check:
                if not self.directory.is_dir():
                    raise self._gone()
                next_check = now + GONE_CHECK_S
            if now > deadline:
                state = self.read()
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


def _close_and_remove(files: dict[str, BinaryIO], directory: str) -> None:
    for handle in files.values():
        handle.close()
    files.clear()
    shutil.rmtree(directory, True)

"""The weight channel: one writer, reading processes, horizons, timeouts, cleanup."""

import multiprocessing as mp
import os
import pickle
import time

import pytest

from streammix.dataset.channel import WeightChannel, WeightChannelTimeout


def _reader(handle: bytes, batch: int, timeout: float, out: "mp.Queue") -> None:
    channel = pickle.loads(handle)
    try:
        state = channel.wait_until_final(batch, timeout_s=timeout)
        out.put(("ok", state.horizon, state.updates))
    except Exception as exc:  # noqa: BLE001 - sent back to the test
        out.put(("error", type(exc).__name__, str(exc)))


def test_publish_reaches_another_process_and_unblocks_it(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_reader, args=(pickle.dumps(channel), 5, 30.0, out))
    proc.start()
    time.sleep(0.5)  # the reader is now waiting for batch 5
    channel.publish(3, [0.25, 0.75], horizon=10)
    kind, horizon, updates = out.get(timeout=60)
    proc.join(timeout=30)
    assert kind == "ok" and horizon == 10
    assert updates == ((3, (0.25, 0.75)),)


def test_wait_times_out_with_a_clear_error(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2, horizon=2)
    with pytest.raises(WeightChannelTimeout, match="global batch 4 were not published"):
        channel.wait_until_final(4, timeout_s=0.05)
    assert channel.wait_until_final(1, timeout_s=0.05).horizon == 2


def test_publishing_into_the_final_past_or_out_of_order_is_refused(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2)
    channel.publish(4, [1.0, 0.0], horizon=8)
    with pytest.raises(ValueError, match="already final"):
        channel.publish(6, [0.5, 0.5], horizon=9)
    with pytest.raises(ValueError, match="horizon may only grow"):
        channel.commit(7)
    channel.publish(8, [0.5, 0.5], horizon=12)
    assert [s for s, _ in channel.read().updates] == [4, 8]


def test_only_the_creator_publishes(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2)
    copy = pickle.loads(pickle.dumps(channel))
    copy.owner_pid = os.getpid() + 1
    with pytest.raises(RuntimeError, match="only the process that created"):
        copy.publish(0, [1.0, 0.0], horizon=1)


def test_runs_never_share_state_and_close_removes_it(tmp_path) -> None:
    first = WeightChannel.create(root=tmp_path, num_domains=2)
    first.publish(0, [1.0, 0.0], horizon=5)
    second = WeightChannel.create(root=tmp_path, num_domains=2)
    assert second.directory != first.directory
    assert second.read().updates == () and second.read().horizon == 0
    first.close()
    assert not first.directory.exists()
    with pytest.raises(RuntimeError, match="is gone"):
        pickle.loads(pickle.dumps(first)).read()


def test_directories_of_dead_processes_are_removed(tmp_path) -> None:
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=os.getpid)
    proc.start()
    proc.join()
    orphan = tmp_path / f"{proc.pid}-deadbeef"
    orphan.mkdir()
    (orphan / "state.json").write_text("{}")
    WeightChannel.create(root=tmp_path, num_domains=2)
    assert not orphan.exists()

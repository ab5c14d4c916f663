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


def test_a_reader_parses_only_what_was_appended_since_its_last_read(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2)
    reader = pickle.loads(pickle.dumps(channel))
    for batch in range(50):
        channel.publish(batch, [batch / 50, 1 - batch / 50], horizon=batch + 1)
        state = reader.wait_until_final(batch, timeout_s=5)
        assert state.updates[-1] == (batch, (batch / 50, 1 - batch / 50))
        assert len(state.updates) == batch + 1
    channel.publish(50, [1.0, 0.0], horizon=50)
    channel.publish(50, [0.0, 1.0], horizon=51)  # the same start again replaces it
    state = reader.read()
    assert state.updates[-1] == (50, (0.0, 1.0)) and len(state.updates) == 51
    size = (channel.directory / "updates.bin").stat().st_size
    assert size == 52 * (8 + 2 * 8)  # append-only: one record per publish, nothing rewritten


def test_a_waiting_reader_learns_that_the_channel_is_gone(tmp_path) -> None:
    channel = WeightChannel.create(root=tmp_path, num_domains=2, horizon=1)
    reader = pickle.loads(pickle.dumps(channel))
    reader.read()
    channel.close()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="is gone"):
        reader.wait_until_final(5, timeout_s=30)
    assert time.monotonic() - started < 5

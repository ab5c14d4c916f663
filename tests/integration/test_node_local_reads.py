"""Node-local reads in real processes: two "nodes" on one machine, each with its own cache
and the launcher environment upstream reads (``RANK``/``WORLD_SIZE``/``LOCAL_WORLD_SIZE``,
``NODE_RANK``), reading a local folder as their remote.

- Each node's cache ends up holding exactly the shards of its canonical groups.
- Together the nodes serve the global batches one node serves with the same ``G`` and ``C``,
  with online weights applied from the batch they were published for.
- A checkpoint of the 2-node run (in its second epoch) resumed on one node, which alone
  would choose ``C = 1``, adopts ``C = 2`` and serves the uninterrupted run's batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streaming import MDSWriter

from streammix.core.groups import shard_of_samples, split_domain
from streammix.core.passes import DomainLayout

sys.path.insert(0, str(Path(__file__).parent))
from runs import free_port  # noqa: E402

SCRIPT = Path(__file__).with_name("node_read.py")
DOMAINS = {"alpha": 120, "beta": 60, "gamma": 12}  # gamma: one shard, read by both nodes
SHARD = 16  # about this many samples per shard
BATCHES = 30  # an epoch is 24 global batches of 8


def _write_remote(root: Path) -> None:
    for name, count in DOMAINS.items():
        with MDSWriter(out=str(root / name), columns={"text": "str", "index": "int"},
                       compression=None, size_limit=SHARD * 40) as writer:
            for i in range(count):
                writer.write({"text": f"{name}:{i:06d}".ljust(24), "index": i})


def _shard_sizes(folder: Path) -> tuple[int, ...]:
    index = json.loads((folder / "index.json").read_text())
    return tuple(int(shard["samples"]) for shard in index["shards"])


def _start_nodes(tmp: Path, name: str, num_nodes: int, *args: str) -> list:
    port = str(free_port())
    procs = []
    for node in range(num_nodes):
        env = dict(os.environ, RANK=str(node), WORLD_SIZE=str(num_nodes), LOCAL_WORLD_SIZE="1",
                   LOCAL_RANK="0", NODE_RANK=str(node), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        log = open(tmp / f"{name}.node{node}.log", "w")  # noqa: SIM115 - closed in _records
        cmd = [sys.executable, str(SCRIPT), "--remote", str(tmp / "remote"), "--cache",
               str(tmp / f"{name}.cache{node}"), "--out", str(tmp / f"{name}.node{node}.json"),
               *args]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def _records(tmp: Path, name: str, procs: list) -> list[dict]:
    for node, (proc, log) in enumerate(procs):
        code = proc.wait(timeout=300)
        log.close()
        assert code == 0, (tmp / f"{name}.node{node}.log").read_text()[-4000:]
    return [json.loads((tmp / f"{name}.node{n}.json").read_text()) for n in range(len(procs))]


def _cached_shards(cache: Path, name: str) -> set[int]:
    files = [f.name for f in (cache / name).glob("shard.*.mds")]
    return {int(f.split(".")[1]) for f in files}


@pytest.mark.slow  # 4 processes over 3 starts: 100-160 s on the shared 2-core machine
def test_two_nodes_read_their_own_shards_and_serve_the_one_node_batches(tmp_path) -> None:
    _write_remote(tmp_path / "remote")
    one = _start_nodes(tmp_path, "one", 1, "--canonical-nodes", "2", "--online",
                       "--batches", str(BATCHES))
    two = _start_nodes(tmp_path, "two", 2, "--online", "--batches", str(BATCHES),
                       "--state-at", "27")
    one, two = _records(tmp_path, "one", one)[0], _records(tmp_path, "two", two)
    # the default C of a 2-node first start is 2; the nodes' halves make the one-node batches
    assert [r["canonical_nodes"] for r in two] == [2, 2]
    joined = [a + b for a, b in zip(two[0]["batches"], two[1]["batches"], strict=True)]
    assert joined == one["batches"] and len(joined) == BATCHES
    for i, batch in enumerate(joined):  # online weights from the batch they were published for
        assert {d for d, _ in batch} == ({0} if i < 3 else {0, 1, 2}), i
    # every node's cache holds its groups' shards, no others
    for node in range(2):
        cache = tmp_path / f"two.cache{node}"
        for name in DOMAINS:
            layout = DomainLayout(shard_sizes=_shard_sizes(tmp_path / "remote" / name))
            starts, _ = split_domain(layout, 2).pieces[node]
            assert _cached_shards(cache, name) == set(shard_of_samples(layout, starts).tolist())
    alpha = [_cached_shards(tmp_path / f"two.cache{n}", "alpha") for n in range(2)]
    shards = len(_shard_sizes(tmp_path / "remote" / "alpha"))
    assert not alpha[0] & alpha[1] and len(alpha[0] | alpha[1]) == shards > 2
    # resume the 2-node checkpoint (second epoch, batch 27) on one node
    state = tmp_path / "state.json"
    state.write_text(json.dumps(two[0]["state"]))
    resumed = _records(tmp_path, "resumed", _start_nodes(
        tmp_path, "resumed", 1, "--online", "--batches", str(BATCHES), "--resume", str(state)))[0]
    assert resumed["canonical_nodes"] == 2 and resumed["first"] == 27
    assert resumed["batches"] == one["batches"][27:]


@pytest.mark.slow  # 3 processes over 2 starts: about a minute on the shared 2-core machine
def test_two_nodes_with_one_pass_epochs_read_their_part_and_serve_every_sample_once(
        tmp_path) -> None:
    """Natural proportions (static, no weights): one-pass epochs. Two epochs on two nodes
    equal the one-node run with C = 2, every epoch serves every sample once, and the nodes'
    caches split each domain's shards, sharing at most the one shard where their element
    ranges meet (gamma is a single shard, read by both)."""
    _write_remote(tmp_path / "remote")
    epochs = 2 * sum(DOMAINS.values()) // 8  # global batches of 8
    one = _start_nodes(tmp_path, "one", 1, "--canonical-nodes", "2", "--batches", str(epochs))
    two = _start_nodes(tmp_path, "two", 2, "--batches", str(epochs))
    one, two = _records(tmp_path, "one", one)[0], _records(tmp_path, "two", two)
    joined = [a + b for a, b in zip(two[0]["batches"], two[1]["batches"], strict=True)]
    assert joined == one["batches"] and len(joined) == epochs
    per_epoch = epochs // 2
    every = sorted([d, i] for d, n in enumerate(DOMAINS.values()) for i in range(n))
    for e in range(2):
        served = [x for batch in joined[e * per_epoch:(e + 1) * per_epoch] for x in batch]
        assert sorted(served) == every, e
    for name in DOMAINS:
        shards = len(_shard_sizes(tmp_path / "remote" / name))
        cached = [_cached_shards(tmp_path / f"two.cache{n}", name) for n in range(2)]
        assert len(cached[0] | cached[1]) == shards and len(cached[0] & cached[1]) <= 1, name

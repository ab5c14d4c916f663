"""Canonical nodes through StreamMixDataset on one node: C given, chosen, kept on resume.

Upstream joins a torch.distributed group as soon as ``WORLD_SIZE > 1``, so several physical
nodes need several processes: tests/integration/test_node_local_reads.py runs them (each
node's cache, and resume on another node count). Here: the order with ``C > 1`` is the
core's, workers and online weights keep it, checkpoints record ``C`` and resumes adopt it.
"""

from __future__ import annotations

import gc

import pytest
from streaming import Stream
from streaming.base.world import World
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.core.canonical import node_slices, slice_of
from streammix.core.order import GlobalOrder, OrderConfig
from streammix.dataset.nodes import check_physical_nodes, choose_canonical_nodes

G = 8  # global batch size of every run here


def _make(dirs, *, upstream=None, **mixing) -> StreamMixDataset:
    gc.collect()
    mixing.setdefault("seed", 7)
    return StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs],
                            batch_size=G, mixing=MixingConfig(**mixing),
                            **(upstream or {}))


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


def _collate(samples: list[dict]) -> list[tuple[int, int]]:
    return _ids(samples)


def test_canonical_nodes_give_the_order_of_the_core_and_workers_do_not_change_it(mds_domains):
    dataset = _make(mds_domains, canonical_nodes=2)
    assert dataset.canonical_nodes == 2
    config = OrderConfig(seed=7, canonical_nodes=2, global_batch_size=G, one_pass_epochs=True)
    assert dataset.order_config == config  # natural proportions: one-pass epochs
    order = GlobalOrder(config=config, domains=dataset.layouts, schedule=dataset.schedule)
    domains, local = order.samples(0, dataset.epoch_size)
    expected = list(zip(domains.tolist(), local.tolist()))
    assert _ids(dataset) == expected
    del dataset
    dataset = _make(mds_domains, canonical_nodes=2)  # fresh: workers fork before any iteration
    loader = DataLoader(dataset, batch_size=G, num_workers=2, collate_fn=_collate)
    assert [x for batch in loader for x in batch] == expected
    del dataset, loader
    assert _ids(_make(mds_domains, canonical_nodes=1)) != expected  # C is part of the order


@pytest.mark.parametrize("epoch_size", [None, 212])  # whole batches, and a partial last one
def test_per_stream_batches_cut_into_canonical_slices_of_their_domain_groups(
        mds_domains, epoch_size) -> None:
    upstream = {"batching_method": "per_stream", "epoch_size": epoch_size}
    one = _make(mds_domains, upstream=upstream)
    batch_domains = [{d for d, _ in batch} for batch in _batches(one)]
    del one
    dataset = _make(mds_domains, canonical_nodes=2, upstream=upstream)
    epochs = [_batches(dataset) for _ in range(2)]
    assert [{d for d, _ in batch} for batch in epochs[0]] == batch_domains  # same interleave
    groups = dataset.per_stream_groups
    E = dataset.epoch_size
    for e, epoch in enumerate(epochs):
        for j, batch in enumerate(epoch):
            for k, (d, i) in enumerate(batch):  # whole batches are served in residue order
                residue = k if len(batch) == G else (e * E + j * G + k) % G
                starts, stops = groups[d].pieces[residue * 2 // G]  # slice c: group c only
                assert any(a <= i < b for a, b in zip(starts.tolist(), stops.tolist()))
    if epoch_size is None:  # 27 whole batches: group c's stream is its slices, pass by pass
        assert len(dataset) == 216
        for d in range(3):
            for c in range(2):
                stream = [i for batch in epochs[0] + epochs[1] if batch[0][0] == d
                          for _, i in batch[c * G // 2:(c + 1) * G // 2]]
                starts, stops = groups[d].pieces[c]
                members = sorted(i for a, b in zip(starts.tolist(), stops.tolist())
                                 for i in range(a, b))
                assert sorted(stream[:len(members)]) == members
    del dataset
    loader = DataLoader(_make(mds_domains, canonical_nodes=2, upstream=upstream),
                        batch_size=G, num_workers=2, collate_fn=_collate)
    assert [list(b) for b in loader] == epochs[0]


def test_per_stream_with_canonical_nodes_resumes_exactly(mds_domains) -> None:
    upstream = {"batching_method": "per_stream", "epoch_size": 212}
    dataset = _make(mds_domains, canonical_nodes=2, upstream=upstream)
    reference = [_ids(dataset) for _ in range(3)]
    del dataset
    fresh = _make(mds_domains, canonical_nodes=2, upstream=upstream)
    mid = fresh.state_dict(num_samples=5 * G, from_beginning=True)
    del fresh
    running = _make(mds_domains, canonical_nodes=2, upstream=upstream)
    _ids(running)
    at_end = running.state_dict(num_samples=0, from_beginning=True)
    del running
    for state, expected in ((mid, [reference[0][5 * G:], reference[1]]),
                            (at_end, reference[1:])):
        resumed = _make(mds_domains, upstream=upstream)  # C adopted from the checkpoint
        resumed.load_state_dict(state)
        assert resumed.canonical_nodes == 2
        assert [_ids(resumed) for _ in range(2)] == expected
        del resumed


def _batches(dataset) -> list[list[tuple[int, int]]]:
    served = _ids(dataset)
    return [served[b:b + G] for b in range(0, len(served), G)]


def test_default_is_the_physical_node_count_on_a_first_start() -> None:
    common = {"packing": False, "per_stream": False, "global_batch_size": 64}
    assert [choose_canonical_nodes(given=None, num_nodes=n, **common) for n in (1, 2, 8)] == [
        1, 2, 8]
    assert choose_canonical_nodes(given=4, num_nodes=2, **common) == 4
    assert choose_canonical_nodes(given=None, num_nodes=8, packing=True, per_stream=False,
                                  global_batch_size=64) == 1


@pytest.mark.parametrize(("num_nodes", "canonical_nodes", "ok"), [
    (1, 4, True), (2, 4, True), (4, 4, True), (8, 4, True), (3, 4, False), (4, 6, False)])
def test_physical_nodes_must_divide_c_or_be_a_multiple_of_it(num_nodes, canonical_nodes, ok):
    if ok:
        check_physical_nodes(num_nodes, canonical_nodes)
    else:
        with pytest.raises(ValueError, match=f"{num_nodes} physical nodes cannot serve "
                                             f"{canonical_nodes} canonical nodes"):
            check_physical_nodes(num_nodes, canonical_nodes)


def test_upstream_num_canonical_nodes_is_c(mds_domains) -> None:
    by_upstream = _make(mds_domains, upstream={"num_canonical_nodes": 2})
    assert by_upstream.canonical_nodes == 2
    reference = _ids(by_upstream)
    del by_upstream
    assert _ids(_make(mds_domains, canonical_nodes=2)) == reference
    with pytest.raises(ValueError, match="disagree: give the canonical nodes once"):
        _make(mds_domains, canonical_nodes=4, upstream={"num_canonical_nodes": 2})


@pytest.mark.parametrize(("mixing", "upstream", "error"), [
    ({"canonical_nodes": 3}, None, "must divide the global batch size 8"),
    ({"canonical_nodes": 0}, None, "positive integer"),
    ({"canonical_nodes": 2, "sequence_length": 8}, None, "packing .* does not support"),
    ({"canonical_nodes": 3}, {"batching_method": "per_stream"}, "must divide the global batch"),
    ({}, {"num_canonical_nodes": -1}, "positive integer"),
])
def test_unsupported_canonical_nodes_are_clear_errors(mds_domains, mixing, upstream, error):
    with pytest.raises(ValueError, match=error):
        _make(mds_domains, upstream=upstream, **mixing)


def test_resume_adopts_the_checkpoint_c_and_equals_the_uninterrupted_run(mds_domains) -> None:
    dataset = _make(mds_domains, canonical_nodes=2)
    full = _ids(dataset) + _ids(dataset)  # two epochs, uninterrupted
    E = dataset.epoch_size
    state = dataset.state_dict(num_samples=0, from_beginning=True)
    assert state["streammix"]["canonical_nodes"] == 2 and state["num_canonical_nodes"] == 2
    del dataset
    # a checkpoint in the second epoch, as Composer takes it after 3 batches of it
    state = dict(state, epoch=1, sample_in_epoch=3 * G,
                 streammix=dict(state["streammix"], position=E + 3 * G))
    resumed = _make(mds_domains)  # C not given: one node alone would choose C = 1
    assert resumed.canonical_nodes == 1
    resumed.load_state_dict(state)
    assert resumed.canonical_nodes == 2
    assert _ids(resumed) == full[E + 3 * G:]
    del resumed
    other = _make(mds_domains, canonical_nodes=1)
    with pytest.raises(ValueError, match="checkpoint's canonical_nodes \\(2\\) differs"):
        other.load_state_dict(state)


def test_a_checkpoint_from_before_canonical_nodes_resumes_with_c_1(mds_domains) -> None:
    dataset = _make(mds_domains)
    full = _ids(dataset)
    state = dataset.state_dict(num_samples=2 * G, from_beginning=True)
    del dataset
    del state["streammix"]["canonical_nodes"]
    resumed = _make(mds_domains, upstream={"num_canonical_nodes": 1})
    resumed.load_state_dict(state)
    assert _ids(resumed) == full[2 * G:]


def _publishing_run(dirs, *, num_workers: int, state=None, stop: int = 40
                    ) -> tuple[list[list[tuple[int, int]]], dict | None]:
    """C = 2, weights published while training: from batch 3 on only beta and gamma; with
    ``state``, resumed from it. Returns the batches and a checkpoint after batch 29 (second
    epoch: an epoch is 27 batches)."""
    dataset = _make(dirs, canonical_nodes=2, weight_updates="exact", publish_timeout_s=60)
    if state is not None:
        dataset.load_state_dict(state)
    else:
        dataset.publish(0, {"alpha": 1.0, "beta": 0, "gamma": 0}, final_until=3)
    first = 0 if state is None else state["streammix"]["position"] // G
    batches, checkpoint, i = [], None, first
    while i < stop:
        loader = DataLoader(dataset, batch_size=G, num_workers=num_workers, collate_fn=_collate)
        for batch in loader:
            batches.append(batch)
            if i == 2:
                dataset.publish(3, {"alpha": 0, "beta": 1.0, "gamma": 1.0}, final_until=10**9)
            i += 1
            if i == 30 and state is None:
                checkpoint = dataset.state_dict(num_samples=3 * G, from_beginning=True)
            if i == stop:
                break
        del loader
    del dataset
    return batches, checkpoint


@pytest.mark.parametrize("num_workers", [0, 2])
def test_online_weights_apply_from_their_batch_and_resume_across_epochs(mds_domains,
                                                                        num_workers) -> None:
    batches, checkpoint = _publishing_run(mds_domains, num_workers=num_workers)
    for i, batch in enumerate(batches):
        assert {d for d, _ in batch} == ({0} if i < 3 else {1, 2}), (i, batch)
    assert checkpoint["epoch"] == 1 and checkpoint["streammix"]["position"] == 30 * G
    resumed, _ = _publishing_run(mds_domains, num_workers=num_workers, state=checkpoint)
    assert resumed == batches[30:]


@pytest.mark.parametrize("start", [16, 19, 212])
def test_ranks_of_any_world_serve_the_same_batch_and_nodes_only_their_slices(mds_domains,
                                                                              start) -> None:
    """A batch starting off a multiple of G (a later epoch of an epoch size that is not a
    multiple of G) is served in residue order: the same sequence for every world, and each
    node's positions in its own canonical slices."""
    dataset = _make(mds_domains, canonical_nodes=4)
    sequences = {}
    for num_nodes, ranks_per_node in ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1)):
        parts = []
        for rank in range(num_nodes * ranks_per_node):
            world = World(num_nodes=num_nodes, ranks_per_node=ranks_per_node,
                          workers_per_rank=1, worker=rank)
            positions = dataset.rank_positions(start, G, world)
            node = rank // ranks_per_node
            slices = {slice_of(int(p), 4, G) for p in positions}
            if num_nodes <= 4:  # N divides C: the node's own slices
                assert slices <= set(node_slices(node=node, num_nodes=num_nodes,
                                                 canonical_nodes=4))
            else:  # C divides N: N / C nodes share one slice
                assert slices == {node * 4 // num_nodes}
            parts.extend(positions.tolist())
        sequences[num_nodes, ranks_per_node] = parts
    reference = sorted(range(start, start + G), key=lambda p: p % G)
    assert all(seq == reference for seq in sequences.values()), sequences


def test_epochs_that_are_not_whole_batches_serve_the_order_in_residue_order(mds_domains):
    dataset = _make(mds_domains, canonical_nodes=2, upstream={"epoch_size": 212})
    served = _ids(dataset) + _ids(dataset)
    # not the natural size (216): epochs cut from the endless order of the canonical lanes
    assert not dataset.order_config.uses_one_pass_epochs
    order = GlobalOrder(config=OrderConfig(seed=7, canonical_nodes=2, global_batch_size=G),
                        domains=dataset.layouts, schedule=dataset.schedule)
    domains, local = order.samples(0, 2 * 212)
    positions = []
    for epoch in range(2):
        for start in range(212 * epoch, 212 * (epoch + 1), G):
            stop = min(start + G, 212 * (epoch + 1))
            positions += sorted(range(start, stop), key=lambda p: p % G) if stop - start == G \
                else list(range(start, stop))
    assert served == [(int(domains[p]), int(local[p])) for p in positions]
    assert served[:212] == list(zip(domains[:212].tolist(), local[:212].tolist()))

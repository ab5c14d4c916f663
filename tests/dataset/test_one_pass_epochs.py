"""One-pass epochs with canonical nodes through StreamMixDataset: at natural proportions
every epoch serves every sample exactly once with any ``C`` dividing ``G``, global batches
that do and do not divide the epoch; resumes (mid-epoch, epoch end, an epoch's last batch,
into a fresh dataset, with DataLoader workers, on other rank and node counts) equal the
uninterrupted run; a checkpoint of the earlier C > 1 order is refused."""

from __future__ import annotations

import gc
from collections import Counter

import numpy as np
import pytest
from streaming import Stream
from streaming.base.world import World
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.core.canonical import node_slices, slice_of
from streammix.core.groups import shard_of_samples
from streammix.core.order import GlobalOrder

SIZES = (120, 60, 36)  # the mds_domains fixture: 216 samples, shards of about 16
E = sum(SIZES)


def _make(dirs, G: int, C: int | None, **upstream) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=G,
                            mixing=MixingConfig(seed=5, canonical_nodes=C), **upstream)


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


EVERY_SAMPLE = Counter({(d, i): 1 for d, n in enumerate(SIZES) for i in range(n)})
CASES = [(2, 8), (2, 10), (4, 8), (4, 16)]  # 216 = 27 * 8; 216 % 10 = 6; 216 % 16 = 8


@pytest.mark.parametrize(("C", "G"), CASES)
def test_every_epoch_serves_every_sample_once(mds_domains, C, G) -> None:
    dataset = _make(mds_domains, G, C)
    assert dataset.order_config.uses_one_pass_epochs and dataset.epoch_size == E
    epochs = [_ids(dataset) for _ in range(3)]
    for served in epochs:
        assert Counter(served) == EVERY_SAMPLE
    assert len({tuple(e) for e in epochs}) == 3
    # every whole batch keeps the domain balance of the weights (within C of w * G)
    for served in epochs:
        for start in range(0, E - G + 1, G):
            counts = Counter(d for d, _ in served[start:start + G])
            for d, n in enumerate(SIZES):
                assert abs(counts[d] - n / E * G) < C


def _checkpoints(dirs, G: int, C: int, num_workers: int):
    """Three epochs uninterrupted, and the states Composer takes: mid-epoch 1, at the end of
    epoch 0 (already in epoch 1, 0 samples), and on epoch 1's last batch (all counted)."""
    dataset = _make(dirs, G, C)
    epochs = []
    states = {}
    for epoch in range(3):
        loader = DataLoader(dataset, batch_size=G, num_workers=num_workers,
                            collate_fn=_ids)
        served = []
        for batch in loader:
            served += batch
            if epoch == 1 and len(served) == 3 * G:
                states["mid"] = (dataset.state_dict(num_samples=3 * G, from_beginning=True),
                                 E + 3 * G)
        if epoch == 0:
            states["end"] = (dataset.state_dict(num_samples=0, from_beginning=True), E)
        if epoch == 1:
            states["last"] = (dataset.state_dict(num_samples=E, from_beginning=True), 2 * E)
        epochs.append(served)
        del loader
    del dataset
    return [x for e in epochs for x in e], states


@pytest.mark.parametrize(("C", "G", "num_workers"), [(2, 10, 0), (4, 16, 0), (4, 8, 2)])
def test_resumes_equal_the_uninterrupted_run(mds_domains, C, G, num_workers) -> None:
    full, states = _checkpoints(mds_domains, G, C, num_workers)
    assert states["end"][0]["epoch"] == 1 and states["last"][0]["sample_in_epoch"] == E
    for name, (state, position) in states.items():
        assert state["streammix"]["epoch_order"] == "one_pass"
        resumed = _make(mds_domains, G, None)  # C adopted from the checkpoint
        resumed.load_state_dict(state)
        assert resumed.canonical_nodes == C
        served = []
        while len(served) < 3 * E - position:
            loader = DataLoader(resumed, batch_size=G, num_workers=num_workers,
                                collate_fn=_ids)
            served += [x for batch in loader for x in batch]
            del loader
        assert served == full[position:], name
        del resumed


def _rank_serves(dataset: StreamMixDataset, world: World, epoch: int, sample_in_epoch: int
                 ) -> list[tuple[int, np.ndarray, list[tuple[int, int]]]]:
    """What one rank serves from a checkpoint, with an order made fresh at that point:
    ``(global batch, positions, samples)`` per batch."""
    order = GlobalOrder(config=dataset.order_config, domains=dataset.layouts,
                        schedule=dataset.schedule)
    result = []
    for batch, start, size in dataset._epoch_batches(epoch, sample_in_epoch, world):
        positions = dataset.rank_positions(start, size, world)
        picks = [order.samples(int(p), int(p) + 1) for p in positions]
        result.append((batch, positions, [(int(d[0]), int(s[0])) for d, s in picks]))
    return result


@pytest.mark.parametrize(("C", "G"), [(4, 16), (2, 10)])
def test_other_rank_and_node_counts_serve_the_same_epochs_and_nodes_read_their_part(
        mds_domains, C, G) -> None:
    dataset = _make(mds_domains, G, C)
    served = [x for _ in range(3) for x in _ids(dataset)]
    d, s = GlobalOrder(config=dataset.order_config, domains=dataset.layouts,
                       schedule=dataset.schedule).samples(0, 3 * E)
    by_position = list(zip(d.tolist(), s.tolist()))  # one rank serves these, batch by batch
    assert Counter(served) == Counter(by_position)
    for num_nodes in [n for n in (1, 2, 4) if C % n == 0]:
        for ranks_per_node in [r for r in (1, 2) if G % (num_nodes * r) == 0]:
            shards: dict[int, set] = {}
            for epoch, sample_in_epoch in ((1, 2 * G), (2, 0)):  # from mid-epoch 1 on
                position = epoch * E + sample_in_epoch
                covered = set()
                for rank in range(num_nodes * ranks_per_node):
                    world = World(num_nodes=num_nodes, ranks_per_node=ranks_per_node,
                                  workers_per_rank=1, worker=rank)
                    node = rank // ranks_per_node
                    for _, positions, samples in _rank_serves(dataset, world, epoch,
                                                              sample_in_epoch):
                        assert samples == [by_position[p] for p in positions.tolist()]
                        covered.update(positions.tolist())
                        if positions.shape[0] * num_nodes * ranks_per_node == G:  # whole
                            assert {slice_of(int(p), C, G) for p in positions} <= set(
                                node_slices(node=node, num_nodes=num_nodes, canonical_nodes=C))
                            for d, i in samples:
                                shards.setdefault(node, set()).add((d, int(shard_of_samples(
                                    dataset.layouts[d], np.array([i]))[0])))
                assert covered == set(range(position, (epoch + 1) * E))
            total = sum(len(layout.shard_sizes) for layout in dataset.layouts)
            for node, read in shards.items():  # about 1/N of the shards, a boundary one more
                assert len(read) <= total / num_nodes + 2 * len(SIZES), (num_nodes, node)


def test_a_checkpoint_of_the_earlier_canonical_order_is_refused(mds_domains) -> None:
    dataset = _make(mds_domains, 8, 2)
    state = dataset.state_dict(num_samples=2 * 8, from_beginning=True)
    del dataset
    old = dict(state, streammix={k: v for k, v in state["streammix"].items()
                                 if k != "epoch_order"})  # as written before one-pass epochs
    resumed = _make(mds_domains, 8, None)
    with pytest.raises(ValueError, match="'canonical_lanes' and this dataset's is 'one_pass'"):
        resumed.load_state_dict(old)
    del resumed
    # weighted runs keep the canonical lanes: their older checkpoints still resume
    gc.collect()
    weighted = StreamMixDataset(streams=[Stream(local=str(d)) for d in mds_domains],
                                batch_size=8, mixing=MixingConfig(
                                    seed=5, canonical_nodes=2,
                                    domain_weights={"alpha": 1, "beta": 1, "gamma": 1}))
    assert not weighted.order_config.uses_one_pass_epochs
    state = weighted.state_dict(num_samples=2 * 8, from_beginning=True)
    assert state["streammix"]["epoch_order"] == "canonical_lanes"
    del state["streammix"]["epoch_order"]
    weighted.load_state_dict(state)

"""Upstream's sampling_method: 'fixed' subsets the same every epoch, 'balanced' redrawn per epoch.

Given ``sampling_method`` with ``epoch_size`` (or proportions), upstream's per-stream
``choose`` becomes per-sample counts at natural weights, so an epoch is one pass of every
domain. Every mode resumes exactly, mid-epoch and at an epoch boundary.
"""

from __future__ import annotations

import gc
import itertools
from collections import Counter

import pytest
from streaming import Stream
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset

SIZES = (120, 60, 36)


def _make(dirs, *, stream_args=None, batch_size=8, mixing=None, **kwargs) -> StreamMixDataset:
    gc.collect()
    stream_args = stream_args or [{}] * len(dirs)
    streams = [Stream(local=str(d), **a) for d, a in zip(dirs, stream_args)]
    return StreamMixDataset(streams=streams, batch_size=batch_size,
                            mixing=MixingConfig(**(mixing or {"seed": 3})), **kwargs)


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


def _per_domain(served) -> list[int]:
    counts = Counter(d for d, _ in served)
    return [counts[d] for d in range(len(SIZES))]


def test_fixed_epoch_size_below_the_data_serves_one_subset_every_epoch(mds_domains) -> None:
    dataset = _make(mds_domains, epoch_size=100, sampling_method="fixed")
    choose = [int(s.choose) for s in dataset.streams]
    assert sum(choose) == 100 == dataset.epoch_size == len(dataset)
    epochs = [_ids(dataset) for _ in range(3)]
    for served in epochs:
        assert len(served) == len(set(served)) == 100  # a subset: no sample twice
        assert _per_domain(served) == choose
        assert set(served) == set(epochs[0])  # the same subset every epoch
    assert epochs[0] != epochs[1]  # in a new shuffle
    del dataset
    left_out = _make(mds_domains, epoch_size=100)
    endless = [_ids(left_out) for _ in range(2)]  # streammix's meaning: on through its passes
    assert set(endless[0]).isdisjoint(endless[1])


def test_balanced_redraws_the_subset_every_epoch_with_the_same_counts(mds_domains) -> None:
    dataset = _make(mds_domains, epoch_size=100, sampling_method="balanced")
    choose = [int(s.choose) for s in dataset.streams]
    assert dataset.resampled == {"alpha", "beta", "gamma"}
    epochs = [_ids(dataset) for _ in range(4)]
    for served in epochs:
        assert len(served) == len(set(served)) == 100
        assert _per_domain(served) == choose
    assert len({frozenset(e) for e in epochs}) == 4  # a new subset every epoch
    seen = set().union(*epochs)
    assert len(seen) > 150  # the draws reach well past one subset's 100 samples


def test_balanced_fractional_choose_redraws_the_extra_copies(mds_domains) -> None:
    dataset = _make(mds_domains, stream_args=[{}, {}, {"choose": 50}],
                    sampling_method="balanced")
    assert dataset.epoch_size == 230 and dataset.resampled == {"gamma"}
    extras = []
    for _ in range(3):
        served = _ids(dataset)
        gamma = Counter(i for d, i in served if d == 2)
        assert sorted(gamma) == list(range(36)) and sum(gamma.values()) == 50
        assert sorted(i for d, i in served if d == 0) == list(range(120))
        extras.append(frozenset(i for i, c in gamma.items() if c == 2))
    assert len(set(extras)) == 3
    del dataset
    fixed = _make(mds_domains, stream_args=[{}, {}, {"choose": 50}])
    assert fixed.fingerprint != _make(mds_domains, stream_args=[{}, {}, {"choose": 50}],
                                      sampling_method="balanced").fingerprint


def test_proportions_with_a_sampling_method_are_upstream_subsets(mds_domains) -> None:
    args = [{"proportion": 2}, {"proportion": 1}, {"proportion": 1}]
    dataset = _make(mds_domains, stream_args=args, sampling_method="fixed", epoch_size=80)
    assert [int(s.choose) for s in dataset.streams] == [40, 20, 20]
    epochs = [_ids(dataset) for _ in range(2)]
    assert _per_domain(epochs[0]) == [40, 20, 20] and set(epochs[0]) == set(epochs[1])
    del dataset
    with pytest.raises(ValueError, match="Give the weights as Stream\\(proportion=...\\)"):
        _make(mds_domains, epoch_size=80, sampling_method="fixed", mixing={
            "seed": 3, "domain_weights": {"alpha": 1, "beta": 1, "gamma": 1}})
    with pytest.raises(ValueError, match="sampling_method='fixed' \\(one subset"):
        _make(mds_domains, epoch_size=80, sampling_method="balanced",
              mixing={"seed": 3, "sequence_length": 8})


def test_subset_epochs_refuse_canonical_nodes_and_choose_resamples_with_them(
        mds_domains) -> None:
    for sampling in ("fixed", "balanced"):
        with pytest.raises(ValueError, match="Pass num_canonical_nodes=1"):
            _make(mds_domains, epoch_size=100, sampling_method=sampling, num_canonical_nodes=2)
    dataset = _make(mds_domains, stream_args=[{}, {}, {"choose": 50}],
                    sampling_method="balanced", num_canonical_nodes=2)
    assert dataset.canonical_nodes == 2 and dataset.epoch_size == 230
    served = _ids(dataset) + _ids(dataset)  # two epochs of 2 lanes: about two group passes
    assert len(served) == 460
    assert abs(sum(d == 2 for d, _ in served) - 100) <= 4  # each lane weights gamma 50/230


def _take(dataset: StreamMixDataset, count: int) -> None:
    for _ in itertools.islice(iter(dataset), count):
        pass


@pytest.mark.parametrize("kwargs", [
    {"epoch_size": 100, "sampling_method": "fixed"},
    {"epoch_size": 100, "sampling_method": "balanced"},
    {"stream_args": [{}, {"choose": 70}, {"choose": 50}], "sampling_method": "balanced",
     "num_canonical_nodes": 2},
], ids=["fixed", "balanced", "balanced-choose-C2"])
def test_sampling_methods_resume_mid_epoch_and_at_epoch_boundaries(mds_domains, kwargs) -> None:
    dataset = _make(mds_domains, **kwargs)
    reference = [_ids(dataset) for _ in range(3)]
    del dataset
    # mid-epoch 0, from a fresh instance
    fresh = _make(mds_domains, **kwargs)
    state = fresh.state_dict(num_samples=48, from_beginning=True)
    del fresh
    resumed = _make(mds_domains, **kwargs)
    resumed.load_state_dict(state)
    assert [_ids(resumed) for _ in range(2)] == [reference[0][48:], reference[1]]
    del resumed
    # at the end of epoch 0 (Composer's epoch-end checkpoint), then mid-epoch 1
    running = _make(mds_domains, **kwargs)
    _ids(running)
    at_end = running.state_dict(num_samples=0, from_beginning=True)
    _take(running, 48)
    mid = running.state_dict(num_samples=48, from_beginning=True)
    del running
    assert (at_end["epoch"], at_end["sample_in_epoch"]) == (1, 0)
    assert (mid["epoch"], mid["sample_in_epoch"]) == (1, 48)
    for state, expected in ((at_end, reference[1:]), (mid, [reference[1][48:], reference[2]])):
        loaded = _make(mds_domains, **kwargs)
        loaded.load_state_dict(state)
        assert [_ids(loaded) for _ in range(2)] == expected
        del loaded


def test_balanced_with_dataloader_workers_serves_the_single_process_order(mds_domains) -> None:
    kwargs = {"epoch_size": 100, "sampling_method": "balanced"}
    reference = [_ids(d) for d in [_make(mds_domains, **kwargs)] for _ in range(2)]
    gc.collect()
    dataset = _make(mds_domains, **kwargs)
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=_ids)
    epochs = [[x for batch in loader for x in batch] for _ in range(2)]
    assert epochs == reference

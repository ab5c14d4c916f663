"""Upstream StreamingDataset arguments: each one honoured or refused, never ignored."""

from __future__ import annotations

import gc
import itertools
import logging
from collections import Counter

import numpy as np
import pytest
from streaming import Stream, StreamingDataset
from streaming.base.world import World
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.dataset.upstream_args import choose_counts


def _make(dirs, *, stream_args=None, batch_size=8, mixing=None, **kwargs) -> StreamMixDataset:
    gc.collect()
    stream_args = stream_args or [{}] * len(dirs)
    streams = [Stream(local=str(d), **a) for d, a in zip(dirs, stream_args)]
    return StreamMixDataset(streams=streams, batch_size=batch_size,
                            mixing=MixingConfig(**(mixing or {"seed": 3})), **kwargs)


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


# ---------------------------------------------------------------- Stream weights


def test_proportion_is_a_domain_weight_and_zero_is_never_served(mds_domains) -> None:
    by_stream = _make(mds_domains, stream_args=[{"proportion": 3}, {"proportion": 1},
                                                {"proportion": 0}])
    served = Counter(d for d, _ in _ids(by_stream))
    assert by_stream.epoch_size == 216 and sum(served.values()) == 216
    assert served == {0: 162, 1: 54}
    del by_stream
    by_config = _make(mds_domains, mixing={"seed": 3, "domain_weights": {
        "alpha": 3, "beta": 1, "gamma": 0}})
    reference = _ids(by_config)
    del by_config
    again = _make(mds_domains, stream_args=[{"proportion": 3}, {"proportion": 1},
                                            {"proportion": 0}])
    assert _ids(again) == reference


def test_proportion_and_domain_weights_together_are_refused(mds_domains) -> None:
    with pytest.raises(ValueError, match="either Stream\\(proportion=...\\) or MixingConfig"):
        _make(mds_domains, stream_args=[{"proportion": 1}] * 3,
              mixing={"domain_weights": {"alpha": 1, "beta": 1, "gamma": 1}})


def test_repeat_and_choose_are_per_sample_counts_fixed_across_epochs(mds_domains) -> None:
    dataset = _make(mds_domains, stream_args=[{"repeat": 2}, {"repeat": 0}, {"choose": 10}])
    assert dataset.epoch_size == 240 + 0 + 10
    epochs = [_ids(dataset) for _ in range(2)]
    for served in epochs:
        counts = Counter(served)
        assert all(counts[(0, i)] == 2 for i in range(120))
        assert not any(d == 1 for d, _ in served)  # repeat 0: never served
        gamma = sorted(i for d, i in served if d == 2)
        assert len(gamma) == len(set(gamma)) == 10
    assert sorted(i for d, i in epochs[0] if d == 2) == sorted(i for d, i in epochs[1] if d == 2)


def test_choose_subsets_are_seeded_and_sum_to_choose() -> None:
    counts = choose_counts(36, 82, seed=4, domain=2)
    assert counts.sum() == 82 and set(counts.tolist()) == {2, 3}
    assert np.array_equal(counts, choose_counts(36, 82, seed=4, domain=2))
    assert not np.array_equal(counts, choose_counts(36, 82, seed=5, domain=2))


def test_repeat_with_a_samplemix_plan_is_refused(mds_domains, tmp_path) -> None:
    with pytest.raises(ValueError, match="MixingConfig\\(sample_counts=...\\), not both"):
        _make(mds_domains, stream_args=[{"repeat": 2}, {}, {}],
              mixing={"sample_counts": str(tmp_path / "plan.npz")})


def test_sampling_method_fixed_is_the_default_and_balanced_without_subsets_changes_nothing(
        mds_domains) -> None:
    fixed = _make(mds_domains, stream_args=[{}, {}, {"choose": 10}], sampling_method="fixed")
    assert fixed.epoch_size == 190
    served = _ids(fixed)
    del fixed
    assert _ids(_make(mds_domains, stream_args=[{}, {}, {"choose": 10}])) == served
    # balanced without a subset (whole repeats) is the same order
    whole = _make(mds_domains, stream_args=[{"repeat": 2}, {}, {}], sampling_method="balanced")
    assert whole.epoch_size == 336 and not whole.resampled
    served = _ids(whole)
    del whole
    assert _ids(_make(mds_domains, stream_args=[{"repeat": 2}, {}, {}])) == served


# ---------------------------------------------------------------- shuffle, batching


def test_shuffle_false_serves_passes_in_order_still_blended(mds_domains) -> None:
    dataset = _make(mds_domains, shuffle=False)
    served = _ids(dataset)
    for d, n in enumerate((120, 60, 36)):
        assert [i for dd, i in served if dd == d] == list(range(n))
    assert {d for d, _ in served[:8]} == {0, 1, 2}  # blended, not domain after domain
    assert dataset.fingerprint != _make(mds_domains, shuffle=True).fingerprint


def test_stratified_batching_is_the_greedy_interleave(mds_domains) -> None:
    random_order = _ids(_make(mds_domains))
    stratified = _make(mds_domains, batching_method="stratified")
    served = _ids(stratified)
    assert served == random_order
    shares = np.array([120, 60, 36]) / 216
    for b in range(0, 216, 8):  # every global batch holds each domain in proportion
        counts = np.bincount([d for d, _ in served[b:b + 8]], minlength=3)
        assert np.all(np.abs(counts - 8 * shares) <= 2), (b, counts)
    with pytest.raises(ValueError, match="interleave='greedy'"):
        _make(mds_domains, batching_method="stratified", mixing={"interleave": "random"})


@pytest.mark.parametrize("batch_size", [8, 16])  # 216 samples: divides, does not
def test_per_stream_batches_come_from_one_domain_chosen_by_the_weights(mds_domains,
                                                                      batch_size) -> None:
    dataset = _make(mds_domains, batch_size=batch_size, batching_method="per_stream",
                    mixing={"seed": 3, "domain_weights": {"alpha": 2, "beta": 1, "gamma": 1}},
                    epoch_size=8 * 16 * 3)
    assert len(dataset) == dataset.epoch_size == 384
    served = _ids(dataset) + _ids(dataset)
    batches = [served[b:b + batch_size] for b in range(0, len(served), batch_size)]
    domains = [{d for d, _ in batch} for batch in batches]
    assert all(len(d) == 1 for d in domains)
    counts = Counter(next(iter(d)) for d in domains)
    assert counts[0] == 2 * counts[1] == 2 * counts[2]  # batch-level greedy blend
    for d, n in enumerate((120, 60, 36)):  # each domain reads its own shuffled passes
        stream = [i for dd, i in served if dd == d]
        for p in range(0, len(stream) - n + 1, n):
            assert sorted(stream[p:p + n]) == list(range(n))
    assert dataset.fingerprint != _make(mds_domains, batch_size=batch_size, epoch_size=384,
                                        mixing={"seed": 3, "domain_weights": {
                                            "alpha": 2, "beta": 1, "gamma": 1}}).fingerprint


def test_per_stream_resumes_exactly(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=16, batching_method="per_stream")
    reference = [_ids(dataset) for _ in range(2)]
    del dataset
    fresh = _make(mds_domains, batch_size=16, batching_method="per_stream")
    state = fresh.state_dict(num_samples=96, from_beginning=True)
    del fresh
    resumed = _make(mds_domains, batch_size=16, batching_method="per_stream")
    resumed.load_state_dict(state)
    assert [_ids(resumed) for _ in range(2)] == [reference[0][96:], reference[1]]


def test_device_per_stream_and_per_stream_packing_are_refused(mds_domains) -> None:
    with pytest.raises(ValueError, match="use batching_method='per_stream'"):
        _make(mds_domains, batching_method="device_per_stream")
    with pytest.raises(ValueError, match="does not combine with packing"):
        _make(mds_domains, batching_method="per_stream", mixing={"sequence_length": 8})


@pytest.mark.parametrize(("name", "value", "names"), [
    ("shuffle_algo", "py1s", "window_shards"),
    ("shuffle_block_size", 1 << 18, "window_shards"),
    ("partition_algo", "orig", "fixes its own partition"),
    ("sampling_granularity", 4, "window_shards"),
    ("replication", 2, "own slice"),
])
def test_order_knobs_streammix_replaces_are_refused(mds_domains, name, value, names) -> None:
    with pytest.raises(ValueError, match=f"does not honour {name}=.*{names}"):
        _make(mds_domains, **{name: value})


def test_order_knobs_at_their_defaults_are_accepted(mds_domains) -> None:
    dataset = _make(mds_domains, shuffle_algo="py1e", shuffle_block_size=None,
                    num_canonical_nodes=None, partition_algo="relaxed", sampling_granularity=1,
                    batching_method="random", sampling_method="balanced", shuffle=True)
    assert len(dataset) == 216


def test_unknown_sampling_method_and_state_are_refused_in_upstream_words(mds_domains) -> None:
    with pytest.raises(ValueError, match="Invalid sampling method: 'fixedd'"):
        _make(mds_domains, sampling_method="fixedd")
    dataset = _make(mds_domains)
    with pytest.raises(ValueError, match="The StreamingDataset state dict .* no \\['epoch'"):
        dataset.load_state_dict({"a": 1})


def test_stratified_refuses_a_domain_too_small_for_every_batch_at_iteration(mds_domains) -> None:
    small = _make(mds_domains, batching_method="stratified", mixing={
        "seed": 3, "domain_weights": {"alpha": 1, "beta": 1, "gamma": 0.05}})
    with pytest.raises(ValueError, match="Number of samples for stream 'gamma' per global "
                                         "batch is 0.195"):
        next(iter(small))
    del small
    unserved = _make(mds_domains, batching_method="stratified", mixing={
        "seed": 3, "domain_weights": {"alpha": 1, "beta": 1, "gamma": 0}})
    assert {d for d, _ in _ids(unserved)} == {0, 1}  # weight 0: never served, not refused


def test_one_canonical_node_is_the_streammix_order(mds_domains) -> None:
    reference = _ids(_make(mds_domains))
    assert _ids(_make(mds_domains, num_canonical_nodes=1)) == reference
    with pytest.raises(ValueError, match="num_canonical_nodes must be a positive integer, got True"):
        _make(mds_domains, num_canonical_nodes=True)


def test_batch_size_is_checked_at_iteration_as_upstream(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=None)
    assert len(dataset) == dataset.epoch_size == 216
    with pytest.raises(ValueError, match="Please pass `batch_size` to StreamingDataset"):
        next(iter(dataset))
    with pytest.raises(ValueError, match="Please pass `batch_size` to StreamingDataset"):
        dataset.state_dict(num_samples=0, from_beginning=True)
    del dataset
    with pytest.raises(ValueError, match="needs batch_size .* at construction"):
        _make(mds_domains, batch_size=None, mixing={"weight_updates": "exact"})


# ---------------------------------------------------------------- epochs


@pytest.mark.parametrize("batch_size", [8, 24, 16, 5])  # 216 samples: divides, divides, not, not
def test_an_epoch_at_natural_proportions_is_one_pass(mds_domains, batch_size) -> None:
    dataset = _make(mds_domains, batch_size=batch_size)
    everything = sorted((d, i) for d, n in enumerate((120, 60, 36)) for i in range(n))
    epochs = [_ids(dataset) for _ in range(3)]
    assert len(dataset) == dataset.epoch_size == 216
    for served in epochs:
        assert sorted(served) == everything
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_workers_serve_the_partial_last_batch(mds_domains, num_workers) -> None:
    dataset = _make(mds_domains, batch_size=16)
    reference = _ids(dataset)
    del dataset
    dataset = _make(mds_domains, batch_size=16)
    loader = DataLoader(dataset, batch_size=16, num_workers=num_workers, collate_fn=_ids)
    batches = list(loader)
    assert [len(b) for b in batches] == [16] * 13 + [8] and len(loader) == 14
    assert [x for b in batches for x in b] == reference


def test_with_weights_an_epoch_is_epoch_size_samples_of_the_endless_order(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=16, epoch_size=100,
                    mixing={"seed": 3, "domain_weights": {"alpha": 1, "beta": 1, "gamma": 1}})
    first, second = _ids(dataset), _ids(dataset)
    assert len(first) == len(second) == len(dataset) == 100
    del dataset
    endless = _make(mds_domains, batch_size=8, epoch_size=200,
                    mixing={"seed": 3, "domain_weights": {"alpha": 1, "beta": 1, "gamma": 1}})
    assert _ids(endless) == first + second


def test_online_weights_keep_whole_global_batches(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=16, mixing={"weight_updates": "exact"})
    assert dataset.epoch_size == 208 and len(dataset) == 208


def test_a_partial_last_batch_is_split_over_ranks_as_upstream_pads(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=16)
    parts = [dataset.rank_positions(200, 6, World(num_nodes=1, ranks_per_node=4,
                                                  workers_per_rank=1, worker=r)).tolist()
             for r in range(0, 4 * 1, 1)]
    assert parts == [[200, 201], [202, 203], [204, 205], [200, 201]]


def test_resume_on_the_last_partial_batch_and_across_epochs(mds_domains) -> None:
    dataset = _make(mds_domains, batch_size=16)
    reference = [_ids(dataset) for _ in range(3)]
    del dataset
    for sample_in_epoch, expected in ((208, [reference[0][208:], reference[1]]),
                                      (216, [[], reference[1]])):  # 216: last-batch checkpoint
        fresh = _make(mds_domains, batch_size=16)
        state = fresh.state_dict(num_samples=sample_in_epoch, from_beginning=True)
        del fresh
        loaded = _make(mds_domains, batch_size=16)
        loaded.load_state_dict(state)
        assert [_ids(loaded) for _ in range(2)] == expected
        at_end = loaded.state_dict(num_samples=0, from_beginning=True)  # Composer's epoch end
        assert (at_end["epoch"], at_end["sample_in_epoch"]) == (2, 0)
        del loaded
    again = _make(mds_domains, batch_size=16)
    again.load_state_dict(at_end)
    assert _ids(again) == reference[2]


# ---------------------------------------------------------------- upstream checkpoints


def test_an_upstream_checkpoint_is_adopted_at_its_global_sample(mds_domains, caplog) -> None:
    reference = [_ids(_make(mds_domains)) for _ in range(1)][0]
    gc.collect()
    upstream = StreamingDataset(streams=[Stream(local=str(d)) for d in mds_domains],
                                batch_size=8)
    state = upstream.state_dict(num_samples=48, from_beginning=True)
    del upstream
    assert "streammix" not in state
    dataset = _make(mds_domains)
    with caplog.at_level(logging.WARNING, logger="streammix.dataset.resume"):
        dataset.load_state_dict(state)
    assert "adopting a StreamingDataset checkpoint" in caplog.text
    assert "global sample 48" in caplog.text
    assert _ids(dataset) == reference[48:]
    ours = dataset.state_dict(num_samples=0, from_beginning=True)
    assert {"epoch", "sample_in_epoch", "num_canonical_nodes", "shuffle_seed",
            "initial_physical_nodes", "streammix"} <= set(ours)
    del dataset
    misaligned = _make(mds_domains)
    with pytest.raises(ValueError, match="not a multiple of the global batch size 8"):
        misaligned.load_state_dict(dict(state, sample_in_epoch=44))


# ---------------------------------------------------------------- sampling_method subsets
# Given sampling_method with epoch_size (or proportions), upstream's per-stream choose becomes
# per-sample counts at natural weights: an epoch is one pass of every domain, the same subset
# every epoch ('fixed') or a new draw ('balanced'). Every mode resumes exactly.

SIZES = (120, 60, 36)


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


def _assert_new_extra_copies_every_epoch(dataset: StreamMixDataset) -> None:
    """gamma chosen 50 of 36: every epoch one pass of a new draw of its 14 extra copies."""
    extras = []
    for _ in range(3):
        served = _ids(dataset)
        gamma = Counter(i for d, i in served if d == 2)
        assert sorted(gamma) == list(range(36)) and sum(gamma.values()) == 50
        assert sorted(i for d, i in served if d == 0) == list(range(120))
        extras.append(frozenset(i for i, c in gamma.items() if c == 2))
    assert len(set(extras)) == 3


def test_balanced_fractional_choose_redraws_the_extra_copies(mds_domains) -> None:
    dataset = _make(mds_domains, stream_args=[{}, {}, {"choose": 50}],
                    sampling_method="balanced")
    assert dataset.epoch_size == 230 and dataset.resampled == {"gamma"}
    _assert_new_extra_copies_every_epoch(dataset)
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


@pytest.mark.parametrize(("canonical_nodes", "batch_size"), [(2, 8), (4, 8), (4, 12)])
def test_subset_epochs_with_canonical_nodes_are_one_pass_of_the_subsets(
        mds_domains, canonical_nodes, batch_size) -> None:
    """'fixed': the same subset every epoch; 'balanced': the same per-domain counts, a new
    draw every epoch; with C > 1, epoch sizes (100, 230) not multiples of the batch."""
    fixed = _make(mds_domains, epoch_size=100, sampling_method="fixed", batch_size=batch_size,
                  num_canonical_nodes=canonical_nodes)
    assert fixed.order_config.uses_one_pass_epochs
    choose = [int(s.choose) for s in fixed.streams]
    epochs = [_ids(fixed) for _ in range(3)]
    for served in epochs:
        assert len(served) == len(set(served)) == 100 and _per_domain(served) == choose
    assert len({frozenset(e) for e in epochs}) == 1 and len({tuple(e) for e in epochs}) == 3
    del fixed
    balanced = _make(mds_domains, epoch_size=100, sampling_method="balanced",
                     batch_size=batch_size, num_canonical_nodes=canonical_nodes)
    epochs = [_ids(balanced) for _ in range(3)]
    for served in epochs:
        assert len(served) == len(set(served)) == 100 and _per_domain(served) == choose
    assert len({frozenset(e) for e in epochs}) == 3
    del balanced
    extra = _make(mds_domains, stream_args=[{}, {}, {"choose": 50}], sampling_method="balanced",
                  batch_size=batch_size, num_canonical_nodes=canonical_nodes)
    assert extra.canonical_nodes == canonical_nodes and extra.epoch_size == 230
    _assert_new_extra_copies_every_epoch(extra)


def test_subset_epochs_refuse_canonical_nodes_where_an_epoch_cannot_be_one_pass(
        mds_domains) -> None:
    with pytest.raises(ValueError, match="Pass num_canonical_nodes=1"):
        _make(mds_domains, epoch_size=100, sampling_method="fixed", num_canonical_nodes=2,
              mixing={"seed": 3, "interleave": "random"})


def _take(dataset: StreamMixDataset, count: int) -> None:
    for _ in itertools.islice(iter(dataset), count):
        pass


@pytest.mark.parametrize("kwargs", [
    {"epoch_size": 100, "sampling_method": "fixed"},
    {"epoch_size": 100, "sampling_method": "balanced"},
    {"stream_args": [{}, {"choose": 70}, {"choose": 50}], "sampling_method": "balanced",
     "num_canonical_nodes": 2},
    {"epoch_size": 100, "sampling_method": "fixed", "num_canonical_nodes": 4},
    {"epoch_size": 100, "sampling_method": "balanced", "num_canonical_nodes": 2},
], ids=["fixed", "balanced", "balanced-choose-C2", "fixed-C4", "balanced-C2"])
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

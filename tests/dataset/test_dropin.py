"""Upstream StreamingDataset arguments: each one honoured or refused, never ignored."""

from __future__ import annotations

import gc
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

"""StreamMixDataset serves exactly the streammix global order, in and out of workers."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from streaming import Stream
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.core.order import DomainLayout, GlobalOrder, OrderConfig


def _collate(samples: list[dict]) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


def _expected(dataset: StreamMixDataset, start: int, stop: int) -> list[tuple[int, int]]:
    order = GlobalOrder(config=OrderConfig(seed=dataset.order_seed,
                                           window_shards=dataset.mixing.window_shards),
                        domains=[DomainLayout(shard_sizes=lay.shard_sizes)
                                 for lay in dataset.layouts],
                        schedule=dataset.schedule)
    domains, local = order.samples(start, stop)
    return list(zip(domains.tolist(), local.tolist()))


def _make(dirs, **mixing) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=8,
                            mixing=MixingConfig(**mixing))


def test_iteration_equals_the_global_order(mds_domains) -> None:
    dataset = _make(mds_domains, domain_weights={"alpha": 1, "beta": 1, "gamma": 2}, seed=3)
    samples = [(int(s["domain"]), int(s["index"])) for s in dataset]
    assert len(samples) == dataset.epoch_size == len(dataset)
    assert samples == _expected(dataset, 0, dataset.epoch_size)
    # natural weights by default, and the text matches the sample it claims to be
    first = next(iter(_make(mds_domains)))
    assert first["text"].startswith(["alpha", "beta", "gamma"][first["domain"]])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_workers_do_not_change_the_order(mds_domains, num_workers) -> None:
    dataset = _make(mds_domains, seed=11)
    loader = DataLoader(dataset, batch_size=8, num_workers=num_workers, collate_fn=_collate)
    batches = [b for b in loader]
    flat = [x for b in batches for x in b]
    assert len(batches) == dataset.epoch_size // 8
    assert flat == _expected(dataset, 0, dataset.epoch_size)


def test_second_epoch_continues_the_stream(mds_domains) -> None:
    dataset = _make(mds_domains, seed=5)
    first = [(int(s["domain"]), int(s["index"])) for s in dataset]
    second = [(int(s["domain"]), int(s["index"])) for s in dataset]
    E = dataset.epoch_size
    assert second == _expected(dataset, E, 2 * E)
    assert first != second


def test_resume_from_state_dict_gives_the_suffix(mds_domains) -> None:
    dataset = _make(mds_domains, seed=2)
    full = [(int(s["domain"]), int(s["index"])) for s in dataset]
    del dataset
    fresh = _make(mds_domains, seed=2)
    state = fresh.state_dict(num_samples=48, from_beginning=True)
    del fresh
    resumed = _make(mds_domains, seed=2)
    resumed.load_state_dict(state)
    rest = [(int(s["domain"]), int(s["index"])) for s in resumed]
    assert rest == full[48:]


def test_resume_refuses_other_seed_data_or_misaligned_position(mds_domains) -> None:
    dataset = _make(mds_domains, seed=2)
    state = dataset.state_dict(num_samples=16, from_beginning=True)
    del dataset
    other = _make(mds_domains, seed=3)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)
    del other
    reweighted = _make(mds_domains[:2], seed=2)
    with pytest.raises(ValueError, match="fingerprint"):
        reweighted.load_state_dict(state)
    del reweighted
    same = _make(mds_domains, seed=2)
    bad = dict(state, sample_in_epoch=13)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        same.load_state_dict(bad)


def test_load_state_dict_after_iteration_started_is_refused(mds_domains) -> None:
    dataset = _make(mds_domains, seed=2)
    state = dataset.state_dict(num_samples=16, from_beginning=True)
    next(iter(dataset))
    with pytest.raises(RuntimeError, match="after iteration started"):
        dataset.load_state_dict(state)


@pytest.mark.parametrize(
    ("mixing", "error"),
    [
        ({"domain_weights": {"alpha": -1.0}}, "finite and >= 0"),
        ({"domain_weights": {"alpha": float("nan")}}, "finite and >= 0"),
        ({"domain_weights": {"alpha": 0.0, "beta": 0.0}}, "all zero"),
        ({"domain_weights": {"delta": 1.0}}, "unknown domains"),
        ({"global_batch_size": 12}, "does not match global_batch_size"),
        ({"interleave": "zigzag"}, "interleave must be one of"),
        ({"weight_updates": "lagged"}, "lag_batches >= 1"),
        ({"schedule": ((4, {"alpha": 1.0}), (2, {"beta": 1.0}))}, "strictly increasing"),
    ],
)
def test_bad_configuration_is_a_clear_error(mds_domains, mixing, error) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        _make(mds_domains, **mixing)


def test_static_schedule_changes_weights_at_the_batch(mds_domains) -> None:
    dataset = _make(mds_domains, seed=1, domain_weights={"alpha": 1.0, "beta": 0, "gamma": 0},
                    schedule=((3, {"alpha": 0, "beta": 0, "gamma": 1.0}),))
    domains = [int(s["domain"]) for s in dataset]
    assert set(domains[:24]) == {0}
    assert set(domains[24:]) == {2}


def _publishing_run(dirs, num_workers: int) -> list[list[tuple[int, int]]]:
    dataset = _make(dirs, seed=4, weight_updates="exact", publish_timeout_s=60)
    dataset.publish(0, {"alpha": 1.0, "beta": 0, "gamma": 0}, final_until=3)
    loader = DataLoader(dataset, batch_size=8, num_workers=num_workers, collate_fn=_collate)
    batches = []
    for i, batch in enumerate(loader):
        batches.append(batch)
        if i == 2:
            dataset.publish(3, {"alpha": 0, "beta": 1.0, "gamma": 1.0}, final_until=10**9)
        if i == 6:
            break
    return batches


@pytest.mark.parametrize("num_workers", [0, 2])
def test_published_weights_take_effect_at_the_promised_batch(mds_domains, num_workers) -> None:
    batches = _publishing_run(mds_domains, num_workers)
    for i, batch in enumerate(batches):
        domains = {d for d, _ in batch}
        assert domains == ({0} if i < 3 else {1, 2}), (i, batch)
    assert torch.tensor([d for d, _ in batches[3]]).bincount().tolist()[1:] == [4, 4]


def test_worker_waiting_for_unpublished_weights_times_out_clearly(mds_domains) -> None:
    dataset = _make(mds_domains, seed=4, weight_updates="exact", publish_timeout_s=0.2)
    dataset.publish(0, {"alpha": 1.0, "beta": 0, "gamma": 0}, final_until=1)
    it = iter(dataset)
    for _ in range(8):
        next(it)
    with pytest.raises(Exception, match="were not published within"):
        next(it)


def test_elastic_positions_do_not_depend_on_world_size(mds_domains) -> None:
    dataset = _make(mds_domains, seed=9)
    order = GlobalOrder(config=dataset.order_config, domains=dataset.layouts,
                        schedule=dataset.schedule)
    G = dataset.global_batch_size
    whole = np.concatenate(order.samples(0, 4 * G))
    again = np.concatenate(order.samples(2 * G, 3 * G))
    assert np.array_equal(whole.reshape(2, -1)[:, 2 * G:3 * G], again.reshape(2, -1))


def test_weights_that_leave_out_a_domain_are_refused(mds_domains) -> None:
    with pytest.raises(ValueError, match=r"give no weight to domains \['gamma'\]"):
        _make(mds_domains, domain_weights={"alpha": 1.0, "beta": 1.0})
    dataset = _make(mds_domains, weight_updates="exact")
    with pytest.raises(ValueError, match=r"give no weight to domains \['beta', 'gamma'\]"):
        dataset.publish(0, {"alpha": 1.0})

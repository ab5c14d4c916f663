"""Resume across epoch boundaries, with the state Composer asks for at each checkpoint.

Composer calls ``state_dict(sample_in_epoch, True)``. At an epoch-end checkpoint it has
already moved to the next epoch and passes 0; mid-epoch it passes the samples seen so far.
"""

from __future__ import annotations

import gc

import pytest
from streaming import Stream
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.core.order import GlobalOrder


def _make(dirs, **mixing) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=8,
                            mixing=MixingConfig(**mixing))


def _ids(samples) -> list[tuple[int, int]]:
    return [(int(s["domain"]), int(s["index"])) for s in samples]


def _collate(samples: list[dict]) -> list[tuple[int, int]]:
    return _ids(samples)


def _run_epochs(dirs, epochs: int, **mixing) -> list[list[tuple[int, int]]]:
    dataset = _make(dirs, **mixing)
    served = [_ids(dataset) for _ in range(epochs)]
    del dataset
    return served


@pytest.mark.parametrize("epochs_done", [1, 2])
def test_epoch_end_checkpoint_resumes_with_the_next_epoch(mds_domains, epochs_done) -> None:
    reference = _run_epochs(mds_domains, 3, seed=4)
    dataset = _make(mds_domains, seed=4)
    for _ in range(epochs_done):
        _ids(dataset)
    state = dataset.state_dict(num_samples=0, from_beginning=True)  # as Composer at epoch end
    assert state["epoch"] == epochs_done and state["sample_in_epoch"] == 0
    assert state["streammix"]["position"] == epochs_done * dataset.epoch_size
    del dataset
    resumed = _make(mds_domains, seed=4)
    resumed.load_state_dict(state)
    rest = [_ids(resumed) for _ in range(3 - epochs_done)]
    assert rest == reference[epochs_done:]


def test_mid_epoch_checkpoint_after_an_epoch_boundary(mds_domains) -> None:
    reference = _run_epochs(mds_domains, 2, seed=9)
    dataset = _make(mds_domains, seed=9)
    _ids(dataset)
    iterator = iter(dataset)
    for _ in range(24):
        next(iterator)
    state = dataset.state_dict(num_samples=24, from_beginning=True)
    assert (state["epoch"], state["sample_in_epoch"]) == (1, 24)
    del iterator, dataset
    resumed = _make(mds_domains, seed=9)
    resumed.load_state_dict(state)
    assert _ids(resumed) == reference[1][24:]


def test_resumed_instance_checkpoints_its_own_epoch_end(mds_domains) -> None:
    """A run resumed mid-epoch that then finishes the epoch names the following epoch."""
    reference = _run_epochs(mds_domains, 3, seed=1)
    dataset = _make(mds_domains, seed=1)
    state = dataset.state_dict(num_samples=16, from_beginning=True)
    del dataset
    resumed = _make(mds_domains, seed=1)
    resumed.load_state_dict(state)
    assert resumed.state_dict(num_samples=16, from_beginning=True)["epoch"] == 0
    assert _ids(resumed) == reference[0][16:]
    at_end = resumed.state_dict(num_samples=0, from_beginning=True)
    assert (at_end["epoch"], at_end["sample_in_epoch"]) == (1, 0)
    del resumed
    again = _make(mds_domains, seed=1)
    again.load_state_dict(at_end)
    assert [_ids(again) for _ in range(2)] == reference[1:]


def test_epoch_end_checkpoint_with_dataloader_workers(mds_domains) -> None:
    reference = _run_epochs(mds_domains, 2, seed=6)
    dataset = _make(mds_domains, seed=6)
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=_collate)
    first = [x for batch in loader for x in batch]
    assert first == reference[0]
    state = dataset.state_dict(num_samples=0, from_beginning=True)
    assert state["epoch"] == 1
    del loader, dataset
    resumed = _make(mds_domains, seed=6)
    resumed.load_state_dict(state)
    loader = DataLoader(resumed, batch_size=8, num_workers=2, collate_fn=_collate)
    assert [x for batch in loader for x in batch] == reference[1]


def test_fresh_and_just_loaded_states_are_not_taken_for_an_epoch_end(mds_domains) -> None:
    dataset = _make(mds_domains, seed=2)
    assert dataset.state_dict(num_samples=0, from_beginning=True)["epoch"] == 0
    state = dataset.state_dict(num_samples=32, from_beginning=True)
    del dataset
    loaded = _make(mds_domains, seed=2)
    loaded.load_state_dict(state)
    again = loaded.state_dict(num_samples=32, from_beginning=True)
    assert (again["epoch"], again["sample_in_epoch"]) == (0, 32)


def test_a_checkpoint_whose_position_disagrees_is_refused(mds_domains) -> None:
    dataset = _make(mds_domains, seed=2)
    state = dataset.state_dict(num_samples=16, from_beginning=True)
    del dataset
    tampered = dict(state, epoch=1)
    loaded = _make(mds_domains, seed=2)
    with pytest.raises(ValueError, match="inconsistent checkpoint"):
        loaded.load_state_dict(tampered)



def test_resume_deep_in_a_huge_epoch_does_not_list_its_batches(mds_domains) -> None:
    """A worker's remaining batches are produced lazily: resuming at 1e11 of an epoch of
    2e11 samples leaves 1.25e10 global batches, which no list could hold, and the resumed
    run serves at once what the order has there."""
    position, epoch_size = 10**11, 2 * 10**11

    def make() -> StreamMixDataset:
        gc.collect()
        return StreamMixDataset(streams=[Stream(local=str(d)) for d in mds_domains],
                                batch_size=8, epoch_size=epoch_size,
                                mixing=MixingConfig(seed=3))

    state = make().state_dict(position, True)
    resumed = make()
    resumed.load_state_dict(state)
    order = GlobalOrder(config=resumed.order_config, domains=resumed.layouts,
                        schedule=resumed.schedule)
    domains, local = order.samples(position, position + 8)
    iterator = iter(resumed)
    assert _ids(next(iterator) for _ in range(8)) == list(zip(domains.tolist(), local.tolist()))
    del iterator, resumed

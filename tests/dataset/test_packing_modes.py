"""Packed datasets over a real build: domain-pure blocks, mixed blocks, online weights, resume."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.core.order import GlobalOrder
from streammix.core.passes import stream_reference

L, SEP = 48, 0


def _dataset(build, **mixing) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(local=str(build), batch_size=4,
                            mixing=MixingConfig(sequence_length=L, separator_id=SEP, seed=7,
                                                **mixing))


def _domain_tokens(dataset: StreamMixDataset, d: int, upto: int) -> list[int]:
    """Domain ``d``'s token stream (its stream of documents joined with SEP), ``upto`` long."""
    layout = dataset.layouts[d]
    tokens: list[int] = []
    element = 0
    while len(tokens) < upto:
        (sample,) = stream_reference(layout, seed=dataset.order_seed, domain=d,
                                     first_element=element, count=1,
                                     window_shards=dataset.mixing.window_shards)
        offset = int(dataset.sample_offset_per_stream[d])
        tokens.extend(dataset[offset + sample]["tokens"].tolist())
        tokens.append(SEP)
        element += 1
    return tokens


def test_domain_pure_blocks_are_each_domains_token_stream(build) -> None:
    dataset = _dataset(build)
    blocks = [b for _, b in zip(range(60), dataset)]
    order = GlobalOrder(config=dataset.order_config, domains=dataset.layouts,
                        schedule=dataset.schedule)
    domains, elements = order.elements(0, 60)
    per_domain = {d: _domain_tokens(dataset, d, L * (int(elements[domains == d].max()) + 1))
                  for d in set(domains.tolist())}
    for block, d, b in zip(blocks, domains.tolist(), elements.tolist()):
        assert block["domain"] == d and len(block["input_ids"]) == L
        assert block["input_ids"].tolist() == per_domain[d][b * L:(b + 1) * L]
        assert "token_domain" not in block
    # natural weights are token shares; every prefix is within one block per domain (2 domains)
    shares = np.asarray(dataset.initial_weights)
    for n in range(1, 61):
        counts = np.bincount(domains[:n], minlength=2)
        assert np.all(np.abs(counts - shares * n) <= 1.0)
    del dataset


def test_mixed_blocks_carry_the_domain_of_every_token(build) -> None:
    dataset = _dataset(build, packing="mixed")
    blocks = [b for _, b in zip(range(30), dataset)]
    for block in blocks:
        assert block["token_domain"].shape == (L,)
        assert block["domain"] == block["token_domain"][0]
    assert len({int(x) for b in blocks for x in b["token_domain"]}) == 2
    del dataset


@pytest.mark.parametrize("packing", ["domain", "mixed"])
def test_resume_with_online_weights_equals_the_uninterrupted_run(build, packing) -> None:
    def run(dataset: StreamMixDataset, first_batch: int, batches: int) -> list[list[int]]:
        served = []
        iterator = iter(dataset)
        for batch in range(first_batch, first_batch + batches):
            if batch % 3 == 0:
                share = 0.2 + 0.6 * ((batch // 3) % 2)
                dataset.publish(batch, {"code": share, "web": 1 - share}, final_until=batch + 3)
            for _ in range(4):
                served.append(next(iterator)["input_ids"].tolist())
        return served

    whole = run(_dataset(build, packing=packing, weight_updates="exact",
                         publish_timeout_s=30), 0, 12)
    first = _dataset(build, packing=packing, weight_updates="exact", publish_timeout_s=30)
    head = run(first, 0, 7)
    state = first.state_dict(num_samples=7 * 4, from_beginning=True)
    del first
    resumed = _dataset(build, packing=packing, weight_updates="exact", publish_timeout_s=30)
    resumed.load_state_dict(state)
    tail = run(resumed, 7, 5)
    assert head + tail == whole


@pytest.mark.parametrize("packing", ["domain", "mixed"])
def test_resume_far_into_the_run_is_fast(build, packing) -> None:
    import time

    dataset = _dataset(build, packing=packing)
    position = 10**10 // L // 4 * 4  # token position 1e10
    state = dataset.state_dict(num_samples=0, from_beginning=True)
    state["epoch"], state["sample_in_epoch"] = divmod(position, dataset.epoch_size)
    state["sample_in_epoch"] -= state["sample_in_epoch"] % 4
    state["streammix"]["position"] = state["epoch"] * dataset.epoch_size + state["sample_in_epoch"]
    del dataset
    resumed = _dataset(build, packing=packing)
    resumed.load_state_dict(state)
    started = time.perf_counter()
    block = next(iter(resumed))
    elapsed = time.perf_counter() - started
    assert len(block["input_ids"]) == L
    assert elapsed < 5.0, elapsed  # the goal (under 1 s) is measured in bench_dataset.py


def test_packed_blocks_through_dataloader_workers(build) -> None:
    reference = [b["input_ids"].tolist() for _, b in zip(range(16), _dataset(build))]
    dataset = _dataset(build)
    loader = DataLoader(dataset, batch_size=4, num_workers=2,
                        collate_fn=lambda s: [x["input_ids"].tolist() for x in s])
    served = [x for _, batch in zip(range(4), loader) for x in batch]
    assert served == reference


def test_unknown_packing_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="packing must be one of"):
        MixingConfig(sequence_length=8, packing="ragged")

"""Packed readers' documents (``DocumentTokens``) equal upstream's ``get_item``, whatever the
cache does: shards mapped a few at a time, evicted and fetched again from the remote."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
from streaming import MDSWriter, Stream

from streammix import MixingConfig, StreamMixDataset
from streammix.dataset.documents import DocumentTokens
from streammix.format.sidecar import write_token_counts


def _dataset(**kwargs) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(batch_size=4, mixing=MixingConfig(sequence_length=32,
                                                              separator_id=0), **kwargs)


def _upstream(dataset: StreamMixDataset) -> list[list[int]]:
    return [dataset[i]["tokens"].tolist() for i in range(dataset.num_samples)]


def test_documents_equal_get_item_with_one_shard_mapped_at_a_time(build) -> None:
    dataset = _dataset(local=str(build))
    assert dataset.num_samples > 8 and len(dataset.shards) >= 2  # the map turns over
    expected = _upstream(dataset)
    documents = DocumentTokens(max_mapped=1)
    ids = np.random.default_rng(0).permutation(dataset.num_samples)
    got = documents.tokens(dataset, ids)
    assert [g.tolist() for g in got] == [expected[i] for i in ids.tolist()]
    assert len(documents._mapped) == 1 and not documents._unmappable
    del dataset


def test_an_evicted_shard_is_fetched_again_from_the_remote(build, tmp_path) -> None:
    dataset = _dataset(remote=str(build), local=str(tmp_path / "cache"))
    documents = DocumentTokens(max_mapped=4)
    ids = np.arange(dataset.num_samples)
    first = [t.tolist() for t in documents.tokens(dataset, ids)]
    for shard_id in range(len(dataset.shards)):
        dataset.evict_shard(shard_id)
    assert not list((tmp_path / "cache").rglob("shard.*.mds"))
    again = [t.tolist() for t in documents.tokens(dataset, ids)]
    assert again == first == _upstream(dataset)
    assert list((tmp_path / "cache").rglob("shard.*.mds"))
    del dataset


def test_a_token_column_of_any_dtype_is_read_through_get_item(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 40, size=30)
    with MDSWriter(out=str(tmp_path / "d"), columns={"tokens": "ndarray"},
                   compression=None, size_limit=1 << 10) as writer:
        for n in lengths:
            writer.write({"tokens": rng.integers(1, 99, size=int(n)).astype(np.int32)})
    write_token_counts(tmp_path / "d", lengths)
    dataset = _dataset(streams=[Stream(local=str(tmp_path / "d"))])
    documents = DocumentTokens(max_mapped=2)
    got = documents.tokens(dataset, np.arange(30))
    assert [g.tolist() for g in got] == _upstream(dataset)
    assert documents._unmappable and not documents._mapped
    block = next(iter(dataset))["input_ids"]
    assert len(block) == 32
    del dataset

"""StreamMixDataset over a real streammix build of real text (Python's standard library)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streammix import MixingConfig, StreamMixDataset
from streammix.core.order import GlobalOrder
from streammix.format.sidecar import read_sidecar


def _dataset(build: Path, **mixing) -> StreamMixDataset:
    gc.collect()
    return StreamMixDataset(local=str(build), batch_size=4, mixing=MixingConfig(**mixing))


def test_samples_carry_their_build_fields(build) -> None:
    dataset = _dataset(build, seed=1)
    assert dataset.domain_names == ("code", "web")
    sample = next(iter(dataset))
    assert {"text", "tokens", "num_tokens", "domain"} <= set(sample)
    assert len(sample["tokens"]) == sample["num_tokens"]


def test_packed_blocks_are_the_token_stream_of_the_document_order(build) -> None:
    L, sep = 64, 0
    dataset = _dataset(build, seed=2, sequence_length=L, separator_id=sep, packing="mixed")
    blocks = [b for _, b in zip(range(40), dataset)]
    assert all(len(b["input_ids"]) == L and np.array_equal(b["labels"], b["input_ids"])
               for b in blocks)
    order = GlobalOrder(config=dataset.order_config, domains=dataset.layouts,
                        schedule=dataset.schedule)
    domains, local = order.samples(0, 200)
    stream = []
    for d, i in zip(domains.tolist(), local.tolist()):
        stream.extend(dataset[int(dataset.sample_offset_per_stream[d] + i)]["tokens"].tolist())
        stream.append(sep)
    assert np.concatenate([b["input_ids"] for b in blocks]).tolist() == stream[: 40 * L]
    assert blocks[0]["domain"] == int(domains[0])


def test_held_out_split_is_served_separately(build) -> None:
    dataset = _dataset(build, seed=1)
    held_out = dataset.held_out_samples(5)
    assert {k: len(v) for k, v in held_out.items()} == {"code": 3, "web": 3}
    del dataset
    val = _dataset(build, seed=1, split="val")
    # 6 held-out samples: one pass per epoch, the last global batch partial (batch_size 4)
    assert val.epoch_size == 6 and len(val) == 6
    assert sorted((s["domain"], s["text"]) for s in val) == sorted(
        (d, s["text"]) for d, name in enumerate(val.domain_names) for s in held_out[name])


def test_a_sidecar_that_no_longer_matches_its_stream_is_refused(build, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    index = copy / "web" / "index.json"
    meta = json.loads(index.read_text())
    index.write_text(json.dumps(meta, indent=2))  # same shards, different bytes
    with pytest.raises(ValueError, match="does not match"):
        _dataset(copy)
    assert len(read_sidecar(build / "web", columns=["num_tokens"])) > 0


def test_unknown_domain_and_missing_build_are_clear_errors(build, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"domains \['math'\] are not in the build"):
        _dataset(build, domains=("math",))
    with pytest.raises(Exception, match="streammix.yaml"):
        _dataset(tmp_path)


def _plan(build: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streammix.cli.main", "plan", str(build),
                           "--out", str(out), *extra], capture_output=True, text=True)


def test_samplemix_plan_round_trips_into_the_dataset(build, tmp_path) -> None:
    plan_file = tmp_path / "plan.npz"
    done = _plan(build, plan_file, "--alpha", "0.8", "--max-repeats", "3", "--plots",
                 str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    assert "never drawn" in done.stdout and (tmp_path / "plots" / "plan.png").stat().st_size > 0
    from streammix.format.plan import read_plan

    _, planned = read_plan(plan_file)
    gc.collect()
    dataset = StreamMixDataset(local=str(build), batch_size=1,
                               mixing=MixingConfig(seed=3, sample_counts=str(plan_file)))
    assert dataset.epoch_size == sum(int(c.sum()) for c in planned.values())
    index_of = {}
    for d, name in enumerate(dataset.domain_names):
        offset = int(dataset.sample_offset_per_stream[d])
        texts = [dataset[offset + i]["text"] for i in range(len(planned[name]))]
        assert len(set(texts)) == len(texts)
        index_of[name] = {text: i for i, text in enumerate(texts)}
    realized = {name: np.zeros(len(c), dtype=np.int64) for name, c in planned.items()}
    for sample in dataset:
        name = dataset.domain_names[sample["domain"]]
        realized[name][index_of[name][sample["text"]]] += 1
    for name in dataset.domain_names:
        assert np.array_equal(realized[name], planned[name]), name
    assert max(int(c.max()) for c in planned.values()) <= 3


def test_plan_for_other_data_and_bad_options_are_refused(build, tmp_path) -> None:
    bad = _plan(build, tmp_path / "p.npz", "--alpha", "1.5")
    assert bad.returncode == 2 and "alpha must lie in [0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong_suffix = _plan(build, tmp_path / "p.json")
    assert wrong_suffix.returncode == 2 and ".npz" in wrong_suffix.stderr
    from streammix.format.plan import write_plan

    stale = write_plan(tmp_path / "stale.npz", counts={"code": np.ones(1), "web": np.ones(1)},
                       index_fingerprints={"code": "0" * 64, "web": "0" * 64}, config={},
                       report={})
    with pytest.raises(ValueError, match="another version of domain"):
        _dataset(build, sample_counts=str(stale))


def test_samplemix_counts_combine_with_online_domain_weights(build, tmp_path) -> None:
    plan_file = tmp_path / "plan.npz"
    assert _plan(build, plan_file, "--alpha", "1.0", "--token-budget", "40000").returncode == 0
    from streammix.format.plan import read_plan

    _, planned = read_plan(plan_file)
    assert all(0 < np.count_nonzero(c) < len(c) for c in planned.values())
    gc.collect()
    dataset = StreamMixDataset(local=str(build), batch_size=4, epoch_size=64,
                               mixing=MixingConfig(seed=5, sample_counts=str(plan_file),
                                                   weight_updates="exact", publish_timeout_s=30))
    dataset.publish(0, {"code": 0, "web": 1.0}, final_until=2)
    iterator = iter(dataset)
    first = [next(iterator) for _ in range(8)]  # batches 0-1: web only
    dataset.publish(2, {"code": 1.0, "web": 0}, final_until=10**6)
    second = [next(iterator) for _ in range(8)]  # batches 2-3: code only
    drawn = {"web": set(), "code": set()}
    for sample in first + second:
        drawn[dataset.domain_names[sample["domain"]]].add(sample["text"])
    assert {dataset.domain_names[s["domain"]] for s in first} == {"web"}
    assert {dataset.domain_names[s["domain"]] for s in second} == {"code"}
    for d, name in enumerate(dataset.domain_names):
        offset = int(dataset.sample_offset_per_stream[d])
        allowed = {dataset[offset + i]["text"] for i in np.flatnonzero(planned[name])}
        assert drawn[name] <= allowed  # only samples the plan draws, inside each domain


def test_a_domain_the_plan_never_draws_cannot_get_weight(build, tmp_path) -> None:
    from streammix.format.plan import read_plan, write_plan
    from streammix.format.sidecar import index_fingerprint

    _, planned = read_plan(_plan_file(build, tmp_path))
    counts = {"code": np.zeros_like(planned["code"]), "web": planned["web"]}
    plan_file = write_plan(tmp_path / "no-code.npz", counts=counts, config={}, report={},
                           index_fingerprints={n: index_fingerprint(build / n) for n in counts})
    dataset = _dataset(build, sample_counts=str(plan_file), weight_updates="exact")
    assert dataset.initial_weights == (0.0, 1.0)  # natural weights follow the plan
    with pytest.raises(ValueError, match=r"domains \['code'\], which have no samples to draw"):
        dataset.publish(0, {"code": 1.0, "web": 1.0})
    del dataset
    with pytest.raises(ValueError, match="no samples to draw"):
        _dataset(build, sample_counts=str(plan_file), domain_weights={"code": 1.0, "web": 0})


def _plan_file(build: Path, tmp_path: Path) -> Path:
    plan_file = tmp_path / "base.npz"
    assert _plan(build, plan_file).returncode == 0
    return plan_file

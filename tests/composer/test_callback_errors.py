"""OnlineMixing refuses bad setups when the Trainer is constructed, not mid-run."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from composer import Trainer
from streaming import MDSWriter, Stream
from torch.utils.data import DataLoader

from streammix import MixingConfig, OnlineMixing, StreamMixDataset
from streammix.composer.model import LMCollator, tiny_gpt2


@pytest.fixture
def domains(tmp_path):
    dirs = []
    for name in ("a", "b"):
        with MDSWriter(out=str(tmp_path / name), columns={"tokens": "ndarray:uint16"},
                       compression=None) as writer:
            for i in range(40):
                writer.write({"tokens": np.arange(i % 7 + 2, dtype=np.uint16)})
        dirs.append(tmp_path / name)
    yield dirs
    gc.collect()


def _trainer(loader, callback) -> Trainer:
    return Trainer(model=tiny_gpt2(vocab_size=32, max_seq_len=8, n_layer=1, n_head=1, n_embd=8,
                                   seed=0),
                   train_dataloader=loader, max_duration="2ba", callbacks=[callback],
                   device="cpu", progress_bar=False, log_to_console=False)


def _loader(dirs, **mixing) -> DataLoader:
    gc.collect()
    dataset = StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=4,
                               mixing=MixingConfig(**mixing))
    return DataLoader(dataset, batch_size=4, collate_fn=LMCollator(max_seq_len=8, pad_id=0))


def test_unknown_policy_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="aioli"):
        OnlineMixing("bandit-of-the-week")


def test_a_dataloader_without_streammix_dataset_is_refused() -> None:
    samples = [{"tokens": [1, 2, 3], "domain": 0}] * 8
    loader = DataLoader(samples, batch_size=4, collate_fn=LMCollator(max_seq_len=8, pad_id=0))
    with pytest.raises(TypeError, match="StreamMixDataset"):
        _trainer(loader, OnlineMixing("odm"))


def test_a_static_dataset_is_refused(domains) -> None:
    with pytest.raises(ValueError, match="weight_updates='exact'"):
        _trainer(_loader(domains), OnlineMixing("odm"))


def test_aioli_with_lagged_weights_is_refused(domains) -> None:
    with pytest.raises(ValueError, match="needs weight_updates='exact'"):
        _trainer(_loader(domains, weight_updates="lagged", lag_batches=4),
                 OnlineMixing("aioli", val_data={"a": [{}], "b": [{}]}))


def test_missing_validation_data_for_a_policy_that_evaluates_is_refused(domains) -> None:
    with pytest.raises(ValueError, match="held-out samples need a streammix build.*pass val_data= to OnlineMixing"):
        _trainer(_loader(domains, weight_updates="exact"), OnlineMixing("aioli"))
    with pytest.raises(ValueError, match=r"lacks held-out samples for domains \['b'\]"):
        _trainer(_loader(domains, weight_updates="exact"),
                 OnlineMixing("aioli", val_data={"a": [{"tokens": [1, 2], "domain": 0}]}))


def test_policy_sized_for_other_domains_is_refused(domains) -> None:
    with pytest.raises(ValueError, match="domain"):
        _trainer(_loader(domains, weight_updates="exact"),
                 OnlineMixing("doremi", policy_options={"reference_loss": [1.0, 2.0, 3.0]}))


def test_odm_lag_must_match_the_dataset_and_reweighting_is_refused(domains) -> None:
    with pytest.raises(ValueError, match=r"lag=0 but the dataset applies weights 4 batches"):
        _trainer(_loader(domains, weight_updates="lagged", lag_batches=4), OnlineMixing("odm"))
    with pytest.raises(ValueError, match="form='reweight'"):
        _trainer(_loader(domains, weight_updates="exact"),
                 OnlineMixing("doremi", policy_options={"reference_loss": [1.0, 2.0],
                                                        "form": "reweight"}))

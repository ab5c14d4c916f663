"""OP-Mix probing: interpolated LoRA adapters equal a hand merge; the main model is untouched."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from composer.core import Time
from composer.devices import DeviceCPU

from streammix.composer.lora_probes import (
    adapter_deltas,
    adapter_name,
    attach_adapters,
    set_interpolation,
)
from streammix.composer.model import LMCollator, tiny_gpt2
from streammix.composer.opmix import OpMixProbing, ProbeConfig, _max_batches
from streammix.mixing import OpMixPolicy

VOCAB, SEQ = 32, 12


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model() -> torch.nn.Module:
    return tiny_gpt2(vocab_size=VOCAB, max_seq_len=SEQ, n_layer=1, n_head=2, n_embd=16, seed=3)


def tokens(seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def test_interpolated_adapters_equal_a_hand_merge() -> None:
    composer_model = model()
    config = ProbeConfig(r=4, alpha=8.0)
    peft_model = attach_adapters(composer_model, 3, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B starts at zero: give every adapter a non-trivial delta
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    batch = {"input_ids": tokens(1)}
    x = np.array([0.2, 0.5, 0.3])
    with torch.no_grad():
        adapter_logits = []
        for j in range(3):
            peft_model.set_adapter(adapter_name(j))
            adapter_logits.append(composer_model(batch).logits)
        # peft's own exact combination (concatenated ranks, B_j scaled by x_j) as a second check
        peft_model.add_weighted_adapter([adapter_name(j) for j in range(3)], x.tolist(), "mix",
                                        combination_type="cat")
        peft_model.set_adapter("mix")
        mix_logits = composer_model(batch).logits
    # The hand merge: GPT-2's Conv1D stores W as (in, out), so dW = ((alpha / r) B A)^T.
    hand = {}
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and adapter_name(0) in module.lora_A:
            hand[id(module.get_base_layer())] = [
                (module.lora_B[adapter_name(j)].weight @ module.lora_A[adapter_name(j)].weight).T
                * (config.alpha / config.r) for j in range(3)]
    layers = adapter_deltas(peft_model, 3)
    assert len(layers) == len(hand) > 0
    composer_model.model = peft_model.unload()
    assert not any("lora_" in n for n, _ in composer_model.named_parameters())
    set_interpolation(layers, x)
    for layer in layers:
        expected = layer.base + sum(w * d for w, d in zip(x, hand[id(layer.module)]))
        torch.testing.assert_close(layer.module.weight, expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(composer_model(batch).logits, mix_logits, rtol=1e-5,
                                   atol=1e-5)
    for j in range(3):  # a vertex of the design is adapter j alone
        set_interpolation(layers, np.eye(3)[j])
        with torch.no_grad():
            torch.testing.assert_close(composer_model(batch).logits, adapter_logits[j],
                                       rtol=1e-5, atol=1e-5)
    set_interpolation(layers, [0.0, 0.0, 0.0])
    for layer in layers:
        assert torch.equal(layer.module.weight, layer.base)


def samples(domain: int, count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if domain == 0:  # counting: learnable
            ids = (rng.integers(0, VOCAB) + np.arange(SEQ)) % VOCAB
        else:  # noise
            ids = rng.integers(0, VOCAB, SEQ)
        out.append({"tokens": ids.astype(np.uint16), "domain": domain})
    return out


def test_probing_leaves_the_main_model_optimizer_and_rng_untouched() -> None:
    main = model()
    optimizer = torch.optim.AdamW(main.parameters(), lr=1e-3)
    batch = LMCollator(max_seq_len=SEQ, pad_id=0)(samples(0, 4, 9))
    main.loss(main(batch), batch).backward()
    optimizer.step()  # a real optimizer state to compare
    before = copy.deepcopy(main.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    rng_before = torch.get_rng_state()
    callback = OpMixProbing(OpMixPolicy(probe_at=1, fit_starts=2, num_random=2),
                            probe=ProbeConfig(r=2, alpha=4.0, steps=10, lr=2e-2, batch_size=4,
                                              val_batch_size=4))
    collate = LMCollator(max_seq_len=SEQ, pad_id=0)
    callback.set_probe_data(collate, [samples(0, 8, 1), samples(1, 8, 2)],
                            {"count": samples(0, 4, 3), "noise": samples(1, 4, 4)})
    state = SimpleNamespace(model=main, device=DeviceCPU())
    mixtures = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    observation, cost = callback.probe_now(state, mixtures, step=5)
    assert observation.proxy_losses.shape == (3, 2) and observation.base_loss.shape == (2,)
    assert np.all(np.isfinite(observation.proxy_losses))
    # the count adapter helps the count domain more than the noise adapter does
    assert observation.proxy_losses[0, 0] < observation.proxy_losses[1, 0]
    # 2 adapters x 10 steps x 4 samples; the snapshot and 3 proxies x 2 domains x 4 samples
    assert cost == {"probe_train_steps": 20.0, "probe_train_samples": 80.0,
                    "probe_eval_batches": 4.0 * 2, "probe_eval_samples": 4.0 * 8}
    after = main.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in k for k in after)
    assert torch.equal(torch.get_rng_state(), rng_before)
    optimizer_after = optimizer.state_dict()
    for key, value in optimizer_before["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, optimizer_after["state"][key][name])
    again, _ = callback.probe_now(state, mixtures, step=5)  # seeded: the same numbers
    np.testing.assert_array_equal(again.proxy_losses, observation.proxy_losses)


def test_probe_config_and_callback_errors() -> None:
    with pytest.raises(ValueError, match="ProbeConfig.r"):
        ProbeConfig(r=0)
    with pytest.raises(ValueError, match="ProbeConfig.lr"):
        ProbeConfig(lr=-1.0)
    with pytest.raises(ValueError, match="ProbeConfig.seed"):
        ProbeConfig(seed=-2)
    with pytest.raises(ValueError, match="probe_fraction"):
        OpMixProbing(probe_fraction=1.5)
    with pytest.raises(TypeError, match="OP-Mix policy"):
        OpMixProbing("aioli")
    with pytest.raises(ValueError, match="policy_options only apply"):
        OpMixProbing(OpMixPolicy(), policy_options={"kl_reg": 1.0})
    with pytest.raises(ValueError, match="no probe samples"):
        OpMixProbing().set_probe_data(None, [[], [1]], {"a": [1]})


def test_run_length_in_batches_from_max_duration() -> None:
    def state(duration, dataloader_len=None):
        return SimpleNamespace(max_duration=None if duration is None else Time.from_timestring(
            duration), dataloader_len=None if dataloader_len is None else Time.from_timestring(
            dataloader_len))

    assert _max_batches(state("50ba")) == 50
    assert _max_batches(state("3ep", "20ba")) == 60
    assert _max_batches(state("3ep")) is None
    assert _max_batches(state("1000tok")) is None
    assert _max_batches(state(None)) is None

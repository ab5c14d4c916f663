"""DPO in Composer: the loss against a hand computation, prompt masking, the collator, a fit."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from composer import Trainer
from composer.loggers import InMemoryLogger
from composer.models import HuggingFaceModel
from torch.utils.data import DataLoader, Dataset

from streammix.composer.dpo import (
    DPOCollator,
    DPOConfig,
    DPOMetric,
    DPOModel,
    dpo_loss,
    sequence_log_probs,
)
from streammix.composer.model import IGNORE_INDEX, tiny_gpt2

VOCAB = 23


def _tiny(seed: int) -> torch.nn.Module:
    return tiny_gpt2(vocab_size=VOCAB, max_seq_len=32, n_layer=1, n_head=2, n_embd=16, seed=seed).model


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


PAIRS = [
    {"prompt_tokens": [3, 4, 5], "chosen_tokens": [6, 7], "rejected_tokens": [8, 9, 10, 11], "domain": 0},
    {"prompt_tokens": [12], "chosen_tokens": [13, 14, 15], "rejected_tokens": [16], "domain": 1},
    {"prompt_tokens": np.array([1, 2, 2, 1], dtype=np.uint16), "chosen_tokens": np.array([20], dtype=np.uint32),
     "rejected_tokens": torch.tensor([21, 22]), "domain": np.int64(1)},
]


def _hand_log_prob(model: torch.nn.Module, prompt: list[int], response: list[int]) -> float:
    """log p(response | prompt) from one unpadded forward, summed token by token."""
    sequence = [int(t) for t in prompt] + [int(t) for t in response]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sequence])).logits[0].double()
    total = 0.0
    for position in range(len(prompt), len(sequence)):
        total += float(logits[position - 1].log_softmax(dim=0)[sequence[position]])
    return total


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_a_hand_computation(beta: float) -> None:
    policy, reference = _tiny(0), _tiny(1)
    model = DPOModel(policy, reference, config=DPOConfig(beta=beta), domain_names=["on", "off"])
    model.eval()
    batch = DPOCollator(max_seq_len=16, pad_id=0)(PAIRS)
    with torch.no_grad():
        outputs = model(batch)
        loss = float(model.loss(outputs, batch))
        per_pair = model.per_sample_loss(outputs, batch)
    expected, margins = [], []
    for pair in PAIRS:
        prompt = list(np.asarray(pair["prompt_tokens"]))
        logps = {
            (who, side): _hand_log_prob(m, prompt, list(np.asarray(pair[f"{side}_tokens"])))
            for who, m in (("policy", policy), ("reference", reference))
            for side in ("chosen", "rejected")
        }
        margin = beta * (
            (logps["policy", "chosen"] - logps["reference", "chosen"])
            - (logps["policy", "rejected"] - logps["reference", "rejected"])
        )
        margins.append(margin)
        expected.append(math.log1p(math.exp(-margin)))  # -log sigmoid(margin)
    np.testing.assert_allclose(per_pair.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(float(np.mean(expected)), rel=1e-4)
    assert min(abs(m) for m in margins) > 1e-4  # distinct models: a non-trivial case

    metrics = model.get_metrics()
    for metric in metrics.values():
        model.update_metric(batch, outputs, metric)
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    assert values["DPORewardMargin"] == pytest.approx(np.mean(margins), rel=1e-4, abs=1e-6)
    assert values["DPORewardMargin/on"] == pytest.approx(margins[0], rel=1e-4, abs=1e-6)
    assert values["DPORewardMargin/off"] == pytest.approx(np.mean(margins[1:]), rel=1e-4, abs=1e-6)
    assert values["DPORewardAccuracy"] == pytest.approx(np.mean([m > 0 for m in margins]))
    assert values["DPORewardAccuracy/off"] == pytest.approx(np.mean([m > 0 for m in margins[1:]]))
    assert values["DPOChosenReward"] - values["DPORejectedReward"] == pytest.approx(
        values["DPORewardMargin"], rel=1e-4, abs=1e-6
    )


def test_identical_policy_and_reference_give_log_two() -> None:
    model = DPOModel(_tiny(3))  # reference deep-copied
    batch = DPOCollator(max_seq_len=16, pad_id=0)(PAIRS)
    with torch.no_grad():
        loss = float(model.loss(model(batch), batch))
    assert loss == pytest.approx(math.log(2), abs=1e-6)


def test_label_smoothing_and_loss_function() -> None:
    logps = [torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -4.0]), torch.tensor([-2.5, -1.0]),
             torch.tensor([-2.0, -3.0])]
    margin = 0.2 * ((logps[0] - logps[2]) - (logps[1] - logps[3]))
    plain = dpo_loss(*logps, DPOConfig(beta=0.2))
    assert float(plain) == pytest.approx(float(-torch.nn.functional.logsigmoid(margin).mean()))
    smooth = dpo_loss(*logps, DPOConfig(beta=0.2, label_smoothing=0.1))
    expected = -(0.9 * torch.nn.functional.logsigmoid(margin) + 0.1 * torch.nn.functional.logsigmoid(-margin))
    assert float(smooth) == pytest.approx(float(expected.mean()))


def test_collator_masks_prompt_and_padding() -> None:
    batch = DPOCollator(max_seq_len=16, pad_id=0)(PAIRS)
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape == (3, 7)
    assert batch["chosen_input_ids"][0].tolist() == [3, 4, 5, 6, 7, 0, 0]
    assert batch["chosen_labels"][0].tolist() == [IGNORE_INDEX] * 3 + [6, 7] + [IGNORE_INDEX] * 2
    assert batch["chosen_attention_mask"][0].tolist() == [1] * 5 + [0] * 2
    assert batch["rejected_input_ids"][0].tolist() == [3, 4, 5, 8, 9, 10, 11]
    assert batch["rejected_labels"][0].tolist() == [IGNORE_INDEX] * 3 + [8, 9, 10, 11]
    assert batch["rejected_labels"][2].tolist() == [IGNORE_INDEX] * 4 + [21, 22, IGNORE_INDEX]
    assert batch["domain"].tolist() == [0, 1, 1]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_collator_truncates_prompt_from_the_left_and_response_at_the_end() -> None:
    sample = {"prompt_tokens": list(range(1, 11)), "chosen_tokens": [11, 12, 13, 14, 15, 16],
              "rejected_tokens": [17], "domain": 0}
    batch = DPOCollator(max_seq_len=8, pad_id=0, max_prompt_len=4)([sample])
    assert batch["chosen_input_ids"][0].tolist() == [7, 8, 9, 10, 11, 12, 13, 14]
    assert batch["chosen_labels"][0].tolist() == [IGNORE_INDEX] * 4 + [11, 12, 13, 14]
    assert batch["rejected_input_ids"][0].tolist() == [7, 8, 9, 10, 17, 0, 0, 0]


def test_prompt_and_padding_do_not_enter_the_log_probs() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=gen)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 4, 5, IGNORE_INDEX, IGNORE_INDEX],
                           [IGNORE_INDEX, 1, 2, 3, 4, 5]])
    base = sequence_log_probs(logits, labels)
    changed = logits.clone()
    changed[0, 0] += 100.0  # predicts the prompt token at position 1: no target
    changed[0, 3:] -= 50.0  # predicts padding: no target
    assert torch.allclose(sequence_log_probs(changed, labels), base)
    changed[0, 1, 4] += 1.0  # predicts the first response token
    assert not torch.allclose(sequence_log_probs(changed, labels)[0], base[0])
    expected = float(logits[1, :-1].log_softmax(-1)[torch.arange(5), labels[1, 1:]].sum())
    assert float(base[1]) == pytest.approx(expected, rel=1e-5)

    # In the model: another prompt padding length or padding value changes nothing.
    model = DPOModel(_tiny(0), _tiny(1))
    model.eval()
    short = DPOCollator(max_seq_len=16, pad_id=0)(PAIRS[:1])
    padded = DPOCollator(max_seq_len=16, pad_id=9)(PAIRS)
    with torch.no_grad():
        a, b = model(short), model(padded)
    for key in a:
        assert float(a[key][0]) == pytest.approx(float(b[key][0]), rel=1e-5)


def test_reference_is_frozen_and_stays_in_eval_mode() -> None:
    policy = tiny_gpt2(vocab_size=VOCAB, max_seq_len=32, n_layer=1, n_head=2, n_embd=16, seed=0,
                       dropout=0.1).model
    model = DPOModel(policy)
    assert model.reference is not model.policy
    assert not any(p.requires_grad for p in model.reference.parameters())
    assert all(p.requires_grad for p in model.policy.parameters())
    model.train()
    assert model.policy.training and not model.reference.training


def test_accepts_composer_wrapped_models() -> None:
    policy = tiny_gpt2(vocab_size=VOCAB, max_seq_len=32, n_layer=1, n_head=2, n_embd=16, seed=0)
    model = DPOModel(policy)
    assert model.policy is policy.model
    hf = HuggingFaceModel(_tiny(1), use_logits=True)
    assert DPOModel(hf).policy is hf.model


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: DPOConfig(beta=0.0), ValueError),
        (lambda: DPOConfig(beta="1"), TypeError),
        (lambda: DPOConfig(label_smoothing=0.5), ValueError),
        (lambda: DPOModel(_tiny(0), config={"beta": 0.1}), TypeError),
        (lambda: DPOModel(_tiny(0), domain_names=["a", "a"]), ValueError),
        (lambda: DPOModel("gpt2"), TypeError),
        (lambda: DPOModel(_tiny(0), tiny_gpt2(vocab_size=VOCAB + 1, max_seq_len=32, n_layer=1,
                                              n_head=2, n_embd=16, seed=0)), ValueError),
        (lambda: DPOModel(_tiny(0), torch.nn.Linear(2, 2)), ValueError),
        (lambda: DPOCollator(max_seq_len=8, pad_id=0, max_prompt_len=8), ValueError),
        (lambda: DPOCollator(max_seq_len=8, pad_id=-1), ValueError),
        (lambda: DPOMetric("loss"), ValueError),
    ],
)
def test_bad_input(build, error: type) -> None:
    with pytest.raises(error):
        build()


@pytest.mark.parametrize(
    ("sample", "error"),
    [
        ({"prompt_tokens": [1], "chosen_tokens": [2], "domain": 0}, ValueError),
        ({"prompt_tokens": [], "chosen_tokens": [2], "rejected_tokens": [3], "domain": 0}, ValueError),
        ({"prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [], "domain": 0}, ValueError),
        ({"prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [3]}, ValueError),
        ({"prompt_tokens": [1.5], "chosen_tokens": [2], "rejected_tokens": [3], "domain": 0}, TypeError),
        ([1, 2, 3], TypeError),
    ],
)
def test_collator_bad_samples(sample, error: type) -> None:
    with pytest.raises(error):
        DPOCollator(max_seq_len=8, pad_id=0)([sample])
    with pytest.raises(ValueError):
        DPOCollator(max_seq_len=8, pad_id=0)([])


def test_collator_pickles_and_model_rejects_other_batches() -> None:
    collator = pickle.loads(pickle.dumps(DPOCollator(max_seq_len=8, pad_id=5)))
    assert collator(PAIRS[1:2])["rejected_input_ids"].tolist() == [[12, 16, 5, 5]]
    model = DPOModel(_tiny(0))
    with pytest.raises(KeyError):
        model({"input_ids": torch.zeros(1, 4, dtype=torch.int64)})
    with pytest.raises(TypeError):
        model.loss(torch.zeros(3), {})


class SyntheticPairs(Dataset):
    """Prompt: 4 tokens of the vocabulary's lower half; chosen: the prompt reversed;
    rejected: 4 tokens of the upper half (a preference that generalizes to new prompts)."""

    def __init__(self, size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.rows = [
            (torch.randint(1, VOCAB // 2, (4,), generator=gen),
             torch.randint(VOCAB // 2, VOCAB, (4,), generator=gen))
            for _ in range(size)
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        prompt, noise = self.rows[index]
        return {"prompt_tokens": prompt, "chosen_tokens": prompt.flip(0), "rejected_tokens": noise,
                "domain": index % 2}


@pytest.mark.usefixtures("one_torch_thread")
def test_composer_fit_on_cpu_raises_reward_accuracy() -> None:
    model = DPOModel(_tiny(0), config=DPOConfig(beta=0.5), domain_names=["on", "off"])
    reference_before = [p.detach().clone() for p in model.reference.parameters()]
    collate = DPOCollator(max_seq_len=16, pad_id=0)
    train = DataLoader(SyntheticPairs(32, seed=0), batch_size=8, collate_fn=collate)
    evaluation = DataLoader(SyntheticPairs(16, seed=1), batch_size=8, collate_fn=collate)
    logger = InMemoryLogger()
    trainer = Trainer(
        model=model,
        train_dataloader=train,
        eval_dataloader=evaluation,
        max_duration="40ba",
        eval_interval="40ba",
        optimizers=torch.optim.AdamW(model.policy.parameters(), lr=1e-2),
        device="cpu",
        seed=1,
        progress_bar=False,
        log_to_console=False,
        loggers=[logger],
    )
    trainer.fit()
    losses = [float(v) for _, v in logger.data["loss/train/total"]]
    assert len(losses) == 40
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert np.mean(losses[-5:]) < 0.4
    for before, after in zip(reference_before, model.reference.parameters()):
        assert torch.equal(before, after)
    assert "metrics/train/DPORewardAccuracy/on" in logger.data
    eval_metrics = trainer.state.eval_metrics["eval"]
    # the preference carries over to unseen prompts
    assert float(eval_metrics["DPORewardAccuracy"].compute()) >= 0.75
    assert float(eval_metrics["DPORewardMargin/off"].compute()) > 0

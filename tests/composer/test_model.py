"""The tiny GPT-2 Composer model, its losses and the collator."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from composer import Trainer
from composer.loggers import InMemoryLogger
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

from streammix.composer.model import (
    IGNORE_INDEX,
    LMCollator,
    causal_lm_loss,
    causal_lm_loss_sums,
    lm_collate,
    per_sample_causal_lm_loss,
    tiny_gpt2,
)
from streammix.demo.local_corpus import collect_local_corpus, read_jsonl_texts
from streammix.demo.tokenizer import train_tokenizer

SEQ_LEN = 64


def _reference_per_sample(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Obvious loop: mean of -log softmax(logits[b, t])[labels[b, t + 1]] over targets."""
    result = []
    for b in range(logits.shape[0]):
        total, count = 0.0, 0
        for t in range(logits.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            log_probs = logits[b, t].double().log_softmax(dim=0)
            total -= float(log_probs[target])
            count += 1
        result.append(total / count if count else 0.0)
    return result


def _random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 7, 11, generator=gen)
    labels = torch.randint(0, 11, (4, 7), generator=gen)
    labels[1, 3:] = IGNORE_INDEX
    labels[2, 1:] = IGNORE_INDEX  # no targets at all
    labels[3, ::2] = IGNORE_INDEX
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_sample_loss_matches_the_reference(seed: int) -> None:
    logits, labels = _random_case(seed)
    got = per_sample_causal_lm_loss(logits, labels)
    assert got.shape == (4,)
    np.testing.assert_allclose(
        got.numpy(), _reference_per_sample(logits, labels), rtol=1e-5, atol=1e-6
    )
    assert got[2] == 0.0


def test_token_weighted_mean_of_per_sample_losses_is_the_loss() -> None:
    logits, labels = _random_case(5)
    sums, counts = causal_lm_loss_sums(logits, labels)
    per_sample = per_sample_causal_lm_loss(logits, labels)
    weighted = float((per_sample * counts).sum() / counts.sum())
    assert math.isclose(weighted, float(causal_lm_loss(logits, labels)), rel_tol=1e-5)
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)
    )
    assert math.isclose(float(causal_lm_loss(logits, labels)), float(full), rel_tol=1e-5)


def test_loss_shape_errors() -> None:
    with pytest.raises(ValueError):
        per_sample_causal_lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.int64))


def test_tiny_gpt2_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first = tiny_gpt2(vocab_size=300, max_seq_len=16, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = tiny_gpt2(vocab_size=300, max_seq_len=16, seed=7)
    other = tiny_gpt2(vocab_size=300, max_seq_len=16, seed=8)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.model.transformer.wte.weight, other.model.transformer.wte.weight)
    config = first.model.config
    assert (config.n_layer, config.n_head, config.n_embd, config.n_positions) == (2, 4, 128, 16)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"vocab_size": 0}, ValueError),
        ({"max_seq_len": 8.0}, TypeError),
        ({"n_head": 3}, ValueError),
        ({"seed": -1}, ValueError),
        ({"dropout": 1.0}, ValueError),
    ],
)
def test_tiny_gpt2_bad_input(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        tiny_gpt2(**({"vocab_size": 300, "max_seq_len": 16, "seed": 0} | kwargs))


def test_collate_blocks_and_variable_length_samples() -> None:
    samples = [
        {"input_ids": np.arange(1, 7, dtype=np.uint16), "domain": 1},
        {"tokens": [5, 6, 7], "domain": np.int64(0)},
        {"tokens": torch.arange(10, 20), "domain": torch.tensor(2)},
        {"tokens": np.array([], dtype=np.uint32), "domain": 0},
    ]
    batch = lm_collate(samples, max_seq_len=6, pad_id=0)
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 5, 6],
        [5, 6, 7, 0, 0, 0],
        [10, 11, 12, 13, 14, 15],
        [0] * 6,
    ]
    assert batch["labels"].tolist() == [
        [1, 2, 3, 4, 5, 6],
        [5, 6, 7, -100, -100, -100],
        [10, 11, 12, 13, 14, 15],
        [-100] * 6,
    ]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6]
    assert batch["domain"].tolist() == [1, 0, 2, 0]


@pytest.mark.parametrize(
    ("samples", "error"),
    [
        ([], ValueError),
        ([{"input_ids": [1, 2, 3]}], ValueError),  # no domain
        ([{"input_ids": [1, 2], "domain": 0}], ValueError),  # not a full block
        ([{"domain": 0}], ValueError),
        ([{"tokens": [-1], "domain": 0}], ValueError),
        ([{"tokens": [0.5], "domain": 0}], TypeError),
        ([{"tokens": [1], "domain": "web"}], ValueError),
        ([[1, 2, 3]], TypeError),
    ],
)
def test_collate_bad_input(samples: list, error: type) -> None:
    with pytest.raises(error):
        lm_collate(samples, max_seq_len=3, pad_id=0)


def test_collator_pickles() -> None:
    collator = pickle.loads(pickle.dumps(LMCollator(max_seq_len=4, pad_id=9)))
    assert collator([{"tokens": [1], "domain": 0}])["input_ids"].tolist() == [[1, 9, 9, 9]]
    with pytest.raises(ValueError):
        LMCollator(max_seq_len=4, pad_id=-1)


class TokenBlocks(Dataset):
    def __init__(self, token_ids: list[int], block: int, domain: int) -> None:
        self.token_ids, self.block, self.domain = token_ids, block, domain

    def __len__(self) -> int:
        return len(self.token_ids) // self.block

    def __getitem__(self, index: int) -> dict:
        start = index * self.block
        return {"input_ids": self.token_ids[start : start + self.block], "domain": self.domain}


@pytest.fixture(scope="module")
def corpus_blocks(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenBlocks, int]:
    root = tmp_path_factory.mktemp("corpus")
    paths = collect_local_corpus(root / "jsonl", max_docs_per_domain=60)
    texts = read_jsonl_texts(paths["docs"]) + read_jsonl_texts(paths["code"])[:20]
    tokenizer = AutoTokenizer.from_pretrained(
        train_tokenizer(texts, root / "tok", vocab_size=512), local_files_only=True
    )
    token_ids: list[int] = []
    for ids in tokenizer(read_jsonl_texts(paths["docs"]))["input_ids"]:
        token_ids.extend([*ids, tokenizer.eos_token_id])
    return TokenBlocks(token_ids, SEQ_LEN, domain=1), len(tokenizer)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, 2 spinning threads can be 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_composer_trains_and_evaluates_the_tiny_model(
    corpus_blocks: tuple[TokenBlocks, int],
) -> None:
    dataset, vocab_size = corpus_blocks
    assert len(dataset) >= 240
    collate = LMCollator(max_seq_len=SEQ_LEN, pad_id=0)
    model = tiny_gpt2(vocab_size=vocab_size, max_seq_len=SEQ_LEN, seed=0)
    train = DataLoader(dataset, batch_size=8, shuffle=False, collate_fn=collate)
    evaluation = DataLoader(
        torch.utils.data.Subset(dataset, range(16)), batch_size=8, collate_fn=collate
    )
    logger = InMemoryLogger()
    trainer = Trainer(
        model=model,
        train_dataloader=train,
        eval_dataloader=evaluation,
        max_duration="30ba",
        eval_interval="30ba",
        optimizers=torch.optim.AdamW(model.parameters(), lr=3e-3),
        device="cpu",
        seed=1,
        progress_bar=False,
        log_to_console=False,
        loggers=[logger],
    )
    trainer.fit()
    losses = [float(value) for _, value in logger.data["loss/train/total"]]
    assert len(losses) == 30
    assert losses[0] == pytest.approx(math.log(vocab_size), rel=0.1)  # near-uniform at init
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5

    batch = next(iter(evaluation))
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
        loss = float(model.loss(outputs, batch))
        per_sample = model.per_sample_loss(outputs, batch)
    counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)
    assert float((per_sample * counts).sum() / counts.sum()) == pytest.approx(loss, rel=1e-5)

    eval_metrics = trainer.state.eval_metrics["eval"]
    cross_entropy = float(eval_metrics["LanguageCrossEntropy"].compute())
    with torch.no_grad():
        expected = [float(model.loss(model(b), b)) for b in evaluation]
    assert cross_entropy == pytest.approx(np.mean(expected), rel=1e-4)
    assert float(eval_metrics["LanguagePerplexity"].compute()) == pytest.approx(
        math.exp(cross_entropy), rel=1e-4
    )


def test_model_loss_accepts_tensors_and_rejects_other_outputs() -> None:
    model = tiny_gpt2(vocab_size=11, max_seq_len=7, n_embd=8, n_head=2, seed=0)
    logits, labels = _random_case(3)
    batch = {"labels": labels}
    assert torch.equal(model.loss(logits, batch), causal_lm_loss(logits, labels))
    assert torch.equal(
        model.per_sample_loss({"logits": logits}, batch), per_sample_causal_lm_loss(logits, labels)
    )
    with pytest.raises(TypeError):
        model.loss("not logits", batch)

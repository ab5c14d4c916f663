"""The transformers-backed quality scorer, on tiny models created in the test (no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from streammix.metadata.quality import Scorer, make_scorer  # noqa: E402
from streammix.pipeline.hf_quality import HFClassifierScorer  # noqa: E402

CORPUS = [
    "the river runs through the valley and feeds the old mill",
    "farmers have used that water for centuries to grow wheat",
    "buy cheap shoes online today best price click here",
    "in spring the snow melts and the current becomes strong",
    "visitors walk along the banks to watch the herons",
] * 4

TEXTS = [
    "the river runs",
    "buy cheap shoes online today best price click here now now now",
    "",
    "farmers grow wheat and barley in the valley " * 30,
    "visitors watch herons",
    "the snow melts in spring",
    "click here",
]


def _train_wordpiece() -> tokenizers.Tokenizer:
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=special)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tokenizer


def _save_tiny_bert(
    directory: Path, num_labels: int, id2label: dict[int, str] | None = None
) -> Path:
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_train_wordpiece(),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = transformers.BertConfig(
        vocab_size=fast.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
        **(
            {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
            if id2label
            else {}
        ),
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("clf"), 2, {0: "low", 1: "high"})


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("reg"), 1)


def _direct_scores(model_dir: Path, texts: list[str], head: str, label: int = 1) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, local_files_only=True
    ).eval()
    out = []
    for text in texts:
        with torch.inference_mode():
            logits = model(
                **tokenizer([text], truncation=True, max_length=64, return_tensors="pt")
            ).logits
        out.append(
            float(logits[0, 0])
            if head == "regression"
            else float(torch.softmax(logits, -1)[0, label])
        )
    return np.array(out, dtype=np.float32)


def test_classifier_scores_are_the_probability_of_the_last_label(classifier_dir: Path) -> None:
    scorer = HFClassifierScorer(classifier_dir, device="cpu", max_length=64)
    assert isinstance(scorer, Scorer) and scorer.name == "hf"
    batch = scorer.score(TEXTS, [{}] * len(TEXTS))
    assert batch.quality.dtype == np.float32 and batch.signals == {}
    assert np.all((batch.quality > 0) & (batch.quality < 1))
    np.testing.assert_allclose(
        batch.quality, _direct_scores(classifier_dir, TEXTS, "clf"), atol=1e-5
    )
    by_name = HFClassifierScorer(classifier_dir, device="cpu", max_length=64, label="low").score(
        TEXTS, [{}] * 7
    )
    np.testing.assert_allclose(by_name.quality, 1 - batch.quality, atol=1e-5)
    by_index = HFClassifierScorer(classifier_dir, device="cpu", max_length=64, label=0).score(
        TEXTS, [{}] * 7
    )
    np.testing.assert_allclose(by_index.quality, by_name.quality, atol=1e-6)


def test_batching_gives_the_same_scores_as_one_by_one(regression_dir: Path) -> None:
    batched = HFClassifierScorer(regression_dir, device="cpu", batch_size=3, max_length=64)
    single = HFClassifierScorer(regression_dir, device="cpu", batch_size=1, max_length=64)
    together = batched.score(TEXTS, [{}] * len(TEXTS)).quality
    np.testing.assert_allclose(together, single.score(TEXTS, [{}] * len(TEXTS)).quality, atol=1e-5)
    np.testing.assert_allclose(
        together, _direct_scores(regression_dir, TEXTS, "regression"), atol=1e-5
    )
    assert batched.score([], []).quality.shape == (0,)


def test_make_scorer_hf_and_pickle(regression_dir: Path) -> None:
    scorer = make_scorer(f"hf:{regression_dir}", device="cpu", batch_size=2, max_length=64)
    assert isinstance(scorer, HFClassifierScorer)
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(
        clone.score(TEXTS[:3], [{}] * 3).quality, scorer.score(TEXTS[:3], [{}] * 3).quality
    )


def test_bad_model_directories_are_clear_errors(
    tmp_path: Path, classifier_dir: Path, regression_dir: Path
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        HFClassifierScorer(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        HFClassifierScorer(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="cannot load"):
        HFClassifierScorer(broken)
    with pytest.raises(ValueError, match="not one of the model's labels"):
        HFClassifierScorer(classifier_dir, label="medium")
    with pytest.raises(ValueError, match="outside"):
        HFClassifierScorer(classifier_dir, label=5)
    with pytest.raises(ValueError, match="regression head"):
        HFClassifierScorer(regression_dir, label="high")
    with pytest.raises(ValueError, match="batch_size"):
        HFClassifierScorer(regression_dir, batch_size=0)
    with pytest.raises(ValueError, match="2 texts but 1 records"):
        HFClassifierScorer(regression_dir).score(["a", "b"], [{}])

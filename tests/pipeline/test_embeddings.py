"""The embedding topic backend, on a tiny sentence-transformers directory made in the test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from build_helpers import generated_records, stdlib_glob, write_jsonl

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from streammix.format.sidecar import read_sidecar  # noqa: E402
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec  # noqa: E402
from streammix.pipeline.embeddings import SentenceEmbedder  # noqa: E402
from streammix.pipeline.local import run_build  # noqa: E402

CORPUS = [
    "the river runs through the valley and feeds the old mill",
    "def function(argument): return argument + 1",
    "import numpy as np and compute the mean of the array",
    "in spring the snow melts and the current becomes strong",
] * 5


def _save_sentence_model(directory: Path, pooling: str = "mean") -> Path:
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    raw = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=special)
    )
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
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
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir()
    (directory / "2_Normalize").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 16,
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_max_tokens": False,
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _save_sentence_model(tmp_path_factory.mktemp("st"))


def _direct(model_dir: Path, texts: list[str], pooling: str) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    out = []
    for text in texts:
        encoded = tokenizer([text], return_tensors="pt", truncation=True, max_length=64)
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0]
        vector = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
        out.append((vector / vector.norm()).numpy())
    return np.stack(out)


TEXTS = ["the river runs", "", "def f(x): return x", "snow melts " * 20, "numpy array mean"]


def test_mean_pooling_matches_a_direct_computation_and_batches_do_not_matter(model_dir) -> None:
    embedder = SentenceEmbedder(model_dir, batch_size=2, device="cpu")
    assert embedder.pooling == "mean" and embedder.dim == 16
    vectors = embedder.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 16)
    np.testing.assert_allclose(vectors, _direct(model_dir, TEXTS, "mean"), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = SentenceEmbedder(model_dir, batch_size=1, device="cpu").embed(TEXTS)
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


def test_cls_pooling_from_the_pooling_config(tmp_path: Path) -> None:
    directory = _save_sentence_model(tmp_path / "cls", pooling="cls")
    vectors = SentenceEmbedder(directory, device="cpu").embed(TEXTS)
    np.testing.assert_allclose(vectors, _direct(directory, TEXTS, "cls"), atol=1e-5)


def test_bad_model_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        SentenceEmbedder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        SentenceEmbedder(tmp_path / "empty")
    with pytest.raises(ValueError, match="batch_size"):
        SentenceEmbedder(tmp_path / "empty", batch_size=0)
    with pytest.raises(BuildError, match="no such model directory"):
        BuildConfig(
            domains=(DomainSpec(name="a", source="x"),),
            out="o",
            topic_backend=f"embeddings:{tmp_path / 'missing'}",
        )
    with pytest.raises(BuildError, match="topic-backend"):
        BuildConfig(domains=(DomainSpec(name="a", source="x"),), out="o", topic_backend="lda")


def test_build_with_the_embedding_backend(model_dir, tmp_path: Path) -> None:
    web = write_jsonl(tmp_path / "web.jsonl", generated_records(80, seed=5, prefix="web"))
    domains = (
        DomainSpec(name="web", source=str(web)),
        DomainSpec(name="code", source=stdlib_glob()),
    )
    config = BuildConfig(
        domains=domains,
        out=str(tmp_path / "out"),
        workers=0,
        progress=False,
        minhash_num_perm=32,
        topic_backend=f"embeddings:{model_dir}",
    )
    assert dataclasses.replace(config, topic_backend="minhash").fingerprint() != (
        config.fingerprint()
    )
    run_build(config)
    sides = [read_sidecar(Path(config.out) / name) for name in ("web", "code")]
    keys = np.concatenate([s["sample_key"].to_numpy() for s in sides])
    topic = np.concatenate([s["topic_cluster_id"].to_numpy() for s in sides])
    assert set(topic.tolist()) <= set(keys.tolist())  # ids are members' sample keys
    assert 1 < len(np.unique(topic)) < len(topic)
    for side in sides:
        distance = side["topic_distance"].to_numpy()
        diversity = side["diversity"].to_numpy()
        assert np.all((distance >= 0) & (distance <= 1))
        assert np.all((diversity >= 0) & (diversity <= 1))

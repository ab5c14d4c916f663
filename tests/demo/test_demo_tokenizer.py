"""The locally trained byte-level BPE tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from streammix.demo.local_corpus import CorpusSources, iter_docs_documents
from streammix.demo.tokenizer import EOS_TOKEN, train_tokenizer


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [doc.text for doc in iter_docs_documents(CorpusSources.this_machine().doc_topics)]


@pytest.fixture(scope="module")
def trained(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=1024)


def test_loads_offline_with_eos_as_pad(trained: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained, local_files_only=True)
    assert len(tokenizer) == 1024
    assert tokenizer.eos_token == EOS_TOKEN == tokenizer.pad_token
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert tokenizer.convert_tokens_to_ids(EOS_TOKEN) == 0


def test_training_is_deterministic(texts: list[str], trained: Path, tmp_path: Path) -> None:
    again = train_tokenizer(texts, tmp_path, vocab_size=1024)
    first = json.loads((trained / "tokenizer.json").read_text())
    second = json.loads((again / "tokenizer.json").read_text())
    assert first["model"]["vocab"] == second["model"]["vocab"]
    assert first["model"]["merges"] == second["model"]["merges"]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100))
def test_decode_inverts_encode(trained: Path, text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained, local_files_only=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_small_texts_give_a_smaller_vocabulary(tmp_path: Path) -> None:
    out = train_tokenizer(["abab abab abab"] * 5, tmp_path, vocab_size=4096)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert 258 <= len(tokenizer) < 4096


@pytest.mark.parametrize(
    ("texts", "kwargs", "error"),
    [
        ("a single string", {}, TypeError),
        (["ok", 3], {}, TypeError),
        (["ok"], {"vocab_size": 100}, ValueError),
        (["ok"], {"vocab_size": 512.0}, TypeError),
        ([], {}, ValueError),
        (["ok"], {"model_max_length": 0}, ValueError),
    ],
)
def test_bad_input(tmp_path: Path, texts: object, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        train_tokenizer(texts, tmp_path, **kwargs)  # type: ignore[arg-type]

"""Prepare stage pieces: token dtype, split hash, token arrays, documents without tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from build_helpers import write_jsonl

from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec
from streammix.pipeline.local import run_build
from streammix.pipeline.prepare import _token_array, split_hash, token_dtype_for


def test_token_dtype_by_vocabulary_size() -> None:
    assert token_dtype_for(400) == "uint16"
    assert token_dtype_for(65536) == "uint16"
    assert token_dtype_for(65537) == "uint32"


def test_split_hash_is_blake2b_of_seed_and_text() -> None:
    digest = hashlib.blake2b((7).to_bytes(8, "little") + "héllo".encode(), digest_size=8)
    assert split_hash("héllo", 7) == int.from_bytes(digest.digest(), "little")
    assert split_hash("héllo", 7) != split_hash("héllo", 8)


def test_token_array_keeps_rows() -> None:
    rows = [[1, 2, 3], [70000], [4, 5]]
    array = _token_array(rows)
    assert array.to_pylist() == rows
    assert _token_array([]).to_pylist() == []


def _letters_tokenizer(folder: Path) -> Path:
    """A BPE knowing only 'a' and 'b' (no unknown token): other text has no tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    return folder


def test_documents_without_tokens_are_rejected(tmp_path: Path) -> None:
    tokenizer = _letters_tokenizer(tmp_path / "tok")
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"text": "ab ab a"}, {"text": "zzz"}, {"text": "b a"}]
    )
    config = BuildConfig(
        domains=(DomainSpec(name="a", source=str(path)),),
        out=str(tmp_path / "out"),
        tokenizer=str(tokenizer),
        workers=0,
        progress=False,
    )
    run_build(config)
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text()
    assert "a.jsonl:2" in rejects and "no tokens" in rejects
    side = pq.read_table(tmp_path / "out" / "a" / "streammix.parquet")
    assert side["num_tokens"].to_pylist() == [3, 2]
    assert np.all(side["sample_key"].to_numpy() == [0, 1])
    strict = BuildConfig(
        domains=config.domains,
        out=str(tmp_path / "strict"),
        tokenizer=str(tokenizer),
        workers=0,
        progress=False,
        strict=True,
    )
    with pytest.raises(BuildError, match="a.jsonl:2: document has no tokens"):
        run_build(strict)


def test_column_scorer_takes_the_input_field_and_reports_a_missing_one(tmp_path: Path) -> None:
    records = [{"text": f"document {i} about things", "score": i / 10} for i in range(5)]
    path = write_jsonl(tmp_path / "a.jsonl", records)
    config = BuildConfig(
        domains=(DomainSpec(name="a", source=str(path)),),
        out=str(tmp_path / "out"),
        scorer="column:score",
        workers=0,
        progress=False,
    )
    run_build(config)
    side = pq.read_table(tmp_path / "out" / "a" / "streammix.parquet")
    assert np.allclose(side["quality"].to_numpy(), [0.0, 0.1, 0.2, 0.3, 0.4])
    assert side["quality_norm"].to_pylist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    missing = write_jsonl(tmp_path / "b.jsonl", [{"text": "no score here"}])
    broken = BuildConfig(
        domains=(DomainSpec(name="b", source=str(missing)),),
        out=str(tmp_path / "out2"),
        scorer="column:score",
        workers=0,
        progress=False,
    )
    with pytest.raises(BuildError, match="--quality column:score failed"):
        run_build(broken)

"""Shingling: configuration, documented edge cases, and the numba window finder."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.metadata.shingle import (
    WHITESPACE_CODE_POINTS,
    ShingleConfig,
    collapse_whitespace_nb,
    encode_normalized,
    normalize_text,
    shingle_windows_nb,
    shingles,
)


def test_default_is_word_5_grams_of_normalized_text() -> None:
    text = "The  quick brown\tfox jumps over"
    assert shingles(text, ShingleConfig()) == [
        b"the quick brown fox jumps",
        b"quick brown fox jumps over",
    ]


def test_unicode_normalization_is_configurable() -> None:
    text = "\ufb01ne \uff26\uff55\uff4c\uff4c"  # "ﬁne Ｆｕｌｌ"
    assert normalize_text(text, ShingleConfig()) == "fine full"
    assert (
        normalize_text(text, ShingleConfig(normalization=None))
        == "\ufb01ne \uff46\uff55\uff4c\uff4c"
    )
    assert normalize_text("e\u0301", ShingleConfig(normalization="NFC")) == "\u00e9"
    assert normalize_text("\u00e9", ShingleConfig(normalization="NFD")) == "e\u0301"


def test_lowercasing_is_configurable() -> None:
    assert normalize_text("Hello World", ShingleConfig(lowercase=False)) == "Hello World"
    assert normalize_text("Hello World", ShingleConfig()) == "hello world"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("keep", "don't stop, «now»!"), ("remove", "dont stop now"), ("space", "don t stop now")],
)
def test_punctuation_modes(mode: str, expected: str) -> None:
    assert normalize_text("Don't stop, «now»!", ShingleConfig(punctuation=mode)) == expected


def test_short_documents_whole_or_drop() -> None:
    text = "only three words"
    assert shingles(text, ShingleConfig()) == [b"only three words"]
    assert shingles(text, ShingleConfig(short_documents="drop")) == []
    assert shingles(text, ShingleConfig(n=3)) == [b"only three words"]


@pytest.mark.parametrize("text", ["", "   \n\t", "!!! ... ?"])
def test_empty_normalized_text_has_no_shingles(text: str) -> None:
    assert shingles(text, ShingleConfig()) == []
    assert shingles(text, ShingleConfig(unit="char", n=2)) == []


def test_char_n_grams_count_code_points_and_keep_spaces() -> None:
    config = ShingleConfig(unit="char", n=3)
    assert shingles("ab cd", config) == [b"ab ", b"b c", b" cd"]
    assert shingles("日本語の", config) == ["日本語".encode(), "本語の".encode()]


def test_shingles_are_distinct_in_first_occurrence_order() -> None:
    assert shingles("a b a b a b", ShingleConfig(n=2)) == [b"a b", b"b a"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unit", "token"),
        ("n", 0),
        ("n", 2.5),
        ("n", True),
        ("normalization", "NFX"),
        ("punctuation", "strip"),
        ("short_documents", "pad"),
    ],
)
def test_invalid_config_is_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ShingleConfig(**{field: value})


def test_config_is_frozen_and_keyword_only() -> None:
    config = ShingleConfig()
    with pytest.raises(AttributeError):
        config.n = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ShingleConfig("word")  # type: ignore[misc]


def test_text_must_be_str() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        shingles(b"bytes", ShingleConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence of str"):
        encode_normalized("one string", ShingleConfig())


def _kernel_shingles(text: str, config: ShingleConfig) -> list[bytes]:
    buf, starts, lengths = encode_normalized([text], config)
    win_start = np.empty(lengths[0] + 1, dtype=np.int64)
    win_end = np.empty(lengths[0] + 1, dtype=np.int64)
    count = shingle_windows_nb(
        buf,
        starts[0],
        lengths[0],
        config.unit == "char",
        config.n,
        config.short_documents == "whole",
        win_start,
        win_end,
    )
    raw = buf.tobytes()
    return list(dict.fromkeys(raw[win_start[i] : win_end[i]] for i in range(count)))


TEXT = st.text(alphabet=st.sampled_from(list("ab c,.!'\n\tÉé日本ﬁ\u00a0\u3000-")), max_size=60)
CONFIGS = st.builds(
    ShingleConfig,
    unit=st.sampled_from(["word", "char"]),
    n=st.integers(1, 6),
    normalization=st.sampled_from(["NFKC", "NFC", None]),
    lowercase=st.booleans(),
    punctuation=st.sampled_from(["keep", "remove", "space"]),
    short_documents=st.sampled_from(["whole", "drop"]),
)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, config=CONFIGS)
def test_kernel_windows_equal_python_shingles(text: str, config: ShingleConfig) -> None:
    assert _kernel_shingles(text, config) == shingles(text, config)


def test_whitespace_table_is_what_str_split_uses() -> None:
    expected = [cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]
    assert WHITESPACE_CODE_POINTS.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab é日\n\t\r\x1c\x85\xa0\u2003\u3000\u200b")), max_size=40
    )
)
def test_kernel_whitespace_collapse_equals_split_join(text: str) -> None:
    raw = text.encode("utf-8")
    buf = np.frombuffer(bytearray(b"xx" + raw), dtype=np.uint8)
    length = collapse_whitespace_nb(buf, 2, len(raw), WHITESPACE_CODE_POINTS)
    assert buf[2 : 2 + length].tobytes().decode("utf-8") == " ".join(text.split())

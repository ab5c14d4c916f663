"""Per-document text statistics behind the heuristic quality score (Gopher, C4, FineWeb).

Every signal is a plain number computed from one document in a single pass of string
operations; the n-gram repetition statistics are delegated to :mod:`quality_ngrams`, which
works on integer word ids. Definitions (``text`` is the document, ``lines`` its
``str.splitlines()``, ``content lines`` the stripped non-empty lines):

Words.  Tokens of the lower-cased text: runs of word characters (letters, digits, ``_``,
with inner apostrophes: ``don't``) and single characters that are neither word characters
nor whitespace. ASCII punctuation tokens (``string.punctuation``) are dropped; what remains
are the *words* (as in Gopher, a symbol such as ``»`` or ``•`` counts as a word).

Gopher quality (Rae et al. 2021, appendix A):
  word_count, mean_word_length (characters), hash_word_ratio (``#`` per word),
  ellipsis_word_ratio (``...`` or ``…`` per word), bullet_line_frac (lines whose first
  non-blank character is a bullet), ellipsis_line_frac (lines ending in an ellipsis),
  alpha_word_frac (words with at least one alphabetic character), stop_word_count
  (words among "the be to of and that have with").
Gopher repetition:
  dup_line_frac / dup_line_char_frac: content lines equal to an earlier content line, by
  count (over content lines) and by characters (over ``len(text)``); blank lines are not
  lines here, otherwise every blank-line-separated document would look repetitive.
  dup_para_frac / dup_para_char_frac: the same for paragraphs (``text.strip()`` split at
  two or more newlines).
  top_{2,3,4}gram_char_frac and dup_{5..10}gram_char_frac: see :mod:`quality_ngrams`.
C4 (Raffel et al. 2020), as document-level fractions of content lines:
  terminal_punct_line_frac (ends with ``. ! ? " '`` and not with ``...``),
  javascript_line_frac, curly_brace_line_frac, short_line_frac (fewer than 3
  whitespace-separated words), and lorem_ipsum_count (occurrences in the lower-cased text).
FineWeb (Penedo et al. 2024), over ``text.split("\\n")``:
  line_punct_frac (lines ending in ``. ' " ! ?``), short_line_frac (lines of at most 30
  characters), dup_line_char_frac (characters of repeated content lines over the
  characters of the text without newlines), newline_word_ratio (newlines per word).
Ratios whose denominator is zero are 0.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from itertools import filterfalse, repeat

import numpy as np

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
BULLETS = ("•", "●", "◦", "▪", "‣", "⁃", "·", "-", "*", "–")
C4_TERMINAL = (".", "!", "?", '"', "'")
FINEWEB_TERMINAL = (".", "'", '"', "!", "?")
ELLIPSES = ("...", "…")
FINEWEB_SHORT_LINE_CHARS = 30
C4_MIN_LINE_WORDS = 3

_WORD_OR_SYMBOL = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_HAS_ALPHA = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_ASCII_PUNCT = frozenset(string.punctuation)

# Column order of the per-document rows returned by `line_and_word_signals`.
TEXT_SIGNALS = (
    "gopher_word_count",
    "gopher_mean_word_length",
    "gopher_hash_word_ratio",
    "gopher_ellipsis_word_ratio",
    "gopher_alpha_word_frac",
    "gopher_stop_word_count",
    "gopher_bullet_line_frac",
    "gopher_ellipsis_line_frac",
    "gopher_dup_line_frac",
    "gopher_dup_line_char_frac",
    "gopher_dup_para_frac",
    "gopher_dup_para_char_frac",
    "c4_terminal_punct_line_frac",
    "c4_javascript_line_frac",
    "c4_curly_brace_line_frac",
    "c4_short_line_frac",
    "c4_lorem_ipsum_count",
    "fineweb_line_punct_frac",
    "fineweb_short_line_frac",
    "fineweb_dup_line_char_frac",
    "fineweb_newline_word_ratio",
)


@dataclass(frozen=True)
class DocumentWords:
    """The words of one document as integer ids local to the document, and their lengths."""

    ids: list[int]
    lengths: list[int]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def split_words(text: str) -> list[str]:
    """The words of ``text`` as defined in the module docstring (lower-cased)."""
    return _words_of_lowered(text.lower())


def _words_of_lowered(lowered: str) -> list[str]:
    return [t for t in _WORD_OR_SYMBOL.findall(lowered) if t not in _ASCII_PUNCT]


def duplicate_count_and_chars(items: list[str]) -> tuple[int, int]:
    """How many items equal an earlier item, and their total length."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


def word_ids(words: list[str]) -> DocumentWords:
    """Map equal words to equal small integers (first occurrence order)."""
    index = {word: i for i, word in enumerate(dict.fromkeys(words))}
    return DocumentWords(ids=list(map(index.__getitem__, words)), lengths=list(map(len, words)))


def _word_signals(text: str, words: list[str], lengths: list[int]) -> list[float]:
    n_words = len(words)
    non_alpha_only = [w for w in filterfalse(str.isalpha, words) if not _HAS_ALPHA.search(w)]
    ellipses = text.count("...") + text.count("…")
    return [
        float(n_words),
        ratio(sum(lengths), n_words),
        ratio(text.count("#"), n_words),
        ratio(ellipses, n_words),
        ratio(n_words - len(non_alpha_only), n_words),
        float(sum(map(STOP_WORDS.__contains__, words))),
    ]


def count_matches(method, lines: list[str], argument) -> int:
    """``sum(method(line, argument) for line in lines)``, iterated in C."""
    return sum(map(method, lines, repeat(argument)))


def _line_shape_signals(content_lines: list[str], n_lines: int) -> list[float]:
    # A blank line neither starts with a bullet nor ends with an ellipsis, so counting over
    # the stripped non-blank lines gives the counts over all lines.
    bullets = count_matches(str.startswith, content_lines, BULLETS)
    ellipses = count_matches(str.endswith, content_lines, ELLIPSES)
    return [ratio(bullets, n_lines), ratio(ellipses, n_lines)]


def _repetition_signals(
    text: str, content_lines: list[str], dup_lines: int, dup_line_chars: int
) -> list[float]:
    paragraphs = _PARAGRAPH_BREAK.split(text.strip())
    dup_paras, dup_para_chars = duplicate_count_and_chars(paragraphs)
    n_chars = len(text)
    return [
        ratio(dup_lines, len(content_lines)),
        ratio(dup_line_chars, n_chars),
        ratio(dup_paras, len(paragraphs)),
        ratio(dup_para_chars, n_chars),
    ]


def _c4_signals(lowered: str, content_lines: list[str]) -> list[float]:
    n = len(content_lines)
    terminal = count_matches(str.endswith, content_lines, C4_TERMINAL) - count_matches(
        str.endswith, content_lines, "..."
    )
    javascript = 0
    if "javascript" in lowered:
        javascript = sum(1 for s in content_lines if "javascript" in s.lower())
    curly = sum(1 for s in content_lines if "{" in s) if "{" in lowered else 0
    short = sum(
        1 for s in content_lines if len(s.split(None, C4_MIN_LINE_WORDS - 1)) < C4_MIN_LINE_WORDS
    )
    return [
        ratio(terminal, n),
        ratio(javascript, n),
        ratio(curly, n),
        ratio(short, n),
        float(lowered.count("lorem ipsum")),
    ]


def _fineweb_signals(text: str, dup_content_line_chars: int, n_words: int) -> list[float]:
    raw_lines = text.split("\n")
    n = len(raw_lines)
    punct = count_matches(str.endswith, raw_lines, FINEWEB_TERMINAL)
    short = sum(map(FINEWEB_SHORT_LINE_CHARS.__ge__, map(len, raw_lines)))
    newlines = n - 1
    return [
        ratio(punct, n),
        ratio(short, n),
        ratio(dup_content_line_chars, len(text) - newlines),
        ratio(newlines, n_words),
    ]


def line_and_word_signals(text: str) -> tuple[list[float], DocumentWords]:
    """All signals of :data:`TEXT_SIGNALS` for one document, and its words as ids."""
    lowered = text.lower()
    words = _words_of_lowered(lowered)
    document_words = word_ids(words)
    row = _word_signals(text, words, document_words.lengths)
    lines = text.splitlines()
    content_lines = [s for s in map(str.strip, lines) if s]
    dup_lines, dup_line_chars = duplicate_count_and_chars(content_lines)
    row += _line_shape_signals(content_lines, len(lines))
    row += _repetition_signals(text, content_lines, dup_lines, dup_line_chars)
    row += _c4_signals(lowered, content_lines)
    row += _fineweb_signals(text, dup_line_chars, len(words))
    return row, document_words


def text_signal_matrix(texts: list[str]) -> tuple[np.ndarray, list[DocumentWords]]:
    """Rows of :data:`TEXT_SIGNALS` (float64, one row per text) and every text's words."""
    rows = np.zeros((len(texts), len(TEXT_SIGNALS)), dtype=np.float64)
    all_words: list[DocumentWords] = []
    for i, text in enumerate(texts):
        row, document_words = line_and_word_signals(text)
        rows[i] = row
        all_words.append(document_words)
    return rows, all_words

"""Heuristic quality signals, the soft-rule score, column/callable scorers, rank normalization."""

from __future__ import annotations

import ast
import math
import pickle
import random
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.metadata.normalize import rank_normalize, rank_normalize_reference
from streammix.metadata.quality import (
    HEURISTIC_SIGNALS,
    CallableScorer,
    ColumnScorer,
    HeuristicScorer,
    ScoreBatch,
    Scorer,
    heuristic_signals,
    make_scorer,
)
from streammix.metadata.quality_ngrams import (
    duplicate_ngram_chars_reference,
    ngram_repetition,
    ngram_repetition_reference,
    top_ngram_chars_reference,
)
from streammix.metadata.quality_rules import (
    CLOSENESS_WEIGHT,
    DEFAULT_RULES,
    QualityRule,
    combine,
    total_penalty,
)
from streammix.metadata.quality_signals import TEXT_SIGNALS, line_and_word_signals, split_words

CLEAN = (
    "The river runs through the valley and feeds the old mill with water.\n"
    "Farmers have used that water for centuries to grow wheat and barley.\n"
    "In spring the snow melts, and the current becomes strong enough to move stones.\n"
    "Visitors often walk along the banks to watch the herons that nest nearby.\n"
    "A small museum explains how the mill worked and who built it in the past.\n"
    "Children learn there how flour was made before modern machines existed.\n"
)


def signals_of(text: str) -> dict[str, float]:
    return {k: float(v[0]) for k, v in heuristic_signals([text]).items()}


# ----------------------------------------------------------------------------- signals


def test_words_drop_ascii_punctuation_but_keep_symbols() -> None:
    assert split_words("Don't stop, ok?! » 42 #tag") == ["don't", "stop", "ok", "»", "42", "tag"]


def test_gopher_quality_signals_on_a_constructed_document() -> None:
    text = "The cat sat.\n• one two\n• three 42...\n# heading with the words"
    s = signals_of(text)
    assert s["gopher_word_count"] == 13
    assert s["gopher_hash_word_ratio"] == pytest.approx(1 / 13)
    assert s["gopher_ellipsis_word_ratio"] == pytest.approx(1 / 13)
    assert s["gopher_bullet_line_frac"] == pytest.approx(2 / 4)
    assert s["gopher_ellipsis_line_frac"] == pytest.approx(1 / 4)
    assert s["gopher_alpha_word_frac"] == pytest.approx(10 / 13)
    assert s["gopher_stop_word_count"] == 3


def test_word_count_matches_the_definition() -> None:
    text = "The cat sat.\n• one two\n• three 42...\n# heading with the words"
    words = split_words(text)
    assert words == [
        "the",
        "cat",
        "sat",
        "•",
        "one",
        "two",
        "•",
        "three",
        "42",
        "heading",
        "with",
        "the",
        "words",
    ]
    assert signals_of(text)["gopher_word_count"] == len(words)
    assert signals_of(text)["gopher_mean_word_length"] == pytest.approx(
        sum(map(len, words)) / len(words)
    )


def test_duplicate_lines_and_paragraphs() -> None:
    text = "alpha beta\n\nalpha beta\n\ngamma\n\nalpha beta"
    s = signals_of(text)
    assert s["gopher_dup_line_frac"] == pytest.approx(2 / 4)  # blank lines are not lines
    assert s["gopher_dup_para_frac"] == pytest.approx(2 / 4)
    assert s["gopher_dup_line_char_frac"] == pytest.approx(20 / len(text))
    assert s["gopher_dup_para_char_frac"] == pytest.approx(20 / len(text))
    assert s["fineweb_dup_line_char_frac"] == pytest.approx(20 / (len(text) - 6))


def test_c4_and_fineweb_line_signals() -> None:
    text = "Enable JavaScript to continue.\nfunction() { return 1 }\nshort\nLorem ipsum dolor sit amet, lorem ipsum."
    s = signals_of(text)
    assert s["c4_terminal_punct_line_frac"] == pytest.approx(2 / 4)
    assert s["c4_javascript_line_frac"] == pytest.approx(1 / 4)
    assert s["c4_curly_brace_line_frac"] == pytest.approx(1 / 4)
    assert s["c4_short_line_frac"] == pytest.approx(1 / 4)
    assert s["c4_lorem_ipsum_count"] == 2
    assert s["fineweb_line_punct_frac"] == pytest.approx(2 / 4)
    assert s["fineweb_short_line_frac"] == pytest.approx(3 / 4)  # lines of at most 30 characters
    assert s["fineweb_newline_word_ratio"] == pytest.approx(3 / s["gopher_word_count"])


def test_empty_and_whitespace_documents_have_finite_signals() -> None:
    for text in ["", "   ", "\n\n\n", "..."]:
        row, _ = line_and_word_signals(text)
        assert len(row) == len(TEXT_SIGNALS)
        assert all(math.isfinite(v) for v in row)
    batch = HeuristicScorer().score(["", "\n"], [{}, {}])
    assert np.all(batch.quality < 0.05)


# ----------------------------------------------------------------------------- n-grams


def test_top_ngram_counts_the_most_frequent_first_occurring_gram() -> None:
    ids = [0, 1, 0, 1, 2, 3, 2, 3]  # (0,1) and (2,3) both occur twice; (0,1) comes first
    lengths = [1, 2, 1, 2, 3, 4, 3, 4]
    assert top_ngram_chars_reference(ids, lengths, 2) == 2 * (1 + 2 + 1)


def test_duplicate_ngram_coverage_counts_each_character_once() -> None:
    ids = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    lengths = [3] * 9
    # repeated 2-grams start at 3..7, so words 3..8 are covered: one run of 6 words
    assert duplicate_ngram_chars_reference(ids, lengths, 2) == 6 * 3 + 5
    assert duplicate_ngram_chars_reference(list(range(9)), lengths, 2) == 0


def _kernel_matches_reference(docs: list[list[int]]) -> None:
    lengths = [[(w % 7) + 1 for w in doc] for doc in docs]
    chars = [sum(ls) + len(ls) + 3 for ls in lengths]
    top, dup = ngram_repetition(docs, lengths, chars)
    for k, doc in enumerate(docs):
        ref_top, ref_dup = ngram_repetition_reference(doc, lengths[k], chars[k])
        np.testing.assert_allclose(top[k], ref_top, rtol=0, atol=1e-12)
        np.testing.assert_allclose(dup[k], ref_dup, rtol=0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=60), min_size=1, max_size=6))
def test_ngram_kernel_matches_reference(docs: list[list[int]]) -> None:
    _kernel_matches_reference(docs)


def test_ngram_kernel_on_long_repetitive_documents() -> None:
    rng = np.random.default_rng(3)
    docs = [
        list(rng.integers(0, v, size=n)) for v, n in [(2, 500), (50, 2000), (1000, 3000), (1, 40)]
    ]
    _kernel_matches_reference([[int(x) for x in d] for d in docs])


def test_repeated_text_has_high_ngram_repetition() -> None:
    s = signals_of(("buy cheap shoes online today " * 40).strip())
    assert s["gopher_top_2gram_char_frac"] > 0.15
    assert s["gopher_dup_10gram_char_frac"] > 0.9


# ----------------------------------------------------------------------------- score


def test_clean_document_scores_near_one_and_junk_scores_low() -> None:
    batch = HeuristicScorer().score([CLEAN, "buy now " * 200, "{}{}{} ### ..." * 20], [{}] * 3)
    assert batch.quality.dtype == np.float32
    assert math.exp(-CLOSENESS_WEIGHT) <= batch.quality[0] < 1.0
    assert batch.quality[1] < 0.01 and batch.quality[2] < 0.01


def test_score_is_soft_on_both_sides_of_a_threshold() -> None:
    rule = QualityRule(signal="gopher_word_count", low=50, scale=25)
    values = np.array([1000.0, 100.0, 60.0, 50.0, 49.0, 25.0, 0.0])
    scores = combine({"gopher_word_count": values}, [rule])
    assert np.all(np.diff(scores) < 0)  # more words, a higher score, inside the range too
    assert scores[3] == pytest.approx(math.exp(-CLOSENESS_WEIGHT))  # on the bound
    assert scores[5] == pytest.approx(math.exp(-1.0 - CLOSENESS_WEIGHT))  # one scale out
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


def _grid(rule: QualityRule) -> tuple[np.ndarray, float]:
    best = rule.best_value()
    bounds = [b for b in (rule.low, rule.high) if b is not None]
    lo = min(bounds) - 3 * rule.scale
    hi = max(bounds) + 3 * rule.scale
    if rule.low is None:
        lo = best
    if rule.high is None:
        hi = best if math.isfinite(best) else max(bounds) + 8 * rule.scale
    return np.linspace(max(lo, 0.0), hi, 400), best


@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=lambda r: f"{r.signal}-{r.low}-{r.high}")
def test_each_rule_is_monotonic_on_each_side_of_its_best_value(rule: QualityRule) -> None:
    values, best = _grid(rule)
    scores = np.exp(-total_penalty({rule.signal: values}, [rule]))
    below, above = values <= best, values >= best
    point_range = rule.low is None and rule.high == best  # C4's "none at all" rules
    strict = (lambda d: d >= 0) if point_range else (lambda d: d > 0)
    assert strict(np.diff(scores[below])).all()  # towards the best value: rising
    assert strict(-np.diff(scores[above])).all()  # past it: falling
    assert scores.max() == pytest.approx(1.0, abs=1e-3) or not np.isfinite(best)


def test_passing_every_rule_beats_failing_one_by_more_than_the_closeness_weight() -> None:
    rng = np.random.default_rng(0)
    clean = heuristic_signals([CLEAN])
    signals = {k: np.repeat(v, 200) for k, v in clean.items()}
    for rule in DEFAULT_RULES:  # scatter every signal inside its range
        lo = rule.low if rule.low is not None else 0.0
        hi = rule.high if rule.high is not None else lo + 10 * rule.scale
        signals[rule.signal] = rng.uniform(lo, hi, size=200)
    for rule in DEFAULT_RULES:  # make sure the ranges overlap where two rules share a signal
        values = signals[rule.signal]
        if rule.low is not None:
            values[values < rule.low] = rule.low
        if rule.high is not None:
            values[values > rule.high] = rule.high
    passing = combine(signals, DEFAULT_RULES)
    assert passing.min() >= math.exp(-CLOSENESS_WEIGHT) - 1e-6
    assert len(np.unique(passing)) == len(passing)  # no ties
    failing = {k: v.copy() for k, v in signals.items()}
    rule = next(r for r in DEFAULT_RULES if r.signal == "gopher_alpha_word_frac")
    failing[rule.signal][:] = rule.low - 1.01 * CLOSENESS_WEIGHT * rule.scale
    assert combine(failing, DEFAULT_RULES).max() < passing.min()


def _stdlib_docstrings(count: int, min_words: int = 50) -> list[str]:
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= min_words:
                    out.append(doc)
        if len(out) >= count:
            break
    return out[:count]


def test_ties_are_rare_on_real_prose_and_prose_beats_boilerplate_and_junk() -> None:
    prose = _stdlib_docstrings(400)
    assert len(prose) == 400
    # the fixture is a real test: most of this prose passes every rule (pass/fail ties)
    signals = heuristic_signals(prose)
    excess = sum(r.penalty(signals[r.signal]) for r in DEFAULT_RULES)
    assert np.mean(excess == 0.0) > 0.5
    scores = HeuristicScorer().score(prose, [{}] * len(prose)).quality
    _, counts = np.unique(scores, return_counts=True)
    assert counts.max() / len(prose) < 0.05
    rnd = random.Random(16)
    menu = ["Home", "Contact us", "Privacy policy", "Login", "Sign up", "Terms of use", "Cart"]
    boilerplate = [
        "\n".join(" | ".join(rnd.sample(menu, 4)) for _ in range(rnd.randint(20, 60)))
        for _ in range(20)
    ]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#$%&*@!"
    junk = [
        " ".join(
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 10)))
            for _ in range(rnd.randint(100, 400))
        )
        for _ in range(20)
    ]
    bad = HeuristicScorer().score(boilerplate + junk, [{}] * 40).quality
    assert np.median(scores) > np.quantile(bad, 0.9)
    assert np.mean(scores > np.median(bad)) > 0.9


def test_score_is_exp_of_summed_penalties() -> None:
    signals = heuristic_signals([CLEAN, "buy now " * 200, "short text"])
    penalty = total_penalty(signals, DEFAULT_RULES)
    np.testing.assert_allclose(combine(signals, DEFAULT_RULES), np.exp(-penalty), rtol=1e-6)
    assert np.all((combine(signals, DEFAULT_RULES) >= 0) & (combine(signals, DEFAULT_RULES) <= 1))


def test_two_sided_rule_and_rule_validation() -> None:
    rule = QualityRule(signal="x", low=3, high=10, scale=2)
    np.testing.assert_allclose(rule.penalty(np.array([1.0, 5.0, 14.0])), [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="low or a high"):
        QualityRule(signal="x", scale=1)
    with pytest.raises(ValueError, match="scale"):
        QualityRule(signal="x", low=1, scale=0)
    with pytest.raises(ValueError, match="low 5 > high 1"):
        QualityRule(signal="x", low=5, high=1, scale=1)
    with pytest.raises(KeyError, match="unknown signal"):
        total_penalty({}, [rule])
    with pytest.raises(ValueError, match="at least one"):
        total_penalty({}, [])


def test_heuristic_scorer_signals_and_options() -> None:
    scorer = HeuristicScorer()
    assert isinstance(scorer, Scorer) and scorer.name == "heuristic"
    batch = scorer.score([CLEAN, "x"], [{}, {}])
    assert set(batch.signals) == {"q_" + name for name in HEURISTIC_SIGNALS}
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in batch.signals.values())
    assert HeuristicScorer(keep_signals=False).score([CLEAN], [{}]).signals == {}
    with pytest.raises(ValueError, match="unknown signals"):
        HeuristicScorer(rules=(QualityRule(signal="nope", high=1, scale=1),))
    with pytest.raises(ValueError, match="2 texts but 1 records"):
        scorer.score([CLEAN, CLEAN], [{}])
    with pytest.raises(TypeError, match="text 1 is bytes"):
        scorer.score([CLEAN, b"bytes"], [{}, {}])
    assert pickle.loads(pickle.dumps(scorer)) == scorer


def test_heuristic_scores_do_not_depend_on_batching() -> None:
    texts = [CLEAN, "buy now " * 50, "a\nb\nc", CLEAN * 3, "Hello there, the world."]
    whole = HeuristicScorer().score(texts, [{}] * len(texts))
    for i, text in enumerate(texts):
        single = HeuristicScorer().score([text], [{}])
        assert single.quality[0] == whole.quality[i]
        for key, column in single.signals.items():
            assert column[0] == whole.signals[key][i]


# ----------------------------------------------------------------------------- column


def test_column_scorer_reads_numbers() -> None:
    batch = ColumnScorer(field="score").score(
        ["a", "b", "c"], [{"score": 1}, {"score": 0.5}, {"score": np.float32(-2)}]
    )
    np.testing.assert_array_equal(batch.quality, np.array([1.0, 0.5, -2.0], dtype=np.float32))
    assert batch.signals == {}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, "'score' is missing in record 0"),
        ({"score": "high"}, "not a number"),
        ({"score": None}, "not a number"),
        ({"score": True}, "not a number"),
        ({"score": float("nan")}, "NaN"),
    ],
)
def test_column_scorer_rejects_bad_values(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnScorer(field="score").score(["a"], [record])


def test_column_scorer_needs_a_field() -> None:
    with pytest.raises(ValueError, match="non-empty field"):
        ColumnScorer(field="")


# ----------------------------------------------------------------------------- callable


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_scorers.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from streammix.metadata.quality import ScoreBatch

            def length(texts):
                return [float(len(t)) for t in texts]

            def with_signals(texts):
                n = np.array([len(t) for t in texts])
                return ScoreBatch(quality=n, signals={"chars": n})

            def too_short(texts):
                return [1.0]

            def nan(texts):
                return [float("nan")] * len(texts)

            def words(texts):
                return ["good"] * len(texts)

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_scorers"


def test_callable_scorer(user_module: str) -> None:
    scorer = make_scorer(f"callable:{user_module}:length")
    assert isinstance(scorer, CallableScorer)
    batch = scorer.score(["ab", "abcd"], [{}, {}])
    np.testing.assert_array_equal(batch.quality, [2.0, 4.0])
    extra = CallableScorer(f"{user_module}:with_signals").score(["abc"], [{}])
    assert extra.signals["chars"].dtype == np.float32 and extra.signals["chars"][0] == 3
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(clone.score(["ab"], [{}]).quality, [2.0])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must look like"),
        (":fn", "must look like"),
        ("a:b:c", "must look like"),
        ("module_that_does_not_exist_xyz:f", "cannot import module"),
        ("my_scorers:missing", "has no attribute 'missing'"),
        ("my_scorers:NOT_CALLABLE", "not callable"),
    ],
)
def test_callable_spec_errors(user_module: str, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallableScorer(spec)


@pytest.mark.parametrize(
    ("function", "message"),
    [("too_short", r"shape \(1,\) for 2 texts"), ("nan", "NaN"), ("words", "non-numeric")],
)
def test_callable_result_errors(user_module: str, function: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallableScorer(f"{user_module}:{function}").score(["a", "b"], [{}, {}])


# ----------------------------------------------------------------------------- make_scorer


def test_make_scorer_specs() -> None:
    assert isinstance(make_scorer("heuristic"), HeuristicScorer)
    assert make_scorer("heuristic", keep_signals=False).keep_signals is False
    column = make_scorer("column:label_score")
    assert isinstance(column, ColumnScorer) and column.field == "label_score"
    for bad in ["", "heuristic:x", "column:", "callable:", "hf:", "fasttext:model.bin"]:
        with pytest.raises(ValueError, match="unknown scorer spec"):
            make_scorer(bad)


def test_score_batch_is_frozen() -> None:
    batch = ScoreBatch(quality=np.zeros(1, dtype=np.float32), signals={})
    with pytest.raises(AttributeError):
        batch.quality = np.ones(1)  # type: ignore[misc]


# ----------------------------------------------------------------------------- normalize


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([-1.0, 0.0, 0.5, 2.0, 3.0, float("inf")]) | st.floats(-5, 5),
        min_size=1,
        max_size=40,
    )
)
def test_rank_normalize_matches_reference(values: list[float]) -> None:
    result = rank_normalize(np.array(values))
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, rank_normalize_reference(values), atol=1e-7)
    assert result.min() >= 0.0 and result.max() <= 1.0


def test_rank_normalize_ties_single_and_order() -> None:
    np.testing.assert_allclose(rank_normalize(np.array([3, 1, 2, 2])), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_array_equal(rank_normalize(np.array([7.0])), [0.5])
    np.testing.assert_array_equal(rank_normalize(np.array([4, 4, 4])), [0.5, 0.5, 0.5])
    assert rank_normalize(np.array([])).shape == (0,)
    values = np.random.default_rng(0).normal(size=100)
    perm = np.random.default_rng(1).permutation(100)
    np.testing.assert_array_equal(rank_normalize(values)[perm], rank_normalize(values[perm]))


def test_rank_normalize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_normalize(np.array([1.0, float("nan")]))
    with pytest.raises(ValueError, match="1-D"):
        rank_normalize(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="numbers"):
        rank_normalize(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="numbers"):
        rank_normalize(np.array([True, False]))

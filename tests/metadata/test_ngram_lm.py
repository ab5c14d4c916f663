"""Kneser-Ney n-gram model: brute-force agreement, normalization, scoring, the scorer."""

from __future__ import annotations

import math
import pickle
import random
from collections import defaultdict

import numpy as np
import pytest

from streammix.metadata.ngram_lm import KneserNeyLM, lm_tokens, train_kneser_ney
from streammix.metadata.quality import NgramScorer, make_scorer

CORPUS = [
    "the cat sat on the mat .",
    "the dog sat on the log .",
    "a cat and a dog met on a mat , and the cat sat .",
    "the log was on the mat ; the dog was not .",
    "dogs and cats , cats and dogs .",
]


def _reference_model(docs: list[str], order: int):
    """Interpolated Kneser-Ney from tuples and dictionaries (the module docstring, slowly)."""
    tokens = [lm_tokens(d) for d in docs]
    counts = defaultdict(int)
    for t in tokens:
        for w in t:
            counts[w] += 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = ["<unk>", "</s>"] + words
    V = len(vocab)
    bos = V
    ids = {w: i for i, w in enumerate(vocab)}
    top = defaultdict(int)
    for t in tokens:
        seq = [bos] * (order - 1) + [ids[w] for w in t] + [1]
        for i in range(order - 1, len(seq)):
            top[tuple(seq[i - order + 1 : i + 1])] += 1
    a = {order: dict(top)}
    for k in range(order - 1, 0, -1):
        cont = defaultdict(int)
        for g in a[k + 1]:
            cont[g[1:]] += 1
        a[k] = dict(cont)
    discount = {}
    for k, table in a.items():
        n1 = sum(1 for c in table.values() if c == 1)
        n2 = sum(1 for c in table.values() if c == 2)
        d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        discount[k] = min(max(d, 0.05), 0.95)

    def prob(history: tuple[int, ...], w: int) -> float:
        p = 1.0 / V
        for k in range(1, order + 1):
            h = history[len(history) - (k - 1) :] if k > 1 else ()
            following = {g[-1]: c for g, c in a[k].items() if g[:-1] == h}
            total = sum(following.values())
            if total == 0:
                continue
            d = discount[k]
            p = max(following.get(w, 0) - d, 0) / total + d * len(following) / total * p
        return p

    return vocab, prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_a_brute_force_count_based_reference_and_sums_to_one(order: int) -> None:
    lm = train_kneser_ney(CORPUS, order=order)
    vocab, prob = _reference_model(CORPUS, order)
    assert list(lm.vocabulary) == vocab
    V = lm.vocab_size
    rnd = random.Random(order)
    histories = {(V,) * (order - 1), (0,) * (order - 1)}
    for doc in CORPUS:  # histories that occur, plus random (mostly unseen) ones
        seq = [V] * (order - 1) + list(lm.encode(doc)) + [1]
        histories.update(tuple(seq[i - order + 1 : i]) for i in range(order - 1, len(seq)))
    histories.update(tuple(rnd.randrange(V) for _ in range(order - 1)) for _ in range(10))
    for history in sorted(histories):
        windows = np.array([list(history) + [w] for w in range(V)], dtype=np.int64)
        probs = lm.window_probs(windows)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        expected = [prob(history, w) for w in range(V)]
        np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=0)


def test_mean_log_prob_is_the_mean_over_tokens_and_end_of_document() -> None:
    lm = train_kneser_ney(CORPUS, order=3)
    _, prob = _reference_model(CORPUS, 3)
    text = "the cat sat on a log , unknownword ."
    ids = [lm.vocab_size] * 2 + list(lm.encode(text)) + [1]
    logs = [math.log(prob(tuple(ids[i - 2 : i]), ids[i])) for i in range(2, len(ids))]
    scores = lm.mean_log_prob([text, "", text])
    assert scores[0] == pytest.approx(sum(logs) / len(logs), rel=1e-12)
    assert scores[2] == scores[0] and np.isfinite(scores[1])
    assert lm.perplexity([text])[0] == pytest.approx(math.exp(-scores[0]))


def _prose() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _pathologies(rnd: random.Random) -> tuple[list[str], list[str]]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#$%&*"
    gibberish = [
        " ".join(
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 9))) for _ in range(150)
        )
        for _ in range(20)
    ]
    lines = ["Home", "Contact us", "Privacy policy", "Login", "Sign up", "Terms of use", "Cart"]
    boilerplate = [
        "\n".join(rnd.choice(lines) + " | " + rnd.choice(lines) for _ in range(60))
        for _ in range(20)
    ]
    return gibberish, boilerplate


def test_gibberish_and_boilerplate_score_worse_than_prose_from_the_reference(tmp_path) -> None:
    prose = _prose()
    train, held_out = prose[::2], prose[1::2]
    lm = train_kneser_ney(train, order=3)
    gibberish, boilerplate = _pathologies(random.Random(0))
    good = lm.mean_log_prob(held_out)
    for bad in (gibberish, boilerplate):
        assert lm.mean_log_prob(bad).max() < np.quantile(good, 0.1)
    path = lm.save(tmp_path / "lm.npz")
    scorer = make_scorer(f"ngram-model:{path}")
    texts = held_out + gibberish + boilerplate
    batch = scorer.score(texts, [{}] * len(texts))
    quality = batch.quality
    n = len(held_out)
    assert quality[n:].max() < np.quantile(quality[:n], 0.1)
    assert batch.signals["q_lm_log_prob"].shape == (len(texts),)
    assert "q_heuristic" in batch.signals and "q_gopher_word_count" in batch.signals
    values, counts = np.unique(quality, return_counts=True)
    assert counts.max() / len(texts) < 0.2  # a continuous score: almost no ties
    again = pickle.loads(pickle.dumps(scorer)).score(texts, [{}] * len(texts))
    assert np.array_equal(again.quality, quality)


def test_save_and_load_round_trip(tmp_path) -> None:
    lm = train_kneser_ney(CORPUS, order=3, min_count=2)
    assert "mat" in lm.vocabulary and "met" not in lm.vocabulary
    loaded = KneserNeyLM.load(lm.save(tmp_path / "m.npz"))
    texts = CORPUS + ["met a cat"]
    assert loaded.vocabulary == lm.vocabulary and loaded.discounts == lm.discounts
    assert np.array_equal(loaded.mean_log_prob(texts), lm.mean_log_prob(texts))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 0}, "order"),
        ({"order": 7}, "order"),
        ({"min_count": 0}, "min_count"),
        ({"max_vocab": 2.0}, "max_vocab"),
    ],
)
def test_invalid_training_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        train_kneser_ney(CORPUS, **kwargs)


def test_invalid_inputs(tmp_path) -> None:
    with pytest.raises(ValueError, match="no documents"):
        train_kneser_ney([])
    with pytest.raises(ValueError, match="62-bit"):
        train_kneser_ney([" ".join(f"w{i}" for i in range(2000))], order=6)
    with pytest.raises(TypeError, match="str"):
        lm_tokens(b"bytes")
    lm = train_kneser_ney(CORPUS, order=2)
    with pytest.raises(ValueError, match="shape"):
        lm.window_probs(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="never predicted"):
        lm.window_probs(np.array([[0, lm.vocab_size]]))
    with pytest.raises(ValueError, match="token ids"):
        lm.window_probs(np.array([[0, lm.vocab_size + 1]]))
    with pytest.raises(ValueError, match="reference set"):
        make_scorer("ngram:web")
    with pytest.raises(ValueError, match="cannot load"):
        NgramScorer(str(tmp_path / "missing.npz"))

"""The local demo corpus: sources, splitting, truncation, determinism, errors, noise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.demo.local_corpus import (
    DOMAINS,
    CorpusSources,
    EmptyDomainError,
    collect_local_corpus,
    iter_code_documents,
    iter_package_documents,
    noise_documents,
    read_jsonl_texts,
    split_into_sections,
    summarize_corpus,
    truncate_utf8,
)

REPO = Path(__file__).resolve().parents[2]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _fake_stdlib(root: Path) -> Path:
    stdlib = root / "lib"
    for rel in [
        "b.py",
        "a.py",
        "pkg/mod.py",
        "pkg/data.txt",
        "test/test_x.py",
        "pkg/tests/t.py",
        "site-packages/third.py",
        "idlelib/idle.py",
        "lib2to3/fixer.py",
        "__pycache__/a.py",
        "pydoc_data/topics.py",
        "empty.py",
    ]:
        path = stdlib / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if rel == "empty.py" else f"# {rel}\nx = 1\n", encoding="utf-8")
    (stdlib / "latin.py").write_bytes(b"s = '\xe9t\xe9'\n")
    return stdlib


def _fake_distribution(site: Path, folder: str, name: str, body: str) -> None:
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n{body}", encoding="utf-8"
    )


def _fake_sources(root: Path) -> CorpusSources:
    site = root / "site"
    _fake_distribution(site, "zeta-1.0.dist-info", "Zeta", "Zeta readme\n")
    _fake_distribution(site, "alpha_pkg-1.0.dist-info", "alpha_pkg", "Alpha readme\n")
    _fake_distribution(site, "Alpha.Pkg-2.0.dist-info", "Alpha.Pkg", "Alpha readme, other copy\n")
    _fake_distribution(site, "empty-1.0.dist-info", "empty", "   \n")
    topics = {
        "zz": "Short topic.",
        "aa": "\n\n".join(f"paragraph {i} " + "w" * 300 for i in range(20)),
    }
    return CorpusSources(
        stdlib_dir=_fake_stdlib(root), doc_topics=topics, distribution_paths=[site]
    )


def test_code_documents_skip_folders_and_replace_bad_bytes(tmp_path: Path) -> None:
    docs = list(iter_code_documents(_fake_stdlib(tmp_path)))
    assert [d.id for d in docs] == ["a.py", "b.py", "latin.py", "pkg/mod.py"]
    assert "\ufffd" in docs[2].text


def test_package_documents_dedup_sorted_and_skip_empty(tmp_path: Path) -> None:
    sources = _fake_sources(tmp_path)
    docs = list(iter_package_documents(sources.distribution_paths))
    assert [d.id for d in docs] == ["alpha-pkg", "zeta"]
    assert docs[0].text == "Alpha readme\n"  # the smaller copy, independent of path order


def test_collect_writes_each_domain_deterministically(tmp_path: Path) -> None:
    sources = _fake_sources(tmp_path)
    first = collect_local_corpus(tmp_path / "one", sources=sources)
    second = collect_local_corpus(tmp_path / "two", sources=sources)
    assert list(first) == list(DOMAINS)
    for domain in DOMAINS:
        assert first[domain] == tmp_path / "one" / f"{domain}.jsonl"
        assert first[domain].read_bytes() == second[domain].read_bytes()
        records = _records(first[domain])
        assert records and all(set(r) == {"text", "id"} for r in records)
        assert len({r["id"] for r in records}) == len(records)
    docs_ids = [r["id"] for r in _records(first["docs"])]
    assert docs_ids[0] == "aa#0" and docs_ids[-1] == "zz#0" and len(docs_ids) > 3


def test_max_docs_and_max_bytes(tmp_path: Path) -> None:
    sources = _fake_sources(tmp_path)
    paths = collect_local_corpus(
        tmp_path / "out", sources=sources, max_docs_per_domain=1, max_doc_bytes=12
    )
    for path in paths.values():
        records = _records(path)
        assert len(records) == 1
        assert len(records[0]["text"].encode("utf-8")) <= 12
    assert _records(paths["code"])[0]["text"] == "# a.py\n"  # cut at the line break


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    sources = _fake_sources(tmp_path)
    missing = CorpusSources(
        stdlib_dir=tmp_path / "nowhere",
        doc_topics=sources.doc_topics,
        distribution_paths=sources.distribution_paths,
    )
    with pytest.raises(EmptyDomainError, match="'code'.*nowhere"):
        collect_local_corpus(tmp_path / "out", sources=missing)
    no_topics = CorpusSources(
        stdlib_dir=sources.stdlib_dir, doc_topics={}, distribution_paths=sources.distribution_paths
    )
    with pytest.raises(EmptyDomainError, match="'docs'.*pydoc_data"):
        collect_local_corpus(tmp_path / "out2", sources=no_topics)
    assert not (tmp_path / "out2" / "docs.jsonl").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_docs_per_domain": 0},
        {"max_docs_per_domain": 1.5},
        {"max_doc_bytes": 0},
        {"max_doc_bytes": True},
    ],
)
def test_bad_limits_are_rejected(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        collect_local_corpus(tmp_path, **kwargs)


def test_this_machine_corpus(tmp_path: Path) -> None:
    paths = collect_local_corpus(tmp_path, max_docs_per_domain=40)
    summary = summarize_corpus(paths)
    assert {d: s.num_docs for d, s in summary.items()} == {
        "code": 40,
        "docs": 40,
        "packages": summary["packages"].num_docs,
    }
    assert 1 <= summary["packages"].num_docs <= 40
    texts = read_jsonl_texts(paths["code"])
    assert all(t.strip() for t in texts)


def test_this_machine_docs_domain_size() -> None:
    topics = CorpusSources.this_machine().doc_topics
    assert topics, "pydoc_data.topics is missing on this machine"
    sections = [s for t in topics.values() for s in split_into_sections(t)]
    assert 200 <= len(sections) <= 5000
    assert max(len(s) for s in sections) <= 4000


@settings(max_examples=200, deadline=None)
@given(
    paragraphs=st.lists(st.text(alphabet="ab \n", min_size=0, max_size=900), max_size=30),
    min_chars=st.integers(1, 300),
    extra=st.integers(0, 700),
)
def test_split_keeps_all_text_and_respects_max(
    paragraphs: list[str], min_chars: int, extra: int
) -> None:
    text = "\n\n".join(paragraphs)
    max_chars = min_chars + extra
    sections = split_into_sections(text, min_chars=min_chars, max_chars=max_chars)
    assert all(0 < len(s) <= max_chars for s in sections)
    squash = re.compile(r"\s+")
    assert squash.sub("", "".join(sections)) == squash.sub("", text)


def test_split_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        split_into_sections("x", min_chars=10, max_chars=5)


@given(st.text(max_size=200), st.integers(1, 300))
def test_truncate_utf8_is_a_valid_prefix(text: str, max_bytes: int) -> None:
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    cut = truncate_utf8(text, max_bytes)
    assert text.startswith(cut)
    assert len(cut.encode("utf-8")) <= max_bytes
    if len(text.encode("utf-8")) <= max_bytes:
        assert cut == text


def test_noise_documents_are_seeded_and_use_the_vocabulary() -> None:
    vocab = ["alpha", "beta", "gamma", "delta"]
    docs = noise_documents(5, vocab_words=vocab, seed=3, words_per_doc=50)
    assert docs == noise_documents(5, vocab_words=vocab, seed=3, words_per_doc=50)
    assert docs != noise_documents(5, vocab_words=vocab, seed=4, words_per_doc=50)
    assert len(docs) == 5 and all(len(d.split()) == 50 for d in docs)
    assert {w for d in docs for w in d.split()} <= set(vocab)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"num_docs": -1}, ValueError),
        ({"seed": -2}, ValueError),
        ({"words_per_doc": 0}, ValueError),
        ({"vocab_words": []}, ValueError),
        ({"vocab_words": ["a", ""]}, ValueError),
        ({"vocab_words": "abc"}, TypeError),
    ],
)
def test_noise_documents_bad_input(kwargs: dict, error: type) -> None:
    arguments = {"num_docs": 2, "vocab_words": ["a", "b"], "seed": 0} | kwargs
    num_docs = arguments.pop("num_docs")
    with pytest.raises(error):
        noise_documents(num_docs, **arguments)


def test_build_demo_corpus_script(tmp_path: Path) -> None:
    script = REPO / "tools" / "build_demo_corpus.py"
    help_run = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True
    )
    assert help_run.returncode == 0 and "--max-docs-per-domain" in help_run.stdout
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--max-docs-per-domain", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    for domain in DOMAINS:
        assert domain in run.stdout
        assert len(_records(tmp_path / f"{domain}.jsonl")) == 3
    bad = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--max-docs-per-domain", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "max_docs_per_domain" in bad.stderr

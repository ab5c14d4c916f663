"""A multi-domain text corpus built only from files already on this machine.

The demo, the training tests and the mixing benchmark need a few *domains* of real text
without downloading anything. Three sources exist on every Python installation:

``code``
    The standard library's ``*.py`` files under ``sysconfig.get_paths()["stdlib"]``, one file
    per document, walked in sorted relative-path order without following symlinks. Folders
    named ``site-packages``, ``dist-packages``, ``test``, ``tests``, ``idlelib``, ``lib2to3``
    and ``__pycache__`` are skipped, and so is ``pydoc_data`` (its ``topics.py`` is the
    ``docs`` domain's text, which must not leak into ``code``). Files are decoded as UTF-8 with ``errors="replace"``:
    a rare undecodable byte becomes U+FFFD instead of dropping the file.
``docs``
    The reference topics shipped in ``pydoc_data.topics`` (topic -> text), in sorted topic
    order, each split into documents of about 1-4 KB by :func:`split_into_sections`.
``packages``
    The long descriptions (the README body of ``METADATA``) of the installed distributions,
    deduplicated by normalized name and sorted by it; empty descriptions are skipped.

Every document is at most ``max_doc_bytes`` UTF-8 bytes: a longer one is cut at the last
line break before the limit (at the limit itself if there is none). ``max_docs_per_domain``
keeps the first N documents of the deterministic order. Text is normalized to valid UTF-8
(lone surrogates become U+FFFD) so that the jsonl files always re-encode cleanly.

Each domain is written to ``OUT/<domain>.jsonl`` with one ``{"text", "id"}`` object per line.
A domain whose source yields no document is an :class:`EmptyDomainError`, never an empty file.

:func:`noise_documents` makes documents of uniformly random words: a "noise" domain whose
loss cannot go below the entropy of the word distribution, which online mixing should learn
to down-weight.
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

DOMAINS = ("code", "docs", "packages")
SKIPPED_STDLIB_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "__pycache__",
        "pydoc_data",
    }
)
SECTION_MIN_CHARS = 1000
SECTION_MAX_CHARS = 4000


class EmptyDomainError(RuntimeError):
    """A domain's source exists nowhere on this machine or yields no documents."""


@dataclass(frozen=True, kw_only=True)
class CorpusSources:
    """Where the three domains come from; :meth:`this_machine` is the default."""

    stdlib_dir: Path
    doc_topics: Mapping[str, str] = field(default_factory=dict)
    distribution_paths: Sequence[Path] | None = None  # None: sys.path, as importlib does

    @classmethod
    def this_machine(cls) -> CorpusSources:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip pydoc_data
            topics = {}
        return cls(stdlib_dir=Path(sysconfig.get_paths()["stdlib"]), doc_topics=dict(topics))


@dataclass(frozen=True, kw_only=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True, kw_only=True)
class DomainSummary:
    num_docs: int
    num_bytes: int  # UTF-8 bytes of the texts (not of the jsonl file)


def _valid_utf8(text: str) -> str:
    return text.encode("utf-8", errors="replace").decode("utf-8")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, at the last line break if any."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    head = encoded[:max_bytes]
    cut = head.rfind(b"\n")
    if cut > 0:
        head = head[: cut + 1]
    return head.decode("utf-8", errors="ignore")


def iter_code_documents(stdlib_dir: Path) -> Iterator[Document]:
    """Standard-library ``*.py`` files in sorted relative-path order."""
    if not stdlib_dir.is_dir():
        return
    for root, dirs, files in os.walk(stdlib_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_STDLIB_DIRS)
        for name in sorted(files):
            path = Path(root, name)
            if not name.endswith(".py") or path.is_symlink() or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield Document(id=path.relative_to(stdlib_dir).as_posix(), text=text)


def split_into_sections(
    text: str, *, min_chars: int = SECTION_MIN_CHARS, max_chars: int = SECTION_MAX_CHARS
) -> list[str]:
    """Group consecutive paragraphs (blank-line separated) into sections of ~min..max chars.

    A section is the shortest run of consecutive paragraphs that reaches ``min_chars``,
    except that a paragraph which would push it past ``max_chars`` starts the next section
    instead (so no section exceeds ``max_chars``). A single paragraph longer than
    ``max_chars`` is first split at line breaks (hard at ``max_chars`` for one over-long
    line). A text shorter than ``min_chars`` stays whole. Joining the sections with blank
    lines gives back the paragraphs in order.
    """
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars <= max_chars, got {min_chars}, {max_chars}")
    pieces: list[str] = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip()):
        pieces.extend(_split_long(paragraph, max_chars))
    sections: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        if current and (size >= min_chars or size + 2 + len(piece) > max_chars):
            sections.append("\n\n".join(current))
            current, size = [], 0
        size += len(piece) + (2 if current else 0)
        current.append(piece)
    if current:
        sections.append("\n\n".join(current))
    return [s for s in sections if s.strip()]


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    chunks: list[str] = []
    current = ""
    for line in paragraph.split("\n"):
        while len(line) > max_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if current and len(current) + 1 + len(line) > max_chars:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def iter_docs_documents(topics: Mapping[str, str]) -> Iterator[Document]:
    """pydoc reference topics in sorted order, split into ~1-4 KB sections."""
    for topic in sorted(topics):
        for index, section in enumerate(split_into_sections(topics[topic])):
            yield Document(id=f"{topic}#{index}", text=section)


def _normalized_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _long_description(dist: importlib_metadata.Distribution) -> str:
    meta = dist.metadata
    body = meta.get_payload() if hasattr(meta, "get_payload") else None
    if not body or not str(body).strip():
        body = meta.get("Description") or ""
    return str(body)


def iter_package_documents(paths: Sequence[Path] | None) -> Iterator[Document]:
    """Long descriptions of installed distributions, one per normalized name, sorted."""
    if paths is None:
        dists = importlib_metadata.distributions()
    else:
        dists = importlib_metadata.distributions(path=[str(p) for p in paths])
    by_name: dict[str, list[str]] = {}
    for dist in dists:
        name = dist.metadata.get("Name")
        if not name:
            continue
        text = _long_description(dist)
        if text.strip():
            by_name.setdefault(_normalized_name(name), []).append(text)
    for name in sorted(by_name):
        # Several copies of one distribution on the path: the choice must not depend on
        # the order of sys.path entries, so take the smallest text.
        yield Document(id=name, text=min(by_name[name]))


def _domain_documents(domain: str, sources: CorpusSources) -> Iterator[Document]:
    if domain == "code":
        return iter_code_documents(sources.stdlib_dir)
    if domain == "docs":
        return iter_docs_documents(sources.doc_topics)
    return iter_package_documents(sources.distribution_paths)


_SOURCE_DESCRIPTION = {
    "code": "standard-library *.py files under {stdlib}",
    "docs": "pydoc_data.topics (the pydoc reference topics)",
    "packages": "long descriptions of installed distributions (importlib.metadata)",
}


def write_domain(
    documents: Iterator[Document], path: Path, *, max_docs: int | None, max_doc_bytes: int
) -> int:
    """Write documents as jsonl (atomically, via a temporary file); return how many."""
    tmp_path = path.with_name(path.name + ".tmp")
    count = 0
    with tmp_path.open("w", encoding="utf-8") as out:
        for doc in documents:
            if max_docs is not None and count >= max_docs:
                break
            text = truncate_utf8(_valid_utf8(doc.text), max_doc_bytes)
            out.write(json.dumps({"text": text, "id": doc.id}, ensure_ascii=False) + "\n")
            count += 1
    if count == 0:
        tmp_path.unlink()
    else:
        os.replace(tmp_path, path)
    return count


def collect_local_corpus(
    out_dir: Path,
    *,
    max_docs_per_domain: int | None = None,
    max_doc_bytes: int = 100_000,
    sources: CorpusSources | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/<domain>.jsonl`` for the code, docs and packages domains.

    Returns ``{domain: path}`` in that order. Raises :class:`EmptyDomainError` if a
    domain's source yields no document on this machine.
    """
    if max_docs_per_domain is not None and (
        isinstance(max_docs_per_domain, bool)
        or not isinstance(max_docs_per_domain, int)
        or max_docs_per_domain < 1
    ):
        raise ValueError(
            f"max_docs_per_domain must be None or an int >= 1, got {max_docs_per_domain!r}"
        )
    if isinstance(max_doc_bytes, bool) or not isinstance(max_doc_bytes, int) or max_doc_bytes < 1:
        raise ValueError(f"max_doc_bytes must be an int >= 1, got {max_doc_bytes!r}")
    sources = sources or CorpusSources.this_machine()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for domain in DOMAINS:
        path = out_dir / f"{domain}.jsonl"
        count = write_domain(
            _domain_documents(domain, sources),
            path,
            max_docs=max_docs_per_domain,
            max_doc_bytes=max_doc_bytes,
        )
        if count == 0:
            where = _SOURCE_DESCRIPTION[domain].format(stdlib=sources.stdlib_dir)
            raise EmptyDomainError(f"domain {domain!r} has no documents on this machine: {where}")
        paths[domain] = path
    return paths


def read_jsonl_texts(path: Path) -> list[str]:
    """The ``text`` fields of a jsonl file written by :func:`collect_local_corpus`."""
    with Path(path).open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


def summarize_corpus(paths: Mapping[str, Path]) -> dict[str, DomainSummary]:
    """Document count and UTF-8 text bytes of each domain file."""
    summary = {}
    for domain, path in paths.items():
        texts = read_jsonl_texts(path)
        summary[domain] = DomainSummary(
            num_docs=len(texts), num_bytes=sum(len(t.encode("utf-8")) for t in texts)
        )
    return summary


def noise_documents(
    num_docs: int, *, vocab_words: Sequence[str], seed: int, words_per_doc: int = 200
) -> list[str]:
    """``num_docs`` documents of ``words_per_doc`` words drawn uniformly from ``vocab_words``.

    Seeded by ``numpy.random.Generator(PCG64(seed))`` created here; the same arguments
    always give the same documents.
    """
    for name, value in (("num_docs", num_docs), ("words_per_doc", words_per_doc), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if words_per_doc == 0:
        raise ValueError("words_per_doc must be >= 1")
    if isinstance(vocab_words, str):
        raise TypeError("vocab_words must be a sequence of words, not one string")
    words = list(vocab_words)
    if not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError("vocab_words must be a non-empty sequence of non-empty strings")
    rng = np.random.Generator(np.random.PCG64(seed))
    choices = rng.integers(0, len(words), size=(num_docs, words_per_doc))
    return [" ".join(words[i] for i in row) for row in choices]


def junk_documents(texts: Sequence[str], num_docs: int, *, seed: int) -> list[str]:
    """``num_docs`` documents of shuffled characters: junk with real text's character mix.

    Document ``i`` is ``texts[i % len(texts)]`` with its characters permuted by
    ``numpy.random.Generator(PCG64(seed))`` created here (one generator for the whole call),
    so the junk has the same length and character frequencies as the real text and no
    words, lines or syntax: a model can learn its character frequencies in a few steps and
    nothing after that. The same arguments always give the same documents.
    """
    if isinstance(num_docs, bool) or not isinstance(num_docs, int | np.integer) or num_docs < 0:
        raise ValueError(f"num_docs must be a non-negative int, got {num_docs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    sources = [t for t in texts if isinstance(t, str) and t]
    if num_docs and not sources:
        raise ValueError("texts must hold at least one non-empty string")
    rng = np.random.Generator(np.random.PCG64(seed))
    junk = []
    for i in range(num_docs):
        chars = np.array(list(sources[i % len(sources)]))
        junk.append("".join(chars[rng.permutation(chars.size)]))
    return junk

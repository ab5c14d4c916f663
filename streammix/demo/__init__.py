"""Building blocks for the local demo: a corpus from files on this machine, a locally
trained byte-level BPE tokenizer (``streammix.demo.tokenizer``, needs ``tokenizers`` and
``transformers``), noise and junk documents. Nothing here downloads anything.

Importing this package imports only the standard library and numpy.
"""

from streammix.demo.local_corpus import (
    DOMAINS,
    CorpusSources,
    EmptyDomainError,
    collect_local_corpus,
    junk_documents,
    noise_documents,
    read_jsonl_texts,
    summarize_corpus,
)

__all__ = [
    "DOMAINS",
    "CorpusSources",
    "EmptyDomainError",
    "collect_local_corpus",
    "junk_documents",
    "noise_documents",
    "read_jsonl_texts",
    "summarize_corpus",
]

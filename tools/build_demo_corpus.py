"""Write the local demo corpus (code, docs, packages domains) as jsonl files.

Usage: python3 tools/build_demo_corpus.py OUT_DIR [--max-docs-per-domain N]

Everything comes from files already on this machine (see streammix.demo.local_corpus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streammix.demo.local_corpus import EmptyDomainError, collect_local_corpus, summarize_corpus


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write the local demo corpus: OUT_DIR/{code,docs,packages}.jsonl, "
        "built only from files on this machine (stdlib sources, pydoc topics, package READMEs)."
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the jsonl files")
    parser.add_argument(
        "--max-docs-per-domain",
        type=int,
        default=None,
        metavar="N",
        help="keep only the first N documents of each domain (default: all)",
    )
    parser.add_argument(
        "--max-doc-bytes",
        type=int,
        default=100_000,
        metavar="B",
        help="cut longer documents at a line break before B UTF-8 bytes (default: 100000)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = collect_local_corpus(
            args.out_dir,
            max_docs_per_domain=args.max_docs_per_domain,
            max_doc_bytes=args.max_doc_bytes,
        )
    except (ValueError, EmptyDomainError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{'domain':<10} {'documents':>10} {'MB':>8}  file")
    for domain, summary in summarize_corpus(paths).items():
        print(
            f"{domain:<10} {summary.num_docs:>10} {summary.num_bytes / 1e6:>8.2f}  {paths[domain]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

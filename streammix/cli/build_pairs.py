"""``streammix-build --pairs``: parse flags into a ``PairsBuildConfig`` and run the pairs build.

``streammix-build`` hands its arguments here when they contain ``--pairs``. Every user
mistake ends with exit status 2 and one line ``streammix-build: error: ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

PROG = "streammix-build --pairs"

EXAMPLES = """\
examples:
  # SimpleMix: on-policy pairs from `streammix pairs` and off-policy pairs, 2% held out
  streammix-build --pairs --domain on=pairs/on.jsonl --domain off=pairs/off.parquet \\
      --tokenizer ./policy --val-fraction 0.02 --out built-pairs/

Records: {"prompt": ..., "chosen": ..., "rejected": ..., "source": ...} (field names set by
--prompt-field etc.; scores with --chosen-score-field/--rejected-score-field). Output: one
MDS Stream per domain with prompt/chosen/rejected texts and *_tokens ids, a streammix.parquet
sidecar (lengths, source, scores and margin), OUT/rejects.jsonl and OUT/streammix.yaml.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --pairs --help)")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"streammix-build: error: {message}\n")
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from streammix.cli.build import parse_size

    p = _Parser(prog=PROG, description="Tokenize preference pairs {prompt, chosen, rejected} "
                "into MDS Streams, one per domain (pair source).", epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", action="append", metavar="NAME=PATH_OR_GLOB", required=True,
                   help="a domain of pairs: jsonl(.gz/.zst) or parquet files; repeatable")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--tokenizer", metavar="DIR", required=True,
                   help="local Hugging Face tokenizer folder (usually the policy's)")
    p.add_argument("--prompt-field", default="prompt", metavar="FIELD")
    p.add_argument("--chosen-field", default="chosen", metavar="FIELD")
    p.add_argument("--rejected-field", default="rejected", metavar="FIELD")
    p.add_argument("--source-field", default="source", metavar="FIELD",
                   help="optional field naming the pair's origin (default: source; '' for none)")
    p.add_argument("--chosen-score-field", metavar="FIELD", help="score of the chosen response")
    p.add_argument("--rejected-score-field", metavar="FIELD",
                   help="score of the rejected response (margin = chosen - rejected)")
    p.add_argument("--max-pair-tokens", type=int, default=4096, metavar="N",
                   help="reject pairs whose prompt + longer response exceed N tokens (4096)")
    p.add_argument("--no-eos", action="store_true", help="do not end responses with eos")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="hold out this fraction of prompts per domain (by a hash of the prompt)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split hash")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--compression", default="zstd", metavar="NAME",
                   help="MDS shard compression (as streammix-build; 'none' for none)")
    p.add_argument("--shard-size", type=parse_size, default=1 << 26, metavar="SIZE")
    p.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary")
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from streammix.format.pairs import PairFields
    from streammix.pipeline.config import BuildError, DomainSpec
    from streammix.pipeline.pairs import PairsBuildConfig

    domains = []
    for text in args.domain:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise BuildError(f"--domain {text!r}: expected NAME=PATH_OR_GLOB")
        domains.append(DomainSpec(name=name, source=path))
    try:
        fields = PairFields(prompt=args.prompt_field, chosen=args.chosen_field,
                            rejected=args.rejected_field, source=args.source_field or None,
                            chosen_score=args.chosen_score_field,
                            rejected_score=args.rejected_score_field)
    except ValueError as exc:
        raise BuildError(f"pair fields: {exc}") from None
    compression = None if args.compression.lower() == "none" else args.compression
    return PairsBuildConfig(domains=tuple(domains), out=args.out, tokenizer=args.tokenizer,
                            fields=fields, max_tokens=args.max_pair_tokens,
                            append_eos=not args.no_eos, val_fraction=args.val_fraction,
                            seed=args.seed, strict=args.strict, compression=compression,
                            size_limit=args.shard_size, progress=not args.quiet,
                            overwrite=args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from streammix.format.manifest import ManifestError
    from streammix.format.readers import InputError
    from streammix.pipeline.config import BuildError

    try:
        config = config_from_args(args)
        from streammix.pipeline.pairs import run_pairs_build

        summary = run_pairs_build(config)
    except (BuildError, InputError, ManifestError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("streammix-build: interrupted; run the same command again to resume\n")
        return 130
    if config.progress:
        print(summary.format())
    return 0

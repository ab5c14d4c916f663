"""``streammix``: plan SampleMix counts, plot an online-mixing run, run the demo.

Each subcommand parses its arguments and calls one function of the package; user mistakes
end with a one-line ``streammix: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

DESCRIPTION = ("streammix: plan SampleMix counts, plot an online-mixing run, run the demo, "
               "make on-policy preference pairs.")

EXAMPLES = """\
examples:
  streammix plan built/ --alpha 0.8 --token-budget 2e9 --max-repeats 4 --out plan.npz --plots plots/
  streammix plan built/ --domains web,code --out plan.npz
  streammix plot-mixing run/history.jsonl --out weights.png
  streammix demo --out demo-out
  streammix pairs ./policy prompts.jsonl --reward mypkg.rewards:score -k 4 --out pairs/on.jsonl
"""


class _Parser(argparse.ArgumentParser):
    """Errors end with a pointer to the (sub)command's --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(value)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def _plan_file(text: str) -> Path:
    path = Path(text)
    if path.suffix != ".npz":
        raise argparse.ArgumentTypeError(
            f"a plan file ends in .npz, got {text!r} (e.g. {path.with_suffix('.npz')})"
        )
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name the .npz file to write")
    return path


def _parser() -> argparse.ArgumentParser:
    from streammix.demo.run import DEMO_POLICIES

    parser = _Parser(
        prog="streammix", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = sub.add_parser(
        "plan", help="SampleMix repeat counts for a built dataset (preview and plan file)",
        description="Weight every sample by p = alpha * diversity + (1 - alpha) * quality, turn "
        "the weights into integer repeat counts for a token budget, print the per-domain plan "
        "and write it as a file that MixingConfig(sample_counts=...) takes.")
    plan.add_argument("build", type=Path, metavar="BUILD", help="a streammix-build output folder")
    plan.add_argument("--alpha", type=float, default=0.8, metavar="A",
                      help="diversity weight; 1 - alpha goes to quality (default 0.8)")
    plan.add_argument("--token-budget", type=_number, default=None, metavar="N",
                      help="tokens (bytes for an untokenized build) the plan covers; default: "
                      "one pass over the build; 2e9 style accepted")
    plan.add_argument("--max-repeats", type=int, default=None, metavar="R",
                      help="cap on the repeats of one sample")
    plan.add_argument("--max-domain-share", type=float, default=None, metavar="S",
                      help="cap on one domain's share of the budget, in (0, 1]")
    plan.add_argument("--rounding", choices=["systematic", "seeded"], default="systematic",
                      help="how fractional counts become integers (default systematic)")
    plan.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the rounding")
    plan.add_argument("--domains", type=_names, action="extend", default=None,
                      metavar="NAME[,NAME...]",
                      help="plan only these domains: a comma-separated list (repeatable)")
    plan.add_argument("--allow-shortfall", action="store_true",
                      help="write the plan even when the caps or the build's size leave it short "
                      "of --token-budget (without it, a shortfall is an error)")
    plan.add_argument("--out", type=_plan_file, default=None, metavar="FILE.npz",
                      help="write the plan here (checked before any work is done)")
    plan.add_argument("--plots", type=Path, default=None, metavar="DIR",
                      help="folder for plan.png (quality, diversity and the plan)")

    plot = sub.add_parser("plot-mixing", help="plot weights and losses of an OnlineMixing run",
                          description="Render the history.jsonl that OnlineMixing(history_path=...) "
                          "writes as one PNG: domain weights and per-domain losses over steps.")
    plot.add_argument("history", type=Path, metavar="HISTORY.jsonl",
                      help="the history OnlineMixing(history_path=...) writes (not a plan "
                      ".npz: streammix plan BUILD --plots DIR draws a plan)")
    plot.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="PNG to write")

    demo = sub.add_parser(
        "demo", help="build a corpus from this machine's files and train a tiny GPT-2 with "
        "online mixing", description="The end-to-end demo: collects three domains of real text "
        "already on this machine (Python standard library code, Python documentation topics, "
        "installed packages' descriptions) plus a junk domain of the same text with its "
        "characters shuffled, trains a tokenizer, runs streammix-build, prints the SampleMix "
        "plan and trains a small GPT-2 on the CPU with Aioli online mixing, printing progress, "
        "weights and losses and leaving plots behind. Nothing is downloaded.")
    demo.add_argument("--out", type=Path, default=Path("demo-out"),
                      help="working folder (default ./demo-out)")
    demo.add_argument("--steps", type=_number, default=None,
                      help="training steps (default: whole 60-step rounds for about 100 s of "
                      "training from a measured step time, at least 600)")
    demo.add_argument("--threads", type=_number, default=None,
                      help="torch threads (default: the cores free now, round(cores - 1-minute "
                      "load average), at least 1)")
    demo.add_argument("--policy", default="aioli", choices=DEMO_POLICIES,
                      help="online mixing policy (default aioli)")
    demo.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    demo.add_argument("--max-docs-per-domain", type=int, default=None,
                      help="cap each domain (default: everything found, split into chunks)")
    _add_pairs_parser(sub)
    return parser


def _add_pairs_parser(sub: Any) -> None:
    pairs = sub.add_parser(
        "pairs", help="on-policy preference pairs: sample k responses per prompt from a local "
        "policy, keep the best and worst by a reward",
        description="Sample k responses per prompt from a local Hugging Face causal LM, score "
        "them with a reward (a local sequence-classification model folder or a callable "
        "module:function(prompt, response) -> float), keep the best as chosen and the worst as "
        "rejected, and append pair records to OUT (jsonl, ready for streammix-build --pairs). "
        "Batched, on the GPU when present, resumable (a rerun skips prompts already done). "
        "Nothing is downloaded.")
    pairs.add_argument("policy", help="local causal LM folder (save_pretrained output)")
    pairs.add_argument("prompts", help="jsonl file of prompts")
    pairs.add_argument("--reward", required=True,
                       help="reward model folder, or module:function (hf:/callable: to force)")
    pairs.add_argument("--out", required=True, help="pair records to append to (jsonl)")
    pairs.add_argument("-k", "--samples", dest="k", type=int, default=4,
                       help="responses sampled per prompt (default 4)")
    pairs.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1)")
    pairs.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1)")
    pairs.add_argument("--max-new-tokens", type=int, default=128)
    pairs.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    pairs.add_argument("--prompt-field", default="prompt")
    pairs.add_argument("--source", default="on-policy", help="source field of the pairs")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    pairs.add_argument("--quiet", action="store_true", help="no progress bar")


def _pairs(args: argparse.Namespace) -> None:
    from streammix.pipeline.onpolicy import OnPolicyConfig, generate_pairs

    summary = generate_pairs(OnPolicyConfig(
        policy=args.policy, prompts=args.prompts, out=args.out, reward=args.reward, k=args.k,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, prompt_field=args.prompt_field, source=args.source,
        seed=args.seed, device=args.device, progress=not args.quiet))
    print(f"{summary.out}: {summary.pairs} new pairs, {summary.skipped} prompts without a "
          f"preference (tied rewards), {summary.already_done} of {summary.prompts} prompts "
          "done before")


def _plan(args: argparse.Namespace) -> None:
    from streammix.metadata.samplemix import SampleMixConfig
    from streammix.pipeline.samplemix_plan import (
        default_budget,
        format_report,
        plan_build,
        save_build_plan,
        shortfall_problem,
    )

    config = SampleMixConfig(
        alpha=args.alpha, token_budget=args.token_budget or default_budget(args.build),
        max_repeats_per_sample=args.max_repeats, max_domain_share=args.max_domain_share,
        rounding=args.rounding, seed=args.seed)
    result = plan_build(args.build, config, tuple(args.domains) if args.domains else None)
    print(format_report(result))
    problem = shortfall_problem(result, config)
    if problem is not None and not args.allow_shortfall:
        raise ValueError(f"{problem}, or pass --allow-shortfall to write this plan anyway "
                         "(nothing was written)")
    if problem is not None:
        print(f"streammix: warning: {problem} (--allow-shortfall)", file=sys.stderr)
    if args.out is not None:
        print(f"plan written to {save_build_plan(result, args.out, config)}")
    if args.plots is not None:
        from streammix.pipeline.plan_plots import plot_plan

        print(f"plot written to {plot_plan(result, args.plots / 'plan.png')}")


def _plot(args: argparse.Namespace) -> None:
    from streammix.composer.history import read_history
    from streammix.composer.plot import plot_history

    names, history = read_history(args.history)
    print(f"plot written to {plot_history(history, args.out, domain_names=names)}")


def _demo(args: argparse.Namespace) -> None:
    from streammix.demo.run import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, steps=args.steps, threads=args.threads,
                        policy=args.policy, seed=args.seed,
                        max_docs_per_domain=args.max_docs_per_domain))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        hint = ""
        if args.command == "plan" and args.domains:
            hint = " (--domains takes one comma-separated list: --domains web,code)"
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    handlers = {"plan": _plan, "plot-mixing": _plot, "demo": _demo, "pairs": _pairs}
    try:
        handlers[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"streammix: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SimpleMix on a CPU-sized task: on-policy only, off-policy only and a 0.5/0.5 mix with DPO.

Claim examined (SimpleMix, 2025): mixing on-policy and off-policy preference pairs per
example 0.5/0.5 and training with plain DPO (Rafailov et al. 2023) is at least as good on
average as either kind alone; on-policy pairs help most on verifiable (reasoning) tasks,
off-policy pairs on open-ended ones. Here, at toy scale, everything built on this machine:

* Tasks. *Verifiable*: ``Q: a+b=`` (a, b in 0..19), reward 1 when the response's first
  number is a + b, else 0. *Open-ended*: ``Describe the <topic>:`` (and other phrasings),
  reward = distinct topic words - 0.5 * repeated words - 0.3 * off-topic words.
* SFT. A 2-layer GPT-2 (byte-level BPE trained on the task texts) is trained briefly on
  answers of mixed quality (arithmetic right 60% of the time, descriptions from good,
  mediocre and poor templates), so it is imperfect on both tasks.
* On-policy pairs: ``streammix pairs`` (``generate_pairs``) with k = 4 samples per training
  prompt from the SFT model, ranked by the reward. Off-policy pairs: 4 template answers of
  mixed quality per training prompt (arithmetic answers off by 0..3, description
  templates), ranked by the same reward; ties give no pair.
* Both go through ``streammix-build --pairs`` into domains ``on`` and ``off``; each recipe
  trains DPO (beta 0.1) with Composer from the SFT model on a ``StreamMixDataset`` with
  weights on-only 1/0, off-only 0/1 or SimpleMix 0.5/0.5, for the same number of pairs
  (steps x batch), with several seeds (data order and Trainer seed).
* Evaluation: greedy generations on held-out prompts (arithmetic pairs (a, b) never
  trained on; open-ended prompts with a held-out phrasing): accuracy and mean reward per
  task type; the SFT model is the baseline.

Each DPO job runs in its own process (upstream StreamingDataset keeps shared memory per
instance). Usage:

    python3 benchmarks/bench_simplemix.py [--seeds 3] [--steps 48] [--work DIR] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TOPICS = {
    "sea": "blue deep waves salt calm wide tide".split(),
    "forest": "green trees quiet moss birds shade tall".split(),
    "city": "busy streets lights noise towers crowds traffic".split(),
    "desert": "hot sand dry dunes sun empty wind".split(),
    "mountain": "high snow rocks cold peaks steep air".split(),
    "river": "flowing water fish banks bridge current reeds".split(),
    "night": "dark stars moon quiet cool owls dreams".split(),
    "garden": "flowers bees soil roses paths herbs fence".split(),
    "winter": "snow ice frost cold fire scarves white".split(),
    "market": "stalls fruit bread voices prices baskets fish".split(),
    "library": "books shelves silence pages readers lamps dust".split(),
    "storm": "thunder rain lightning wind clouds dark loud".split(),
}
FILLER = "thing stuff very nice good okay some kind of really".split()
TRAIN_PHRASES = ("Describe the {}:", "Tell me about the {}:", "Words for the {}:")
HELD_OUT_PHRASE = "What is the {} like:"
ARITH = re.compile(r"^Q: (\d+)\+(\d+)=$")
TOPIC = re.compile(r"the (\w+)[:]$")


# ---------------------------------------------------------------- rewards (importable)


def reward(prompt: str, response: str) -> float:
    """The task's reward: arithmetic correctness, or the description score."""
    match = ARITH.match(prompt)
    if match:
        found = re.search(r"\d+", response)
        return float(found is not None and int(found.group()) == int(match[1]) + int(match[2]))
    topic = TOPIC.search(prompt)
    words = response.split()
    relevant = set(TOPICS[topic[1]]) if topic and topic[1] in TOPICS else set()
    distinct = len({w for w in words if w in relevant})
    repeated = len(words) - len(set(words))
    off_topic = len([w for w in words if w not in relevant])
    return float(distinct - 0.5 * repeated - 0.3 * off_topic)


# ---------------------------------------------------------------- data


def _prompts() -> dict[str, list[str]]:
    pairs = [(a, b) for a in range(20) for b in range(20)]
    rng = np.random.Generator(np.random.PCG64(123))
    held = {pairs[i] for i in rng.choice(len(pairs), 60, replace=False)}
    return {
        "arith_train": [f"Q: {a}+{b}=" for a, b in pairs if (a, b) not in held],
        "arith_eval": [f"Q: {a}+{b}=" for a, b in sorted(held)],
        "arith_seen": [f"Q: {a}+{b}=" for a, b in pairs if (a, b) not in held][::6],
        "open_train": [p.format(t) for t in TOPICS for p in TRAIN_PHRASES],
        "open_eval": [HELD_OUT_PHRASE.format(t) for t in TOPICS],
    }


def _arith_answer(prompt: str, rng: np.random.Generator, p_correct: float) -> str:
    a, b = map(int, ARITH.match(prompt).groups())
    value = a + b if rng.random() < p_correct else a + b + int(rng.choice([-3, -2, -1, 1, 2, 3]))
    return f" {max(value, 0)}"


def _description(topic: str, rng: np.random.Generator, quality: str) -> str:
    words = TOPICS[topic]
    if quality == "good":
        chosen = list(rng.choice(words, 4, replace=False))
    elif quality == "mediocre":
        chosen = list(rng.choice(words, 2, replace=False)) + list(rng.choice(FILLER, 2))
    else:  # poor: repetition and filler
        word = str(rng.choice(words))
        chosen = [word, word, word] + list(rng.choice(FILLER, 1))
    return " " + " ".join(chosen)


def _topic(prompt: str) -> str:
    return TOPIC.search(prompt)[1]


def sft_texts(prompts: dict[str, list[str]], rng: np.random.Generator) -> list[tuple[str, str]]:
    texts = []
    for _ in range(6):
        texts += [(p, _arith_answer(p, rng, 0.6)) for p in prompts["arith_train"]]
    for _ in range(40):
        for p in prompts["open_train"]:
            quality = rng.choice(["good", "mediocre", "poor"], p=[0.3, 0.4, 0.3])
            texts.append((p, _description(_topic(p), rng, str(quality))))
    return texts


def off_policy_pairs(prompts: dict[str, list[str]], rng: np.random.Generator) -> list[dict]:
    records = []
    for prompt in prompts["arith_train"] + prompts["open_train"] * 4:
        if ARITH.match(prompt):
            answers = [_arith_answer(prompt, rng, 0.35) for _ in range(4)]
        else:
            answers = [_description(_topic(prompt), rng, str(rng.choice(["good", "mediocre", "poor"])))
                       for _ in range(4)]
        scores = [reward(prompt, a) for a in answers]
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] == scores[worst] or answers[best] == answers[worst]:
            continue
        records.append({"prompt": prompt, "chosen": answers[best], "rejected": answers[worst],
                        "source": "templates", "chosen_score": scores[best],
                        "rejected_score": scores[worst]})
    return records


# ---------------------------------------------------------------- models


def train_sft(work: Path, texts: list[tuple[str, str]], *, steps: int, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from streammix.composer.model import IGNORE_INDEX, causal_lm_loss
    from streammix.demo.tokenizer import train_tokenizer

    folder = work / "sft"
    corpus = [p + r for p, r in texts] + [" ".join(w) for w in TOPICS.values()]
    train_tokenizer(corpus, folder, vocab_size=400)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_layer=2, n_head=4,
                        n_embd=64, bos_token_id=eos, eos_token_id=eos, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    rows = []
    for prompt, response in texts:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((p + r, len(p)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = np.random.Generator(np.random.PCG64(seed))
    for _ in range(steps):
        batch = [rows[i] for i in gen.integers(0, len(rows), 32)]
        length = max(len(ids) for ids, _ in batch)
        ids = torch.full((32, length), eos, dtype=torch.long)
        labels = torch.full((32, length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((32, length), dtype=torch.long)
        for b, (seq, prompt_len) in enumerate(batch):
            ids[b, : len(seq)] = torch.tensor(seq)
            labels[b, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
            mask[b, : len(seq)] = 1
        loss = causal_lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    return folder


def evaluate(model_dir: Path, prompts: dict[str, list[str]]) -> dict[str, float]:
    import torch

    from streammix.pipeline.onpolicy import load_local_causal_lm, sample_responses

    tokenizer, model = load_local_causal_lm(str(model_dir), torch.device("cpu"))
    result = {}
    for task in ("arith_eval", "arith_seen", "open_eval"):
        scores = []
        items = prompts[task]
        for start in range(0, len(items), 32):
            chunk = items[start : start + 32]
            responses = sample_responses(model, tokenizer, chunk, num_samples=1, temperature=0.0,
                                         top_p=1.0, max_new_tokens=8,
                                         generators=[torch.Generator()] * len(chunk))
            scores += [reward(p, r[0]) for p, r in zip(chunk, responses)]
        result[task] = float(np.mean(scores))
    return result


def dpo_job(args: argparse.Namespace) -> None:
    """One recipe and seed, in its own process: DPO from the SFT model, then evaluation."""
    import torch
    from composer import Trainer
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM

    from streammix import MixingConfig, StreamMixDataset
    from streammix.composer.dpo import DPOCollator, DPOConfig, DPOModel

    torch.set_num_threads(1)
    work = Path(args.work)
    weights = {"on": {"on": 1.0, "off": 0.0}, "off": {"on": 0.0, "off": 1.0},
               "mix": {"on": 0.5, "off": 0.5}}[args.recipe]
    dataset = StreamMixDataset(local=str(work / "pairs-built"), batch_size=8,
                               mixing=MixingConfig(domain_weights=weights, seed=args.seed))
    policy = AutoModelForCausalLM.from_pretrained(str(work / "sft"), local_files_only=True)
    model = DPOModel(policy, config=DPOConfig(beta=0.1), domain_names=dataset.domain_names)
    loader = DataLoader(dataset, batch_size=8, collate_fn=DPOCollator(max_seq_len=32, pad_id=0))
    trainer = Trainer(model=model, train_dataloader=loader, max_duration=f"{args.steps}ba",
                      optimizers=torch.optim.AdamW(model.policy.parameters(), lr=5e-4),
                      device="cpu", seed=args.seed, progress_bar=False, log_to_console=False)
    trainer.fit()
    out = work / "runs" / f"{args.recipe}-{args.seed}"
    model.policy.save_pretrained(out)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(work / "sft"), local_files_only=True).save_pretrained(out)
    prompts = _prompts()
    result = evaluate(out, prompts) | {"recipe": args.recipe, "seed": args.seed}
    (out / "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- orchestration


def prepare(work: Path, sft_steps: int) -> dict[str, object]:
    from streammix.format.pairs import PairFields
    from streammix.pipeline.config import DomainSpec
    from streammix.pipeline.onpolicy import OnPolicyConfig, generate_pairs
    from streammix.pipeline.pairs import PairsBuildConfig, run_pairs_build

    prompts = _prompts()
    rng = np.random.Generator(np.random.PCG64(0))
    info: dict[str, object] = {}
    started = time.perf_counter()
    if not (work / "sft" / "config.json").exists():
        train_sft(work, sft_texts(prompts, rng), steps=sft_steps, seed=0)
    info["sft_seconds"] = time.perf_counter() - started
    info["sft"] = evaluate(work / "sft", prompts)
    prompt_file = work / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps({"prompt": p}) + "\n"
                                   for p in prompts["arith_train"] + prompts["open_train"] * 4))
    started = time.perf_counter()
    generate_pairs(OnPolicyConfig(
        policy=str(work / "sft"), prompts=str(prompt_file), out=str(work / "on.jsonl"),
        reward=f"{Path(__file__).stem}:reward", k=4, temperature=1.0, max_new_tokens=8,
        batch_size=32, seed=0, progress=False, device="cpu"))
    info["on_policy_seconds"] = time.perf_counter() - started
    off = off_policy_pairs(prompts, np.random.Generator(np.random.PCG64(1)))
    (work / "off.jsonl").write_text("".join(json.dumps(r) + "\n" for r in off))
    run_pairs_build(PairsBuildConfig(
        domains=(DomainSpec(name="on", source=str(work / "on.jsonl")),
                 DomainSpec(name="off", source=str(work / "off.jsonl"))),
        out=str(work / "pairs-built"), tokenizer=str(work / "sft"), max_tokens=32,
        fields=PairFields(chosen_score="chosen_score", rejected_score="rejected_score"),
        progress=False))
    on = [json.loads(line) for line in (work / "on.jsonl").read_text().splitlines()]
    skipped = (work / "on.jsonl.skipped.jsonl").read_text().splitlines()  # this and earlier runs
    info["pairs"] = {
        "on": {"total": len(on), "arith": sum(bool(ARITH.match(r["prompt"])) for r in on),
               "prompts_without_pair": len(skipped)},
        "off": {"total": len(off), "arith": sum(bool(ARITH.match(r["prompt"])) for r in off)},
    }
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-simplemix"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=48, help="DPO steps of 8 pairs")
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--output", type=Path, default=None, help="append a Markdown report")
    parser.add_argument("--job", choices=["on", "off", "mix"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))  # the reward callable: bench_simplemix:reward
    if args.job is not None:
        args.recipe = args.job
        dpo_job(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = prepare(args.work, args.sft_steps)
    results = []
    for seed in range(args.seeds):
        for recipe in ("on", "off", "mix"):
            out = args.work / "runs" / f"{recipe}-{seed}" / "result.json"
            if not out.exists():
                subprocess.run([sys.executable, __file__, "--work", str(args.work), "--job",
                                recipe, "--seed", str(seed), "--steps", str(args.steps)],
                               check=True)
            results.append(json.loads(out.read_text()))
    report = format_report(info, results, args, time.perf_counter() - started)
    print(report)
    if args.output is not None:
        with open(args.output, "a", encoding="utf-8") as stream:
            stream.write(report + "\n")


def format_report(info: dict, results: list[dict], args: argparse.Namespace, seconds: float
                  ) -> str:
    lines = [f"SFT baseline (greedy, held out): arithmetic accuracy {info['sft']['arith_eval']:.3f},"
             f" open-ended reward {info['sft']['open_eval']:.3f}",
             f"pairs: {json.dumps(info['pairs'])}",
             f"DPO: {args.steps} steps x 8 pairs per recipe, beta 0.1, {args.seeds} seeds; "
             f"total wall time {seconds:.0f} s", "",
             f"SFT on the arithmetic prompts it was trained on: {info['sft']['arith_seen']:.3f}", "",
             "| recipe | arithmetic accuracy, held out (mean ± sd) | arithmetic accuracy, training prompts | open-ended reward, held out | average of the two held-out gains over SFT |",
             "|---|---|---|---|---|"]
    summary = {}
    for recipe in ("on", "off", "mix"):
        rows = [r for r in results if r["recipe"] == recipe]
        arith = [r["arith_eval"] for r in rows]
        seen = [r["arith_seen"] for r in rows]
        open_ = [r["open_eval"] for r in rows]
        gain = np.mean([(a - info["sft"]["arith_eval"]) + (o - info["sft"]["open_eval"])
                        for a, o in zip(arith, open_)]) / 2
        summary[recipe] = (np.mean(arith), np.mean(open_), gain)
        sd = statistics.stdev if len(rows) > 1 else (lambda v: 0.0)
        lines.append(f"| {recipe} | {np.mean(arith):.3f} ± {sd(arith):.3f} | "
                     f"{np.mean(seen):.3f} ± {sd(seen):.3f} | "
                     f"{np.mean(open_):.3f} ± {sd(open_):.3f} | {gain:+.3f} |")
    on, off, mix = summary["on"], summary["off"], summary["mix"]
    lines += ["",
              f"on-policy better on the verifiable task: {on[0] > off[0]}; "
              f"off-policy better on the open-ended task: {off[1] > on[1]}; "
              f"mix at least as good as the better single recipe on average: "
              f"{mix[2] >= max(on[2], off[2])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

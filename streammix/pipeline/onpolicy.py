"""``streammix pairs``: on-policy preference pairs sampled from a local policy and ranked by a reward.

SimpleMix (2025) mixes *on-policy* pairs, whose responses come from the model being aligned,
with off-policy pairs and trains with DPO (Rafailov et al. 2023). On-policy pairs are made
as in the paper's setup (and as in on-policy DPO generally): for every prompt, sample ``k``
responses from the policy, score each with a reward, keep the best as *chosen* and the worst
as *rejected*. A prompt whose ``k`` rewards all tie gives no preference and no pair (it is
listed in ``<out>.skipped.jsonl``).

Sampling: the policy is a local Hugging Face causal LM folder (``local_files_only``; never a
download); prompts are left-padded and run in batches of ``batch_size`` prompts times ``k``
samples, with the key/value cache, ancestral sampling at ``temperature`` with optional
nucleus (``top_p``) filtering, until the tokenizer's eos or ``max_new_tokens``
(``temperature = 0`` is greedy decoding). Randomness comes from one ``torch.Generator`` per
prompt (on the model's device) seeded with ``(seed, prompt index)``, never from the global
RNG, so a prompt's samples do not depend on the batch it lands in or on a resume (up to
floating-point differences that padding can make in the logits); the device is ``cuda``
when available unless ``device`` says otherwise.

Reward: either a local sequence-classification model folder (scored on the text pair
``(prompt, response)``, batched; a one-output head's value, else the softmax probability of
the last label) or a Python callable ``module:function(prompt, response) -> float``.

Output: pair records, one JSON object per line, ready for ``streammix-build --pairs``:
``{"prompt", "chosen", "rejected", "source", "chosen_score", "rejected_score",
"prompt_index", "scores"}`` (``prompt_index`` is the line's position among the prompt file's
records; ``scores`` the ``k`` rewards). Resumable: records are appended batch by batch and
flushed; a rerun skips prompts already in the output (or the skipped list), after dropping
a torn last line left by a kill.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SKIPPED_SUFFIX = ".skipped.jsonl"


@dataclass(frozen=True, kw_only=True)
class OnPolicyConfig:
    """``streammix pairs`` settings (module docstring)."""

    policy: str
    prompts: str
    out: str
    reward: str
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 8
    reward_batch_size: int = 32
    prompt_field: str = "prompt"
    source: str = "on-policy"
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("k", "max_new_tokens", "batch_size", "reward_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.k < 2:
            raise ValueError(f"k must be >= 2 (a pair needs two responses), got {self.k}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not self.prompt_field:
            raise ValueError("prompt_field must not be empty")


@dataclass(frozen=True, kw_only=True)
class OnPolicySummary:
    """What a run did."""

    out: Path
    prompts: int
    already_done: int
    pairs: int
    skipped: int


def load_local_causal_lm(path: str, device: torch.device) -> tuple[Any, Any]:
    """Tokenizer (left padding) and causal LM from a local folder; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"policy {path!r} is not a local model folder (save_pretrained output)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a folder it cannot use
        raise ValueError(f"cannot load a causal LM and tokenizer from {path!r}: {exc}") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {path!r} has no eos token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model.to(device).eval()


@torch.inference_mode()
def sample_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    generators: Sequence[torch.Generator],
) -> list[list[str]]:
    """``num_samples`` responses per prompt (module docstring), decoded without special tokens.

    ``generators`` holds one generator per prompt (unused when ``temperature == 0``).
    """
    if len(generators) != len(prompts):
        raise ValueError(f"need one generator per prompt, got {len(generators)} for {len(prompts)}")
    device = next(model.parameters()).device
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids = encoded["input_ids"].repeat_interleave(num_samples, dim=0).to(device)
    mask = encoded["attention_mask"].repeat_interleave(num_samples, dim=0).to(device)
    if ids.shape[1] == 0:
        raise ValueError("a prompt has no tokens")
    eos = tokenizer.eos_token_id
    rows = ids.shape[0]
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    generated: list[torch.Tensor] = []
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()
        next_ids = _pick(logits, temperature, top_p, generators, num_samples)
        next_ids = torch.where(finished, torch.full_like(next_ids, eos), next_ids)
        generated.append(next_ids)
        finished |= next_ids == eos
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = mask.sum(dim=1, keepdim=True) - 1
        out = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=positions,
                    past_key_values=out.past_key_values, use_cache=True)
    tokens = torch.stack(generated, dim=1).cpu() if generated else torch.zeros(rows, 0, dtype=torch.long)
    texts = []
    for row in tokens.tolist():
        if eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def _pick(logits: torch.Tensor, temperature: float, top_p: float,
          generators: Sequence[torch.Generator], num_samples: int) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly better tokens
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    picks = [torch.multinomial(probs[i * num_samples : (i + 1) * num_samples], 1, generator=g)
             for i, g in enumerate(generators)]
    return torch.cat(picks)[:, 0]


RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def make_reward(spec: str, *, device: torch.device, batch_size: int = 32) -> RewardFn:
    """A batched reward from ``spec``: a local reward-model folder or ``module:function``.

    Prefixes ``hf:`` and ``callable:`` make the choice explicit; without one a folder is a
    model and ``module:function`` a callable.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError("reward must be a model folder or 'module:function'")
    if spec.startswith("hf:"):
        return _model_reward(spec[3:], device, batch_size)
    if spec.startswith("callable:"):
        return _callable_reward(spec[len("callable:") :])
    if os.path.isdir(spec):
        return _model_reward(spec, device, batch_size)
    if ":" in spec:
        return _callable_reward(spec)
    raise ValueError(f"reward {spec!r} is neither a local model folder nor 'module:function'")


def _callable_reward(spec: str) -> RewardFn:
    from streammix.metadata.quality import resolve_callable

    function = resolve_callable(spec)

    def reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        values = []
        for prompt, response in zip(prompts, responses):
            value = function(prompt, response)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"reward {spec} returned {value!r}, not a finite number")
            values.append(float(value))
        return values

    return reward


def _model_reward(path: str, device: torch.device, batch_size: int) -> RewardFn:
    from streammix.pipeline.hf_quality import _label_index, _load

    tokenizer, model = _load(Path(path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"reward tokenizer in {path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    label = _label_index(model, None)
    model.to(device).eval()

    @torch.inference_mode()
    def reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        values: list[float] = []
        for start in range(0, len(prompts), batch_size):
            encoded = tokenizer(list(prompts[start : start + batch_size]),
                                list(responses[start : start + batch_size]), padding=True,
                                truncation=True, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in encoded.items()}).logits.float()
            scores = logits[:, 0] if label is None else torch.softmax(logits, -1)[:, label]
            values.extend(scores.cpu().tolist())
        return values

    return reward


def read_prompts(path: str, field: str) -> list[str]:
    """The prompts of a jsonl file, in order; a clear error names a bad line."""
    prompts = []
    try:
        with open(path, encoding="utf-8") as stream:
            for line_no, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: malformed json ({exc.msg})") from None
                prompt = record.get(field) if isinstance(record, dict) else None
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"{path}:{line_no}: no non-empty string field {field!r}")
                prompts.append(prompt)
    except OSError as exc:
        raise ValueError(f"cannot read prompts {path}: {exc.strerror or exc}") from None
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def _done_indices(path: Path) -> set[int]:
    """Prompt indices recorded in ``path``; a torn last line (a kill mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as stream:
            stream.truncate(len(data))
    return {int(json.loads(line)["prompt_index"]) for line in data.splitlines() if line.strip()}


def _batches(todo: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(todo), size):
        yield todo[start : start + size]


def make_pair(prompt: str, responses: Sequence[str], scores: Sequence[float]
              ) -> tuple[int, int] | None:
    """Indices of the best and worst response, or None when the rewards all tie."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    if scores[best] == scores[worst] or responses[best] == responses[worst]:
        return None
    return best, worst


def generate_pairs(config: OnPolicyConfig) -> OnPolicySummary:
    """Write on-policy pair records to ``config.out`` (module docstring)."""
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prompts = read_prompts(config.prompts, config.prompt_field)
    reward = make_reward(config.reward, device=device, batch_size=config.reward_batch_size)
    tokenizer, model = load_local_causal_lm(config.policy, device)
    out = Path(config.out)
    skipped_path = out.with_name(out.name + SKIPPED_SUFFIX)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_indices(out) | _done_indices(skipped_path)
    todo = [i for i in range(len(prompts)) if i not in done]
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), unit=" prompts",
                   desc="pairs", file=sys.stderr, dynamic_ncols=True)
    pairs = skipped = 0
    try:
        with open(out, "a", encoding="utf-8") as pair_stream, \
                open(skipped_path, "a", encoding="utf-8") as skip_stream:
            for batch in _batches(todo, config.batch_size):
                generators = [torch.Generator(device=device).manual_seed(
                    config.seed * 1_000_003 + index) for index in batch]
                texts = [prompts[i] for i in batch]
                samples = sample_responses(
                    model, tokenizer, texts, num_samples=config.k,
                    temperature=config.temperature, top_p=config.top_p,
                    max_new_tokens=config.max_new_tokens, generators=generators)
                flat_prompts = [p for p in texts for _ in range(config.k)]
                flat_scores = reward(flat_prompts, [r for rs in samples for r in rs])
                pair_lines, skip_lines = [], []
                for j, index in enumerate(batch):
                    scores = flat_scores[j * config.k : (j + 1) * config.k]
                    picked = make_pair(texts[j], samples[j], scores)
                    if picked is None:
                        skip_lines.append(json.dumps({"prompt_index": index,
                                                      "reason": "rewards tie", "scores": scores}))
                        continue
                    best, worst = picked
                    pair_lines.append(json.dumps({
                        "prompt": texts[j], "chosen": samples[j][best],
                        "rejected": samples[j][worst], "source": config.source,
                        "chosen_score": scores[best], "rejected_score": scores[worst],
                        "prompt_index": index, "scores": scores}, ensure_ascii=False))
                skip_stream.write("".join(line + "\n" for line in skip_lines))
                skip_stream.flush()
                pair_stream.write("".join(line + "\n" for line in pair_lines))
                pair_stream.flush()
                pairs += len(pair_lines)
                skipped += len(skip_lines)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return OnPolicySummary(out=out, prompts=len(prompts), already_done=len(prompts) - len(todo),
                           pairs=pairs, skipped=skipped)

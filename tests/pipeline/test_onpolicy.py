"""``streammix pairs``: on-policy pairs from a tiny local policy and a callable or model reward."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from streammix.cli.main import main as streammix_main
from streammix.pipeline.onpolicy import (
    OnPolicyConfig,
    generate_pairs,
    load_local_causal_lm,
    make_pair,
    make_reward,
    read_prompts,
    sample_responses,
)

REWARD_MODULE = '''
def longer(prompt, response):
    return float(len(response.split()))

def broken(prompt, response):
    return "high"
'''


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 and its tokenizer saved to a folder, as save_pretrained leaves them."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from streammix.demo.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("policy") / "policy"
    words = "one two three four five six seven eight nine ten plus minus equals is".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(20)) for i in range(100)]
    train_tokenizer(texts, folder, vocab_size=300)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_layer=1, n_head=2, n_embd=16,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"what is {w} plus one"}) + "\n"
                            for w in "one two three four five six".split()))
    return path


@pytest.fixture
def reward_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "toy_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_rewards"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_pairs_are_best_and_worst_and_runs_resume(policy_dir: Path, prompts_file: Path,
                                                  reward_module: str, tmp_path: Path) -> None:
    out = tmp_path / "on.jsonl"
    config = OnPolicyConfig(policy=str(policy_dir), prompts=str(prompts_file), out=str(out),
                            reward=f"{reward_module}:longer", k=4, max_new_tokens=8, batch_size=4,
                            seed=5, progress=False, device="cpu")
    summary = generate_pairs(config)
    assert summary.prompts == 6 and summary.already_done == 0
    records = _records(out)
    skipped_path = tmp_path / "on.jsonl.skipped.jsonl"
    skipped = _records(skipped_path)
    assert summary.pairs == len(records) and summary.skipped == len(skipped)
    assert sorted(r["prompt_index"] for r in records + skipped) == list(range(6))
    assert len(records) >= 3
    prompts = read_prompts(str(prompts_file), "prompt")
    for record in records:
        assert record["prompt"] == prompts[record["prompt_index"]]
        assert record["source"] == "on-policy" and len(record["scores"]) == 4
        assert record["chosen_score"] == max(record["scores"]) == len(record["chosen"].split())
        assert record["rejected_score"] == min(record["scores"]) == len(record["rejected"].split())
        assert record["chosen_score"] > record["rejected_score"]

    # A rerun does nothing; a torn last line and a lost record are redone, the same way.
    assert generate_pairs(config).pairs == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:10])
    again = generate_pairs(config)
    assert again.already_done == 5 and again.pairs == 1
    assert _records(out)[-1] == records[-1]

    fresh = tmp_path / "fresh.jsonl"
    generate_pairs(OnPolicyConfig(**{**config.__dict__, "out": str(fresh)}))
    assert fresh.read_text() == out.read_text()  # seeded: the same pairs again

    # Ready for the build.
    from streammix.cli.build import main as build_main
    from streammix.format.manifest import read_manifest

    assert build_main(["--pairs", "--domain", f"on={out}", "--tokenizer", str(policy_dir),
                       "--out", str(tmp_path / "built"), "--quiet", "--chosen-score-field",
                       "chosen_score", "--rejected-score-field", "rejected_score"]) == 0
    assert read_manifest(tmp_path / "built").domain("on").num_samples == len(records)


@pytest.mark.usefixtures("one_torch_thread")
def test_greedy_sampling_matches_transformers_generate(policy_dir: Path) -> None:
    tokenizer, model = load_local_causal_lm(str(policy_dir), torch.device("cpu"))
    prompts = ["one two", "what is three plus four minus"]
    ours = sample_responses(model, tokenizer, prompts, num_samples=2, temperature=0.0, top_p=1.0,
                            max_new_tokens=6, generators=[torch.Generator()] * 2)
    for prompt, responses in zip(prompts, ours):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        reference = model.generate(ids, do_sample=False, max_new_tokens=6,
                                   pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
        eos = tokenizer.eos_token_id
        reference = reference[: reference.index(eos)] if eos in reference else reference
        assert responses == [tokenizer.decode(reference, skip_special_tokens=True)] * 2


@pytest.mark.usefixtures("one_torch_thread")
def test_sampling_uses_only_its_generator(policy_dir: Path) -> None:
    tokenizer, model = load_local_causal_lm(str(policy_dir), torch.device("cpu"))
    state = torch.get_rng_state()

    def run(seed: int) -> list[list[str]]:
        return sample_responses(model, tokenizer, ["one two"], num_samples=4, temperature=1.0,
                                top_p=0.9, max_new_tokens=6,
                                generators=[torch.Generator().manual_seed(seed)])

    assert run(1) == run(1)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.usefixtures("one_torch_thread")
def test_reward_model_folder(policy_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path / "rm"
    tokenizer = AutoTokenizer.from_pretrained(str(policy_dir), local_files_only=True)
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_layer=1, n_head=2, n_embd=16,
                        num_labels=1, pad_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        GPT2ForSequenceClassification(config).save_pretrained(folder)
    reward = make_reward(str(folder), device=torch.device("cpu"), batch_size=2)
    scores = reward(["one", "one", "two three"], ["two", "two four five", "six"])
    assert len(scores) == 3 and len(set(scores)) == 3
    assert reward(["one"], ["two"]) == pytest.approx(scores[:1], rel=1e-5)  # batch-independent


def test_make_pair_and_ties() -> None:
    assert make_pair("p", ["a", "b", "c"], [0.5, 2.0, -1.0]) == (1, 2)
    assert make_pair("p", ["a", "b"], [1.0, 1.0]) is None
    assert make_pair("p", ["a", "a"], [1.0, 0.0]) is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [({"k": 1}, ValueError), ({"temperature": -1.0}, ValueError), ({"top_p": 0.0}, ValueError),
     ({"max_new_tokens": 0}, ValueError), ({"seed": -1}, ValueError),
     ({"batch_size": True}, ValueError)],
)
def test_bad_configuration(changes: dict, error: type) -> None:
    with pytest.raises(error):
        OnPolicyConfig(**({"policy": "p", "prompts": "q", "out": "o", "reward": "m:f"} | changes))


def test_bad_inputs(policy_dir: Path, prompts_file: Path, reward_module: str, tmp_path: Path,
                    capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="neither"):
        make_reward("no-such-thing", device=torch.device("cpu"))
    with pytest.raises(ValueError):
        make_reward("no_such_module_xyz:f", device=torch.device("cpu"))
    broken = make_reward(f"{reward_module}:broken", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="finite number"):
        broken(["p"], ["r"])
    with pytest.raises(ValueError, match="local model folder"):
        load_local_causal_lm(str(tmp_path / "missing"), torch.device("cpu"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_prompts(str(bad), "prompt")
    code = streammix_main(["pairs", str(tmp_path / "missing"), str(prompts_file), "--reward",
                           f"{reward_module}:longer", "--out", str(tmp_path / "o.jsonl"),
                           "--quiet"])
    assert code == 2 and "local model folder" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_cli(policy_dir: Path, prompts_file: Path, reward_module: str, tmp_path: Path,
             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.jsonl"
    assert streammix_main(["pairs", str(policy_dir), str(prompts_file), "--reward",
                           f"callable:{reward_module}:longer", "--out", str(out), "-k", "3",
                           "--max-new-tokens", "4", "--quiet", "--device", "cpu"]) == 0
    assert "of 6 prompts" in capsys.readouterr().out
    assert out.exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_samples_of_a_prompt_do_not_depend_on_its_batch(policy_dir: Path) -> None:
    tokenizer, model = load_local_causal_lm(str(policy_dir), torch.device("cpu"))

    def run(prompts: list[str], seeds: list[int]) -> list[list[str]]:
        return sample_responses(model, tokenizer, prompts, num_samples=3, temperature=1.0,
                                top_p=1.0, max_new_tokens=6,
                                generators=[torch.Generator().manual_seed(s) for s in seeds])

    together = run(["one two", "what is three plus four minus"], [7, 8])
    assert together == run(["one two"], [7]) + run(["what is three plus four minus"], [8])

"""``streammix-build --pairs``: pair records through the build into StreamMixDataset and DPO."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streammix.cli.build import main as build_main
from streammix.format.manifest import read_manifest
from streammix.format.pairs import PairFields, PairStreamWriter, read_pair_records
from streammix.format.readers import RecordProblem
from streammix.format.sidecar import read_sidecar
from streammix.pipeline.config import BuildError, DomainSpec
from streammix.pipeline.pairs import PairsBuildConfig, describe_sidecar_columns, run_pairs_build

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega").split()


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streammix.demo.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    texts = [_sentence(rng, 30) for _ in range(200)] + ["What is 2 + 3? The answer is 5."] * 20
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok", vocab_size=300)


def _on_records(count: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"prompt": f"What is {i} + 3?", "chosen": f"The answer is {i + 3}.",
             "rejected": f"The answer is {i + 4}.", "source": "policy", "chosen_reward": 1.0,
             "rejected_reward": float(rng.uniform(-1, 0))} for i in range(count)]


def _off_records(count: int) -> list[dict]:
    rng = np.random.default_rng(2)
    return [{"question": _sentence(rng, 5), "good": _sentence(rng, 8), "bad": _sentence(rng, 3)}
            for _ in range(count)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    on = _on_records(40)
    bad_lines = [
        "{not json",
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),
        json.dumps({"prompt": "p", "chosen": "  ", "rejected": "x"}),
        json.dumps({"prompt": "p", "chosen": "x"}),
        json.dumps({"prompt": "p", "chosen": "x", "rejected": 3}),
        json.dumps({"prompt": "p", "chosen": "x", "rejected": "y", "chosen_reward": "high",
                    "rejected_reward": 0.0}),
        json.dumps({"prompt": " ".join(["alpha"] * 200), "chosen": "x", "rejected": "y",
                    "chosen_reward": 1.0, "rejected_reward": 0.0}),
    ]
    lines = [json.dumps(r) for r in on[:20]] + bad_lines + [""] + [json.dumps(r) for r in on[20:]]
    (root / "on.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.Table.from_pylist(_off_records(40)), root / "off.parquet", row_group_size=16)
    return {"root": root, "on": root / "on.jsonl", "off": root / "off.parquet"}


def _args(inputs: dict[str, Path], tokenizer_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--pairs", "--domain", f"on={inputs['on']}", "--domain", f"off={inputs['off']}",
            "--tokenizer", str(tokenizer_dir), "--out", str(out), "--quiet",
            "--chosen-score-field", "chosen_reward", "--rejected-score-field", "rejected_reward",
            "--max-pair-tokens", "64", *extra]


@pytest.fixture(scope="module")
def built(inputs: dict[str, Path], tokenizer_dir: Path) -> Path:
    out = inputs["root"] / "out"
    config = PairsBuildConfig(
        domains=(DomainSpec(name="on", source=str(inputs["on"])),),
        out=str(out), tokenizer=str(tokenizer_dir), max_tokens=64, progress=False,
        fields=PairFields(chosen_score="chosen_reward", rejected_score="rejected_reward"),
    )
    run_pairs_build(config)
    return out


def test_pair_records_round_trip_through_the_build(built: Path, tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    manifest = read_manifest(built)
    assert manifest.raw["kind"] == "pairs"
    entry = manifest.domain("on")
    assert entry.num_samples == 40 and entry.rejected == 7
    rejects = [json.loads(line) for line in (built / "rejects.jsonl").read_text().splitlines()]
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons == sorted([
        "malformed json", "chosen equals rejected", "empty or whitespace-only pair side",
        "missing pair field", "pair field is not a string", "pair score is not a finite number",
        "pair longer than --max-pair-tokens",
    ])
    assert all(r["source"].startswith(str(built.parent / "on.jsonl") + ":") for r in rejects)
    assert {r["source"].rsplit(":", 1)[1] for r in rejects} == {str(n) for n in range(21, 28)}

    sidecar = read_sidecar(built / "on")
    assert sidecar.column_names == describe_sidecar_columns(True)
    records = _on_records(40)
    margins = [r["chosen_reward"] - r["rejected_reward"] for r in records]
    np.testing.assert_allclose(sidecar["margin"].to_numpy(), margins, rtol=1e-6)
    assert set(sidecar["pair_source"].to_pylist()) == {"policy"}
    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer(records[5]["prompt"], add_special_tokens=False)["input_ids"]
    chosen_ids = tokenizer(records[5]["chosen"], add_special_tokens=False)["input_ids"] + [eos]
    assert sidecar["prompt_num_tokens"][5].as_py() == len(prompt_ids)
    assert sidecar["chosen_num_tokens"][5].as_py() == len(chosen_ids)

    from streaming import StreamingDataset

    gc.collect()
    upstream = StreamingDataset(local=str(built / "on"), batch_size=1, shuffle=False)
    sample = upstream[5]
    assert sample["prompt"] == records[5]["prompt"]
    assert sample["prompt_tokens"].tolist() == prompt_ids
    assert sample["chosen_tokens"].tolist() == chosen_ids
    assert sample["rejected_tokens"][-1] == eos
    assert sample["num_tokens"] == sidecar["num_tokens"][5].as_py()
    assert sample["domain"] == 0


def test_two_domains_mixed_half_and_half_feed_dpo(inputs: dict[str, Path], tokenizer_dir: Path
                                                  ) -> None:
    from streammix import MixingConfig, StreamMixDataset
    from streammix.composer.dpo import DPOCollator

    out = inputs["root"] / "two"
    # The off domain's records use other field names: convert them to the default names.
    off = inputs["root"] / "off-renamed.jsonl"
    off.write_text("".join(
        json.dumps({"prompt": r["question"], "chosen": r["good"], "rejected": r["bad"],
                    "source": "templates"}) + "\n" for r in _off_records(40)))
    assert build_main(["--pairs", "--domain", f"on={inputs['on']}", "--domain", f"off={off}",
                       "--tokenizer", str(tokenizer_dir), "--out", str(out), "--quiet",
                       "--max-pair-tokens", "64", "--val-fraction", "0.2"]) == 0
    manifest = read_manifest(out)
    assert manifest.domain_names == ("on", "off")
    on, off_entry = manifest.domain("on"), manifest.domain("off")
    assert on.num_samples + on.val_num_samples == 41  # the score-less record is fine here
    assert off_entry.num_samples + off_entry.val_num_samples == 40
    assert 0 < off_entry.val_num_samples < 20
    train_prompts = set(read_sidecar(out / "off")["source"].to_pylist())
    assert not train_prompts & set(read_sidecar(out / "off-val")["source"].to_pylist())

    gc.collect()
    dataset = StreamMixDataset(local=str(out), batch_size=8, mixing=MixingConfig(
        domain_weights={"on": 0.5, "off": 0.5}, seed=3))
    samples = [s for _, s in zip(range(32), iter(dataset))]
    domains = [int(s["domain"]) for s in samples]
    assert domains.count(0) == domains.count(1) == 16  # SimpleMix: 0.5/0.5 per example
    batch = DPOCollator(max_seq_len=64, pad_id=0)(samples[:8])
    assert batch["chosen_input_ids"].shape[0] == 8
    assert sorted(set(batch["domain"].tolist())) == [0, 1]


def test_build_is_resumable_and_reruns_do_nothing(inputs: dict[str, Path], tokenizer_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    from streammix.pipeline import pairs as pairs_module

    clean, resumed = inputs["root"] / "clean", inputs["root"] / "resumed"
    off = inputs["root"] / "off2.jsonl"
    off.write_text("".join(json.dumps({"prompt": r["question"], "chosen": r["good"],
                                       "rejected": r["bad"]}) + "\n" for r in _off_records(10)))
    args = ["--pairs", "--domain", f"on={inputs['on']}", "--domain", f"off={off}", "--tokenizer",
            str(tokenizer_dir), "--quiet", "--max-pair-tokens", "64"]
    assert build_main([*args, "--out", str(clean)]) == 0
    original = pairs_module._DomainWriter.domain

    def killed_on_second(self, domain_id, spec, paths):
        if domain_id == 1:
            raise KeyboardInterrupt
        return original(self, domain_id, spec, paths)

    monkeypatch.setattr(pairs_module._DomainWriter, "domain", killed_on_second)
    assert build_main([*args, "--out", str(resumed)]) == 130
    assert not (resumed / "streammix.yaml").exists() and (resumed / "on").exists()
    monkeypatch.setattr(pairs_module._DomainWriter, "domain", original)
    assert build_main([*args, "--out", str(resumed)]) == 0
    for name in ("on/index.json", "off/index.json", "on/streammix.parquet", "rejects.jsonl",
                 "streammix.yaml"):
        assert (clean / name).read_bytes() == (resumed / name).read_bytes(), name
    assert build_main([*args[:-1], "64", "--out", str(clean)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        build_main([*args[:-2], "--max-pair-tokens", "65", "--out", str(clean)])
    assert exit_info.value.code == 2
    assert "different configuration" in capsys.readouterr().err


def test_pair_writer_matches_mds_writer(tmp_path: Path) -> None:
    from streaming import MDSWriter

    from streammix.format.pairs import pair_columns

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(50):
        texts = {"prompt": f"prompt {i}", "chosen": "c" * (i + 1), "rejected": "r é" * i + "!"}
        tokens = {side: rng.integers(0, 70000, size=int(rng.integers(1, 300))).tolist()
                  for side in texts}
        pairs.append((texts, tokens))
    with PairStreamWriter(tmp_path / "ours", token_dtype="uint32", compression="zstd",
                          size_limit=4096) as writer:
        for texts, tokens in pairs:
            writer.write_pair(texts, tokens, 3)
    with MDSWriter(columns=pair_columns("uint32"), out=str(tmp_path / "theirs"),
                   compression="zstd", size_limit=4096) as writer:
        for texts, tokens in pairs:
            sample = {"domain": np.int32(3), **texts,
                      "num_tokens": np.int32(sum(len(t) for t in tokens.values()))}
            sample |= {f"{s}_tokens": np.asarray(t, dtype=np.uint32) for s, t in tokens.items()}
            writer.write(sample)
    ours = {p.name: p.read_bytes() for p in (tmp_path / "ours").iterdir()}
    theirs = {p.name: p.read_bytes() for p in (tmp_path / "theirs").iterdir()}
    assert len(ours) > 3 and ours == theirs
    with pytest.raises(TypeError), PairStreamWriter(tmp_path / "x", token_dtype="uint16",
                                                    compression=None, size_limit=None) as w:
        w.write_table(pa.table({"text": ["a"]}), 0)
    with pytest.raises(ValueError), PairStreamWriter(tmp_path / "y", token_dtype="uint16",
                                                     compression=None, size_limit=None) as w:
        w.write_pair({"prompt": "a", "chosen": "b", "rejected": "c"},
                     {"prompt": [1], "chosen": [70000], "rejected": [2]}, 0)


def test_reader_locations_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "a", "c": "b", "r": "c", "src": 7}\n\n{"q": "a", "c": "b", "r": "d"}\n')
    items = list(read_pair_records(str(path), PairFields(prompt="q", chosen="c", rejected="r",
                                                         source="src")))
    assert isinstance(items[0], RecordProblem) and items[0].source.endswith("p.jsonl:1")
    assert items[1].location.endswith("p.jsonl:3") and items[1].margin is None


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: PairFields(prompt=""), ValueError),
        (lambda: PairFields(chosen_score="s"), ValueError),
        (lambda: PairFields(chosen="prompt"), ValueError),
        (lambda: PairsBuildConfig(domains=(), out="x", tokenizer="t"), BuildError),
        (lambda: PairsBuildConfig(domains=(DomainSpec(name="a-val", source="s"),), out="x",
                                  tokenizer="t"), BuildError),
        (lambda: PairsBuildConfig(domains=(DomainSpec(name="a", source="s"),), out="x",
                                  tokenizer=""), BuildError),
        (lambda: PairsBuildConfig(domains=(DomainSpec(name="a", source="s"),), out="x",
                                  tokenizer="t", max_tokens=1), BuildError),
        (lambda: PairsBuildConfig(domains=(DomainSpec(name="a", source="s"),), out="x",
                                  tokenizer="t", val_fraction=1.0), BuildError),
        (lambda: PairsBuildConfig(domains=(DomainSpec(name="a", source="s"),), out="x",
                                  tokenizer="t", compression="lz9"), BuildError),
    ],
)
def test_bad_configuration(build, error: type) -> None:
    with pytest.raises(error):
        build()


def test_cli_errors(tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plain text")
    with pytest.raises(SystemExit) as exit_info:
        build_main(["--pairs", "--domain", f"a={text}", "--tokenizer", str(tokenizer_dir),
                    "--out", str(tmp_path / "o"), "--quiet"])
    assert exit_info.value.code == 2
    assert "must be jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--pairs", "--domain", "a", "--tokenizer", "t", "--out", "o"])
    assert "expected NAME=PATH_OR_GLOB" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--pairs", "--domain", f"a={text}", "--tokenizer", str(tmp_path / "none"),
                    "--out", str(tmp_path / "o")])
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--pairs", "--domain", f"a={text}", "--out", str(tmp_path / "o")])
    assert "--tokenizer" in capsys.readouterr().err

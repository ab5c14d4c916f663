"""``streammix-build`` as a real process: help, one-line errors, workers, SIGKILL and rerun."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))

from build_helpers import (  # noqa: E402
    generated_records,
    make_tokenizer,
    output_files,
    stdlib_glob,
    write_jsonl,
)

CLI = [sys.executable, "-m", "streammix.cli.build"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streammix-build: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_help_shows_examples() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--domain" in result.stdout


def _main_error(capsys: pytest.CaptureFixture, args: list[str], fragment: str) -> None:
    from streammix.cli.build import main

    with pytest.raises(SystemExit) as stopped:
        main(args)
    captured = capsys.readouterr()
    _one_line_error(
        subprocess.CompletedProcess(args, stopped.value.code, captured.out, captured.err), fragment
    )


def test_user_mistakes_are_one_line_errors(tmp_path: Path, capsys) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", generated_records(5))
    bad = write_jsonl(tmp_path / "bad.jsonl", generated_records(2), raw_lines=[b"{oops"])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("someone else's")
    (tmp_path / "cfg.yaml").write_text(f"domains: {{a: {good}}}\nbogus: 1\n")
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    out = str(tmp_path / "out")
    cases = [
        (["--domain", "a", "--out", out], "expected NAME=PATH_OR_GLOB"),
        (["--domain", f"a={good}", "--domain", f"a={good}", "--out", out], "two domains"),
        (["--domain", f"a={tmp_path}/nothing*.jsonl", "--out", out], "no input files"),
        (
            ["--domain", f"a={good}", "--out", out, "--tokenizer", str(tmp_path / "no")],
            "--tokenizer",
        ),
        (["--domain", f"a={good}", "--out", str(tmp_path / "taken")], "holds no streammix"),
        (["--domain", f"a={good}", "--out", out, "--val-fraction", "2"], "val_fraction"),
        (["--domain", f"a={good}", "--out", out, "--workers", "0"], "--workers"),
        (["--domain", f"a={good}", "--out", out, "--max-doc-bytes", "lots"], "not a size"),
        (["--domain", f"a={good}", "--out", out, "--quality", "magic"], "unknown scorer"),
        (["--domain", f"a={good}", "--out", out, "--shingle-size", "0"], "shingle"),
        (["--domain", f"a={good}", "--out", out, "--compression", "lz9"], "compression"),
        (["--domain", f"a={good}", "--out", out, "--minhash-perm", "x"], "invalid int"),
        (["--config", str(tmp_path / "cfg.yaml"), "--out", out], "unknown setting(s) bogus"),
        (["--config", str(tmp_path / "none.yaml"), "--out", out], "--config"),
        (["--config", str(tmp_path / "list.yaml"), "--out", out], "mapping"),
        (["--domain", f"a={good}"], "no output folder"),
        ([], "no domains"),
    ]
    for args, fragment in cases:
        _main_error(capsys, args, fragment)
    assert not Path(out).exists()
    _main_error(
        capsys,
        ["--domain", f"a={bad}", "--out", out, "--strict", "--quiet"],
        "bad.jsonl:3: malformed json",
    )


def test_unreadable_inputs_stop_the_build_with_one_line(tmp_path: Path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    _main_error(
        capsys,
        ["--domain", f"a={tmp_path / 'bad.jsonl.gz'}", "--out", str(tmp_path / "o1"), "--quiet"],
        "cannot read",
    )
    _main_error(
        capsys,
        ["--domain", f"a={tmp_path / 'nocol.parquet'}", "--out", str(tmp_path / "o2"), "--quiet"],
        "has no column 'text'",
    )


def test_errors_from_a_real_process_have_no_traceback(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "a.jsonl", generated_records(5))
    _one_line_error(
        _run("--domain", f"a={good}", "--domain", f"a={good}", "--out", str(tmp_path / "o")),
        "two domains are named 'a'",
    )
    _one_line_error(
        _run("--domain", f"a={good}", "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path)),
        "cannot load a tokenizer",
    )


def test_yaml_config_and_flags_agree(tmp_path: Path, capsys) -> None:
    from streammix.cli.build import build_parser, config_from_args, main

    good = write_jsonl(tmp_path / "a.jsonl", generated_records(40))
    (tmp_path / "cfg.yaml").write_text(
        f"domains:\n  - name: a\n    path: {good}\nval-samples: 4\nshard_size: 16kb\n"
        "compression: none\nshingle_size: 3\n"
    )
    yaml_args = ["--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "y")]
    flag_args = [
        "--domain",
        f"a={good}",
        "--val-samples",
        "4",
        "--shard-size",
        "16384",
        "--compression",
        "none",
        "--shingle-size",
        "3",
        "--out",
        str(tmp_path / "y"),
    ]
    from_yaml = config_from_args(build_parser().parse_args(yaml_args))
    assert from_yaml == config_from_args(build_parser().parse_args(flag_args))
    assert from_yaml.size_limit == 16384 and from_yaml.compression is None
    overridden = config_from_args(build_parser().parse_args([*yaml_args, "--val-samples", "2"]))
    assert overridden.val_samples == 2
    assert main(yaml_args) == 0
    assert "total" in capsys.readouterr().out
    assert main(yaml_args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*yaml_args, "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def _corpus(tmp_path: Path, docs: int) -> list[str]:
    web = write_jsonl(
        tmp_path / "web.jsonl", generated_records(docs, seed=3) * 1, raw_lines=[b"{broken"]
    )
    return [
        "--domain",
        f"web={web}",
        "--domain",
        f"code={stdlib_glob('email')}",
        "--domain",
        f"json={stdlib_glob('json')}",
    ]


def test_output_does_not_depend_on_workers(tmp_path: Path, tokenizer: Path) -> None:
    from streammix.cli.build import main

    args = [
        *_corpus(tmp_path, 600),
        "--tokenizer",
        str(tokenizer),
        "--val-fraction",
        "0.1",
        "--dedup",
        "--unit-size",
        "24kb",
        "--shard-size",
        "64kb",
        "--quiet",
    ]
    two = _run(*args, "--workers", "2", "--out", str(tmp_path / "w2"))
    assert two.returncode == 0, two.stderr
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "w1")]) == 0
    files = output_files(tmp_path / "w1")
    assert files == output_files(tmp_path / "w2")
    assert any(name.endswith(".mds.zstd") for name in files)
    assert len([n for n in files if n.endswith("streammix.parquet")]) == 6


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "the build did not get there in time"
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _kill_and_rerun(tmp_path: Path, docs: int, moments: list) -> None:
    from streammix.cli.build import main

    args = [
        *_corpus(tmp_path, docs),
        "--val-fraction",
        "0.05",
        "--dedup",
        "--unit-size",
        "32kb",
        "--shard-size",
        "32kb",
        "--workers",
        "2",
        "--quiet",
    ]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "out"
    for moment in moments:
        process = subprocess.Popen(
            [*CLI, *args, "--out", str(out)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(functools.partial(moment, out), process)
        finally:
            _kill(process)
        assert not (out / "streammix.yaml").exists()
    final = _run(*args, "--out", str(out))
    assert final.returncode == 0, final.stderr
    assert output_files(out) == output_files(tmp_path / "ref")


def _units_done(out: Path, count: int) -> bool:
    return len(list((out / ".streammix-work" / "units").glob("*.parquet"))) >= count


def test_sigkill_and_rerun_gives_the_same_output(tmp_path: Path) -> None:
    _kill_and_rerun(
        tmp_path,
        2500,
        [
            lambda out: _units_done(out, 3),  # during prepare
            lambda out: (out / "web").is_dir(),  # during write
        ],
    )


@pytest.mark.slow
def test_sigkill_at_many_moments_and_rerun_gives_the_same_output(tmp_path: Path) -> None:
    _kill_and_rerun(
        tmp_path,
        8000,
        [
            lambda out: (out / ".streammix-work" / "plan.json").exists(),
            lambda out: _units_done(out, 2),
            lambda out: _units_done(out, 8),
            lambda out: (out / ".streammix-work" / "cluster.parquet").exists(),
            lambda out: (out / "web").is_dir(),
            lambda out: (out / "code").is_dir(),
        ],
    )

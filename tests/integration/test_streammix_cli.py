"""``streammix`` (plan, plot-mixing, demo): bad input is a non-zero exit naming the cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))

from build_helpers import generated_records, stdlib_glob, write_jsonl  # noqa: E402

CLI = [sys.executable, "-m", "streammix.cli.main"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from streammix.cli.main import main

    try:
        code = main(list(args))
    except SystemExit as stopped:  # argparse errors
        code = stopped.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small untokenized domains (a budget in bytes)."""
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.local import run_build

    tmp = tmp_path_factory.mktemp("plan")
    web = write_jsonl(tmp / "web.jsonl", generated_records(60, seed=1, prefix="web"))
    news = write_jsonl(tmp / "news.jsonl", generated_records(40, seed=2, prefix="news"))
    sources = {"web": str(web), "news": str(news), "code": stdlib_glob("json")}
    out = tmp / "built"
    run_build(
        BuildConfig(
            domains=tuple(DomainSpec(name=n, source=s) for n, s in sources.items()),
            out=str(out),
            workers=0,
            progress=False,
            minhash_num_perm=32,
        )
    )
    return out


def test_help_texts_have_no_rst_markup() -> None:
    for args in (["--help"], ["plan", "--help"], ["plot-mixing", "--help"], ["demo", "--help"]):
        result = _run(*args)
        assert result.returncode == 0, result.stderr
        assert "`" not in result.stdout, result.stdout
    assert "--allow-shortfall" in _run("plan", "--help").stdout


def test_a_budget_the_build_cannot_fill_is_an_error(build: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.npz"
    result = _run(
        "plan", str(build), "--token-budget", "2e9", "--max-repeats", "4", "--out", str(plan)
    )
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert "covers only" in line and "--max-repeats 4" in line and "--allow-shortfall" in line
    assert not plan.exists()


def test_a_domain_share_cap_that_cannot_fill_the_budget_is_an_error(
    build: Path, tmp_path: Path, capsys
) -> None:
    plan = tmp_path / "plan.npz"
    code, _, err = _main(capsys, "plan", str(build), "--max-domain-share", "0.1", "--out", str(plan))
    assert code == 2
    assert "--max-domain-share 0.1 with 3 domains caps the plan at 30%" in _error_line(err)
    assert not plan.exists()
    code, out, err = _main(
        capsys, "plan", str(build), "--max-domain-share", "0.1", "--allow-shortfall", "--out",
        str(plan),
    )
    assert code == 0 and "warning: the plan covers only" in err and plan.exists()


def test_a_plan_file_is_written_with_the_usual_permissions(build: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.npz"
    old = os.umask(0o022)
    try:
        from streammix.cli.main import main

        assert main(["plan", str(build), "--out", str(plan)]) == 0
    finally:
        os.umask(old)
    assert plan.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["plan.npz"]  # no temporary file left


@pytest.mark.parametrize(
    "args",
    [
        ["--domains", "web,news", "{build}"],
        ["{build}", "--domains", "web,news"],
        ["--domains", "web", "--domains", "news", "{build}"],
    ],
    ids=["list-before-build", "list-after-build", "repeated"],
)
def test_domains_never_swallow_the_build_folder(build: Path, capsys, args: list[str]) -> None:
    code, out, err = _main(capsys, "plan", *[a.format(build=build) for a in args])
    assert code == 0, err
    table = out.split("\nplanned ", 1)[0].splitlines()[1:]  # the first table's rows
    assert [line.split()[0] for line in table] == ["web", "news"]


def test_domains_separated_by_spaces_are_an_error_with_a_hint(build: Path, capsys) -> None:
    code, out, err = _main(capsys, "plan", "--domains", "web", "news", str(build))
    assert code == 2 and out == ""
    line = _error_line(err)
    assert f"unrecognized arguments: {build}" in line and "--domains web,code" in line


def test_a_plan_file_name_is_checked_before_any_work(build: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _main(capsys, "plan", str(build), "--out", str(tmp_path / "myplan"))
    assert code == 2 and out == ""  # no report printed first
    assert "a plan file ends in .npz" in _error_line(err) and "myplan.npz" in err
    assert not list(tmp_path.iterdir())


def test_plot_mixing_names_the_wrong_kind_of_file(build: Path, tmp_path: Path, capsys) -> None:
    from streammix.cli.main import main

    plan = tmp_path / "plan.npz"
    assert main(["plan", str(build), "--out", str(plan)]) == 0
    capsys.readouterr()
    (tmp_path / "other.json").write_text('{"weights": [0.5, 0.5]}')
    (tmp_path / "broken.json").write_text('{"history": [')
    cases = {
        plan: "is a zip archive (a SampleMix plan .npz?",
        tmp_path / "other.json": "JSON without a 'history' key",
        tmp_path / "broken.json": "is not JSON (Expecting value: line 1 column 14",
        tmp_path / "missing.json": "no history file at",
    }
    for path, fragment in cases.items():
        code, _, err = _main(capsys, "plot-mixing", str(path), "--out", str(tmp_path / "m.png"))
        line = _error_line(err)
        assert code == 2 and fragment in line, line
        if path.exists():
            assert "expected the history that OnlineMixing(history_path=...) writes" in line
    assert not (tmp_path / "m.png").exists()


def test_demo_refuses_an_unknown_policy_before_doing_anything(tmp_path: Path) -> None:
    result = _run("demo", "--policy", "nope", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert "invalid choice: 'nope'" in line and "aioli" in line
    assert not (tmp_path / "demo").exists()


def test_demo_config_checks_the_policy_too() -> None:
    from streammix.demo.run import DemoConfig

    with pytest.raises(ValueError, match="online policies"):
        DemoConfig(policy="doremi")


def test_plan_plot_labels_axes_marks_ties_and_says_what_to_see(build: Path, tmp_path: Path) -> None:
    import numpy as np

    from streammix.cli.main import main
    from streammix.metadata.samplemix import SampleMixConfig, samplemix_plan
    from streammix.pipeline.plan_plots import caption, plan_figure
    from streammix.pipeline.samplemix_plan import BuildPlan

    assert main(["plan", str(build), "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "plan.png").read_bytes().startswith(b"\x89PNG")
    quality = (np.full(80, 0.9), np.linspace(0.0, 1.0, 20))  # 80 of 100 samples tie
    diversity = (np.linspace(0.0, 1.0, 80), np.linspace(0.0, 1.0, 20))
    tokens = (np.full(80, 10), np.full(20, 10))
    plan = samplemix_plan(
        quality=np.concatenate(quality),
        diversity=np.concatenate(diversity),
        num_tokens=np.concatenate(tokens),
        domain_ids=np.repeat([0, 1], [80, 20]),
        config=SampleMixConfig(alpha=0.5, token_budget=2000),
    )
    result = BuildPlan(("a", "b"), "tokens", quality, diversity, tokens, plan, {})
    figure = plan_figure(result)
    quality_ax, diversity_ax, plan_ax = figure.axes
    for ax in figure.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert [t.get_text() for t in figure.texts] == [caption(0.5)]
    assert caption(0.5).startswith("What to see:") and caption(0.5).count(". ") == 0
    notes = [t.get_text() for t in quality_ax.texts]
    assert notes == ["tie: 80% of samples\nshare the value 0.90",
                     "a: 1 distinct, top 100%\nb: 20 distinct, top 5%"]  # and the spread
    assert not [t for t in diversity_ax.texts if t.get_text().startswith("tie")]
    assert "2,000 tokens" in plan_ax.get_title()


def test_plot_mixing_draws_a_history_file(tmp_path: Path, capsys) -> None:
    import json

    history = [
        {"step": 0, "phase": "baseline", "weights": [0.5, 0.5], "val_loss": [3.0, 2.0]},
        {"step": 0, "phase": "probe:0", "weights": [0.9, 0.1]},
        {"step": 4, "phase": "train", "weights": [0.3, 0.7], "train_loss": [2.5, 1.9],
         "num_steps": 20},
    ]
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"domains": ["web", "code"], "history": history}))
    code, out, err = _main(capsys, "plot-mixing", str(path), "--out", str(tmp_path / "m.png"))
    assert code == 0, err
    assert (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG") and "m.png" in out

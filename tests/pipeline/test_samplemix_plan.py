"""The plan report and plot show how spread quality and diversity are per domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from build_helpers import generated_records, stdlib_glob, write_jsonl

from streammix.metadata.samplemix import SampleMixConfig
from streammix.pipeline.config import BuildConfig, DomainSpec
from streammix.pipeline.local import run_build
from streammix.pipeline.plan_plots import plot_plan
from streammix.pipeline.samplemix_plan import format_report, plan_build, score_spread


def test_score_spread_counts_ties_and_quantiles() -> None:
    values = np.array([0.5] * 6 + [0.1, 0.2, 0.3, 0.9])
    spread = score_spread(values)
    assert spread["distinct"] == 5 and spread["top_share"] == pytest.approx(0.6)
    assert spread["quantiles"] == pytest.approx(np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9]))
    assert score_spread(np.zeros(0))["distinct"] == 0


def test_report_and_plot_show_the_spread_of_both_scores(tmp_path: Path) -> None:
    web = write_jsonl(tmp_path / "web.jsonl", generated_records(120, seed=3, prefix="web"))
    config = BuildConfig(
        domains=(
            DomainSpec(name="web", source=str(web)),
            DomainSpec(name="code", source=stdlib_glob()),
        ),
        out=str(tmp_path / "out"),
        workers=0,
        progress=False,
        minhash_num_perm=32,
    )
    run_build(config)
    result = plan_build(config.out, SampleMixConfig(alpha=0.8, token_budget=10**6))
    report = format_report(result)
    assert "score spread" in report
    rows = [line.split() for line in report.splitlines() if line.split()[:1] in (["web"], ["code"])]
    spread_rows = [r for r in rows if r[1] in ("quality", "diversity")]
    assert [r[:2] for r in spread_rows] == [
        ["web", "quality"],
        ["web", "diversity"],
        ["code", "quality"],
        ["code", "diversity"],
    ]
    web_diversity = score_spread(result.diversity[0])
    assert spread_rows[1][2] == str(web_diversity["distinct"]) and len(spread_rows[1]) == 9
    assert plot_plan(result, tmp_path / "plots" / "plan.png").stat().st_size > 0

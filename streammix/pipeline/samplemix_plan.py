"""SampleMix over a finished build: read the sidecars, plan repeat counts, report, plot.

The quality input is the build's rank-normalized quality (sidecar ``quality_norm``), the
diversity input the sidecar's ``diversity``; token counts are ``num_tokens`` when the build
was tokenized, else ``num_bytes`` (a byte budget then). The plan itself is
``streammix.metadata.samplemix.samplemix_plan``; this module only does the I/O around it.

The report ends with how spread each domain's two scores are (:func:`score_spread`): the
number of distinct values, the share of samples holding the most common value and the
10/25/50/75/90% quantiles. SampleMix can only tell samples apart where the scores do; a
score where most samples tie carries no signal.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streammix.format.manifest import read_manifest
from streammix.format.plan import write_plan
from streammix.format.sidecar import index_fingerprint, read_sidecar
from streammix.metadata.samplemix import SampleMixConfig, SampleMixPlan, samplemix_plan


@dataclass(frozen=True)
class BuildPlan:
    names: tuple[str, ...]
    token_unit: str  # "tokens" or "bytes"
    quality: tuple[np.ndarray, ...]  # per domain, normalized
    diversity: tuple[np.ndarray, ...]
    num_tokens: tuple[np.ndarray, ...]
    plan: SampleMixPlan
    index_fingerprints: dict[str, str]

    def counts_of(self, name: str) -> np.ndarray:
        d = self.names.index(name)
        return self.plan.counts[self.plan.domain_ids == d]


def default_budget(build: str | os.PathLike) -> int:
    """One pass over every sample of the build, in its token unit."""
    manifest = read_manifest(build)
    tokens = sum(d.num_tokens for d in manifest.domains)
    return int(tokens if tokens > 0 else sum(d.num_bytes for d in manifest.domains))


def plan_build(
    build: str | os.PathLike, config: SampleMixConfig, domains: tuple[str, ...] | None = None
) -> BuildPlan:
    manifest = read_manifest(build)
    names = tuple(domains) if domains is not None else manifest.domain_names
    unknown = [n for n in names if n not in manifest.domain_names]
    if unknown:
        raise ValueError(
            f"domains {unknown} are not in the build; it has {list(manifest.domain_names)}"
        )
    quality, diversity, tokens, fingerprints = [], [], [], {}
    unit = "tokens" if manifest.token_dtype else "bytes"
    for name in names:
        folder = manifest.domain(name).dir
        table = read_sidecar(
            folder,
            columns=[
                "quality_norm",
                "diversity",
                "num_tokens" if unit == "tokens" else "num_bytes",
            ],
        )
        quality.append(np.asarray(table["quality_norm"], dtype=np.float64))
        diversity.append(np.asarray(table["diversity"], dtype=np.float64))
        tokens.append(np.asarray(table.column(2), dtype=np.int64))
        fingerprints[name] = index_fingerprint(folder)
    domain_ids = np.concatenate([np.full(len(q), d, dtype=np.int64) for d, q in enumerate(quality)])
    plan = samplemix_plan(
        quality=np.concatenate(quality),
        diversity=np.concatenate(diversity),
        num_tokens=np.concatenate(tokens),
        domain_ids=domain_ids,
        config=config,
    )
    return BuildPlan(
        names, unit, tuple(quality), tuple(diversity), tuple(tokens), plan, fingerprints
    )


SHORTFALL_TOLERANCE = 1e-6  # of the budget: float noise of the cap solver, not a shortfall


def shortfall_problem(result: BuildPlan, config: SampleMixConfig) -> str | None:
    """Why the plan falls short of ``config.token_budget``, or None when it covers it.

    The plan can only fall short when a cap binds: ``max_repeats_per_sample`` allows at most
    ``R`` times the build's tokens, ``max_domain_share`` at most ``share * domains`` of the
    budget. ``streammix plan`` refuses such a plan unless ``--allow-shortfall`` is given.
    """
    budget = int(config.token_budget)
    short = float(result.plan.report.get("shortfall_tokens", 0.0))
    if short <= max(1.0, SHORTFALL_TOLERANCE * budget):
        return None
    unit = result.token_unit
    causes, remedies = [], []
    if config.max_repeats_per_sample is not None:
        total = sum(int(t.sum()) for t in result.num_tokens)
        causes.append(
            f"--max-repeats {config.max_repeats_per_sample} lets the build's {total:,} {unit} "
            f"fill at most {config.max_repeats_per_sample * total:,}"
        )
        remedies.append("lower --token-budget or raise --max-repeats")
    share, count = config.max_domain_share, len(result.names)
    if share is not None and share * count < 1.0:
        causes.append(
            f"--max-domain-share {share:g} with {count} domains caps the plan at "
            f"{share * count:.0%} of the budget"
        )
        remedies.append(f"raise --max-domain-share to at least 1/{count}")
    covered = budget - short
    return (
        f"the plan covers only {covered:,.0f} of a budget of {budget:,} {unit} "
        f"({100 * covered / budget:.3g}%): "
        + "; ".join(causes or ["the caps bind"])
        + "; "
        + ", ".join(remedies or ["loosen the caps"])
    )


def save_build_plan(result: BuildPlan, path: str | os.PathLike, config: SampleMixConfig) -> Path:
    return write_plan(
        path,
        counts={n: result.counts_of(n) for n in result.names},
        index_fingerprints=result.index_fingerprints,
        config=asdict(config) | {"token_unit": result.token_unit},
        report=_jsonable(result.plan.report),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_report(result: BuildPlan) -> str:
    """A plain-text table of the plan, per domain."""
    report = result.plan.report
    unit = result.token_unit
    lines = [
        f"{'domain':<16}{'samples':>9}{unit:>12}{'share':>8}{'-> plan':>9}"
        f"{'planned ' + unit:>16}{'never drawn':>13}  repeats (count: samples)"
    ]
    for d, name in enumerate(result.names):
        counts = result.counts_of(name)
        tokens = result.num_tokens[d]
        before = tokens.sum() / sum(t.sum() for t in result.num_tokens)
        planned = int(np.dot(counts, tokens))
        after = planned / max(1, int(np.dot(result.plan.counts, np.concatenate(result.num_tokens))))
        values, freq = np.unique(counts, return_counts=True)
        histogram = ", ".join(f"{v}: {f}" for v, f in zip(values.tolist(), freq.tolist()))
        lines.append(
            f"{name:<16}{len(counts):>9}{int(tokens.sum()):>12}{before:>8.1%}"
            f"{after:>9.1%}{planned:>16}{int((counts == 0).sum()):>13}  {histogram}"
        )
    budget = int(report.get("token_budget", 0))
    short = round(float(report.get("shortfall_tokens", 0.0)))
    lines.append(
        f"planned {unit}: {report.get('planned_tokens')} of a budget of {budget}"
        + (f" (shortfall {short}, {short / max(budget, 1):.1%} of the budget)" if short else "")
    )
    lines.append(format_spread(result))
    return "\n".join(lines)


SPREAD_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def score_spread(values: np.ndarray) -> dict[str, Any]:
    """Distinct values, share of the most common value and quantiles of one score."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"distinct": 0, "top_share": 0.0, "quantiles": [float("nan")] * 5}
    _, counts = np.unique(values, return_counts=True)
    return {
        "distinct": int(counts.size),
        "top_share": float(counts.max() / values.size),
        "quantiles": np.quantile(values, SPREAD_QUANTILES).tolist(),
    }


def format_spread(result: BuildPlan) -> str:
    """Per domain and score: distinct values, most common value's share, quantiles."""
    header = "  ".join(f"q{int(q * 100):02d}" for q in SPREAD_QUANTILES)
    lines = [
        "score spread (normalized scores as planned):",
        f"{'domain':<16}{'score':<11}{'distinct':>9}{'top share':>11}  {header}",
    ]
    for name, quality, diversity in zip(result.names, result.quality, result.diversity):
        for score, values in (("quality", quality), ("diversity", diversity)):
            spread = score_spread(values)
            quantiles = "  ".join(f"{q:.2f}" for q in spread["quantiles"])
            lines.append(
                f"{name:<16}{score:<11}{spread['distinct']:>9}{spread['top_share']:>11.1%}"
                f"  {quantiles}"
            )
    return "\n".join(lines)

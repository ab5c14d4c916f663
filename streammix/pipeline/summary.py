"""The manifest's content and the summary a build prints at the end.

``manifest_data`` assembles ``streammix.yaml`` from the configuration and what the stages
produced (plain YAML types only, no timestamps); ``BuildSummary`` is read back from a
manifest, so a finished build and a rerun of it print the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streammix.format.manifest import MANIFEST_VERSION, BuildManifest
from streammix.pipeline.config import BuildConfig
from streammix.pipeline.plan import Plan
from streammix.pipeline.prepare import UnitStats
from streammix.pipeline.write import StreamResult


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import numpy
    import pyarrow

    import streammix

    return {
        "streammix": streammix.__version__,
        "streaming": version("mosaicml-streaming"),
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
    }


def manifest_data(
    config: BuildConfig,
    tokenizer_info: dict[str, Any],
    streams: list[StreamResult],
    stats: list[UnitStats],
    removed: dict[str, int],
    plan: Plan,
) -> dict[str, Any]:
    """The content of ``streammix.yaml`` (see ``streammix.format.manifest``)."""
    unit_domain = {unit.index: unit.domain for unit in plan.units}
    rejected = {spec.name: 0 for spec in config.domains}
    read = {spec.name: 0 for spec in config.domains}
    for item in stats:
        rejected[unit_domain[item.index]] += item.num_rejects
        read[unit_domain[item.index]] += item.num_docs + item.num_rejects
    by_key = {(s.domain, s.split): s for s in streams}
    domains = []
    for domain_id, spec in enumerate(config.domains):
        train = by_key[(spec.name, "train")]
        val = by_key.get((spec.name, "val"))
        domains.append(
            {
                "name": spec.name,
                "id": domain_id,
                "dir": train.dirname,
                "num_samples": train.num_samples,
                "num_tokens": train.num_tokens,
                "num_bytes": train.num_bytes,
                "index_sha256": train.index_sha256,
                "val": None
                if val is None
                else {
                    "dir": val.dirname,
                    "num_samples": val.num_samples,
                    "num_tokens": val.num_tokens,
                    "num_bytes": val.num_bytes,
                    "index_sha256": val.index_sha256,
                },
                "records_read": read[spec.name],
                "rejected": rejected[spec.name],
                "removed_duplicates": removed[spec.name],
            }
        )
    fields = config.output_fields()
    return {
        "streammix_manifest": MANIFEST_VERSION,
        "config_fingerprint": config.fingerprint(),
        "domains": domains,
        "tokens": {
            **tokenizer_info,
            "count_field": "num_tokens" if tokenizer_info["dtype"] else "num_bytes",
        },
        "minhash": fields["minhash"],
        "quality": {
            "scorer": config.scorer,
            "normalization": "rank_normalize over the whole build, [0, 1]",
        },
        "dedup": {
            "enabled": config.dedup,
            "threshold": config.dedup_threshold,
            "removed": sum(removed.values()),
            "list": "dedup_removed.jsonl" if config.dedup else None,
        },
        "val": {
            "fraction": config.val_fraction,
            "samples": config.val_samples,
            "seed": config.seed,
        },
        "rejects": {"count": sum(rejected.values()), "list": "rejects.jsonl"},
        "config": fields,
        "versions": _versions(),
    }


@dataclass(frozen=True, kw_only=True)
class BuildSummary:
    """What a build produced, for the end-of-run report."""

    out: Path | str  # the output folder, or the s3:// URL it was uploaded to
    rows: tuple[tuple[str, int, int, int, int, int, int], ...]
    count_field: str
    elapsed: float
    resumed: bool
    input_bytes: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_manifest(
        cls,
        manifest: BuildManifest,
        *,
        elapsed: float,
        resumed: bool,
        input_bytes: int = 0,
        stage_seconds: dict[str, float] | None = None,
    ) -> BuildSummary:
        count_field = manifest.raw["tokens"]["count_field"]
        rows = []
        for entry, raw in zip(manifest.domains, manifest.raw["domains"]):
            amount = entry.num_tokens if count_field == "num_tokens" else entry.num_bytes
            rows.append(
                (
                    entry.name,
                    int(raw["records_read"]),
                    entry.num_samples,
                    entry.val_num_samples,
                    amount,
                    entry.rejected,
                    entry.removed_duplicates,
                )
            )
        return cls(
            out=manifest.out,
            rows=tuple(rows),
            count_field=count_field,
            elapsed=elapsed,
            resumed=resumed,
            input_bytes=input_bytes,
            stage_seconds=dict(stage_seconds or {}),
        )

    @property
    def num_samples(self) -> int:
        return sum(row[2] + row[3] for row in self.rows)

    def format(self) -> str:
        unit = "tokens" if self.count_field == "num_tokens" else "bytes"
        header = ("domain", "read", "train", "val", unit, "rejected", "dup-removed")
        table = [header] + [tuple(str(v) for v in row) for row in self.rows]
        totals = ["total"] + [str(sum(row[i] for row in self.rows)) for i in range(1, 7)]
        table.append(tuple(totals))
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in table
        ]
        if self.resumed and self.elapsed == 0.0:
            lines.append(f"{self.out}: already built with this configuration; nothing to do")
        else:
            read = sum(row[1] for row in self.rows)
            seconds = max(self.elapsed, 1e-9)
            lines.append(
                f"{self.out}: built in {self.elapsed:.1f} s ({read / seconds:,.0f} docs/s,"
                f" {self.input_bytes / seconds / 1e6:,.1f} MB/s); see rejects.jsonl"
                " for skipped records"
            )
            if self.stage_seconds:
                stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
                lines.append(f"stages: {stages}")
        return "\n".join(lines)

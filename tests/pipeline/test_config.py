"""BuildConfig: every invalid setting is a clear BuildError; the fingerprint ignores workers."""

from __future__ import annotations

import dataclasses

import pytest

from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec

ONE = (DomainSpec(name="web", source="web.jsonl"),)


def test_fingerprint_ignores_workers_and_progress_but_not_output_settings() -> None:
    base = BuildConfig(domains=ONE, out="o")
    assert base.fingerprint() == dataclasses.replace(base, workers=4, progress=False).fingerprint()
    assert base.fingerprint() != dataclasses.replace(base, val_fraction=0.1).fingerprint()
    assert base.fingerprint() != dataclasses.replace(base, minhash_seed=2).fingerprint()
    assert base.fingerprint() != dataclasses.replace(base, topic_clusters=7).fingerprint()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"domains": ()}, "no domains"),
        ({"domains": ONE * 2}, "two domains are named 'web'"),
        ({"domains": (DomainSpec(name="a/b", source="x"),)}, "invalid domain name"),
        ({"domains": (DomainSpec(name="web-val", source="x"),)}, "invalid domain name"),
        ({"domains": (DomainSpec(name="-x", source="x"),)}, "invalid domain name"),
        ({"domains": (DomainSpec(name="x", source=""),)}, "empty input path"),
        ({"out": ""}, "no output folder"),
        ({"text_field": ""}, "text-field"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 0.1, "val_samples": 3}, "either --val-fraction or --val-samples"),
        ({"val_samples": -1}, "val-samples"),
        ({"dedup_threshold": 0.0}, "dedup_threshold"),
        ({"max_doc_bytes": 0}, "max_doc_bytes"),
        ({"minhash_num_perm": 0}, "minhash_num_perm"),
        ({"topic_clusters": -1}, "topic-clusters"),
        ({"topic_num_perm": 0}, "topic_num_perm"),
        ({"topic_shingle_size": 0}, "topic_shingle_size"),
        ({"minhash_scheme": "md5"}, "unknown MinHash scheme"),
        ({"seed": -1}, "non-negative"),
        ({"compression": "lzma9000"}, "unknown compression"),
    ],
)
def test_invalid_settings_are_build_errors(changes: dict, message: str) -> None:
    fields = {"domains": ONE, "out": "o", **changes}
    with pytest.raises(BuildError, match=message):
        BuildConfig(**fields)


def test_domains_must_be_domain_specs() -> None:
    with pytest.raises(TypeError, match="DomainSpec"):
        BuildConfig(domains=(("web", "x"),), out="o")

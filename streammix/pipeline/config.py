"""Configuration of one ``streammix-build`` run and the errors a user can cause.

``BuildConfig`` is the only input of ``streammix.pipeline.run_build``. Its ``fingerprint``
(sha256 of the canonical JSON of every field that changes the output) is stored in the
work folder and in the manifest: a rerun with the same fingerprint resumes or reports the
finished build, a different one is refused. ``workers``, ``progress``, ``overwrite``,
``s3_endpoint_url`` and ``staging`` do not change the output and are left out of it.

Inputs and ``out`` may be ``s3://`` (or ``s3a://``) URLs; ``s3_endpoint_url`` names the
server when it is not AWS (``streammix.format.object_store``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
VAL_SUFFIX = "-val"
MINHASH_BACKEND, EMBEDDINGS_BACKEND = "minhash", "embeddings"


class BuildError(ValueError):
    """A user mistake or unusable input; the CLI prints it as one line and exits 2."""


@dataclass(frozen=True, kw_only=True)
class DomainSpec:
    """One domain: its name and the path, directory or glob of its input files."""

    name: str
    source: str


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """Everything ``streammix-build`` needs (YAML and flags are parsed by the CLI only)."""

    domains: tuple[DomainSpec, ...]
    out: str
    text_field: str = "text"
    id_field: str | None = None
    tokenizer: str | None = None
    scorer: str = "heuristic"
    minhash_num_perm: int = 128
    minhash_seed: int = 1
    minhash_scheme: str = "affine32"
    shingle: Any = None  # streammix.metadata.shingle.ShingleConfig; None = its defaults
    dedup: bool = False
    dedup_threshold: float = 0.8
    topic_clusters: int = 0  # k of the topic k-medoids; 0 = round(sqrt(n)) capped at 256
    topic_shingle_size: int = 1  # word n-grams of the topic signatures (1 = unigrams)
    topic_num_perm: int = 64  # permutations of the topic signatures
    topic_backend: str = "minhash"  # or "embeddings:DIR" (a local sentence-transformers model)
    val_fraction: float = 0.0
    val_samples: int = 0
    seed: int = 0
    max_doc_bytes: int = 10_000_000
    strict: bool = False
    compression: str | None = "zstd"
    size_limit: int = 1 << 26
    unit_bytes: int = 16 << 20
    batch_size: int = 256
    workers: int = 1  # prepare-stage processes; 0 = in the calling process (tests)
    progress: bool = True
    overwrite: bool = False
    s3_endpoint_url: str | None = None  # the S3-compatible server of s3:// paths; None = AWS
    staging: str | None = None  # local folder of a build whose --out is s3://; None = a temp one
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    def object_store(self) -> Any:
        """Where this build's ``s3://`` inputs and output live."""
        from streammix.format.object_store import ObjectStore

        return ObjectStore(endpoint_url=self.s3_endpoint_url)

    def shingle_config(self) -> Any:
        from streammix.metadata.shingle import ShingleConfig

        return self.shingle if self.shingle is not None else ShingleConfig()

    def embedding_model(self) -> str | None:
        """The model directory of ``topic_backend="embeddings:DIR"``, else None."""
        kind, _, argument = self.topic_backend.partition(":")
        return argument if kind == EMBEDDINGS_BACKEND else None

    def topic_shingle_config(self) -> Any:
        """Word ``topic_shingle_size``-grams, normalized like the near-duplicate shingles."""
        return dataclasses.replace(self.shingle_config(), unit="word", n=self.topic_shingle_size)

    def output_fields(self) -> dict[str, Any]:
        """The fields that determine the output, in plain JSON types."""
        shingle = self.shingle_config()
        return {
            "domains": [{"name": d.name, "source": _absolute(d.source)} for d in self.domains],
            "text_field": self.text_field,
            "id_field": self.id_field,
            "tokenizer": _absolute(self.tokenizer) if self.tokenizer else None,
            "scorer": self.scorer,
            "minhash": {
                "num_perm": self.minhash_num_perm,
                "seed": self.minhash_seed,
                "scheme": self.minhash_scheme,
                "shingle": _plain(dataclasses.asdict(shingle)),
            },
            "dedup": self.dedup,
            "dedup_threshold": self.dedup_threshold,
            "topics": {
                "clusters": self.topic_clusters,
                "shingle_size": self.topic_shingle_size,
                "num_perm": self.topic_num_perm,
                "backend": self.topic_backend
                if self.embedding_model() is None
                else "embeddings:" + _absolute(self.embedding_model()),
            },
            "val_fraction": self.val_fraction,
            "val_samples": self.val_samples,
            "seed": self.seed,
            "max_doc_bytes": self.max_doc_bytes,
            "strict": self.strict,
            "compression": self.compression,
            "size_limit": self.size_limit,
            "unit_bytes": self.unit_bytes,
            "extra": _plain(self.extra),
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.output_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _absolute(path: str) -> str:
    """Inputs are recorded as absolute paths, so a rerun from another folder matches."""
    if path.startswith(("s3://", "s3a://")):
        return "s3://" + path.split("://", 1)[1]
    return os.path.abspath(os.path.expanduser(path))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _validate(config: BuildConfig) -> None:
    if not config.domains:
        raise BuildError("no domains given (use --domain NAME=PATH or a --config file)")
    seen: set[str] = set()
    for domain in config.domains:
        if not isinstance(domain, DomainSpec):
            raise TypeError(f"domains must be DomainSpec objects, got {type(domain).__name__}")
        if not DOMAIN_NAME.match(domain.name) or domain.name.endswith(VAL_SUFFIX):
            raise BuildError(
                f"invalid domain name {domain.name!r}: use letters, digits, '_', '.', '-'"
                f" (not starting with '.' or '-', not ending in {VAL_SUFFIX!r})"
            )
        if domain.name in seen:
            raise BuildError(f"two domains are named {domain.name!r}; domain names must be unique")
        seen.add(domain.name)
        if not domain.source:
            raise BuildError(f"domain {domain.name!r} has an empty input path")
    if not config.out:
        raise BuildError("no output folder given (--out DIR)")
    if not config.text_field:
        raise BuildError("--text-field must not be empty")
    _check_range("val_fraction", config.val_fraction, 0.0, 1.0, inclusive_high=False)
    _check_range("dedup_threshold", config.dedup_threshold, 0.0, 1.0, inclusive_low=False)
    kind, sep, model = config.topic_backend.partition(":")
    if not (config.topic_backend == MINHASH_BACKEND or (kind == EMBEDDINGS_BACKEND and model)):
        raise BuildError(
            f"--topic-backend must be 'minhash' or 'embeddings:DIR', got {config.topic_backend!r}"
        )
    if kind == EMBEDDINGS_BACKEND and not os.path.isdir(os.path.expanduser(model)):
        raise BuildError(f"--topic-backend {config.topic_backend}: no such model directory")
    if config.topic_clusters < 0:
        raise BuildError(
            f"--topic-clusters must be >= 0 (0 = automatic), got {config.topic_clusters}"
        )
    if config.val_samples < 0:
        raise BuildError(f"--val-samples must be >= 0, got {config.val_samples}")
    if config.val_samples and config.val_fraction:
        raise BuildError("give either --val-fraction or --val-samples, not both")
    for name in (
        "minhash_num_perm",
        "topic_num_perm",
        "topic_shingle_size",
        "max_doc_bytes",
        "size_limit",
        "unit_bytes",
        "batch_size",
    ):
        if int(getattr(config, name)) <= 0:
            raise BuildError(f"{name} must be positive, got {getattr(config, name)}")
    if config.workers < 0:
        raise BuildError(f"--workers must be >= 1, got {config.workers}")
    if config.seed < 0 or config.minhash_seed < 0:
        raise BuildError("seeds must be non-negative integers")
    from streammix.metadata.minhash import SCHEMES

    if config.minhash_scheme not in SCHEMES:
        raise BuildError(
            f"unknown MinHash scheme {config.minhash_scheme!r}; choose one of {SCHEMES}"
        )
    if config.size_limit >= 1 << 32:
        raise BuildError(
            f"size_limit must be below 4 GiB (MDS offsets are uint32), got {config.size_limit}"
        )
    if config.compression is not None:
        from streammix.format.mds import parse_compression

        try:
            parse_compression(config.compression)
        except ValueError as exc:
            raise BuildError(str(exc)) from None


def _check_range(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    inclusive_low: bool = True,
    inclusive_high: bool = True,
) -> None:
    ok_low = value >= low if inclusive_low else value > low
    ok_high = value <= high if inclusive_high else value < high
    if not (ok_low and ok_high):
        lo = "[" if inclusive_low else "("
        hi = "]" if inclusive_high else ")"
        raise BuildError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")

"""The reference n-gram model of ``--quality ngram:REFERENCE`` (CCNet-style perplexity).

``REFERENCE`` is either the name of a domain of the build (its input files) or a path, a
folder or a glob of input files in any format the build reads (jsonl, parquet, text files;
``--text-field`` applies). Before stage *prepare*, the main process reads the reference
documents in order (bad records are skipped; at most :data:`MAX_REFERENCE_BYTES` of text,
whole documents, first come first), trains
:func:`streammix.metadata.ngram_lm.train_kneser_ney` (order :data:`ORDER`) and saves the
model as ``reference_lm.npz`` in the work folder. The workers then score with the scorer
spec ``ngram-model:<that file>``. A resumed build reuses the saved model, so the scores do
not depend on where a build was interrupted.

Naming a domain of the build as the reference scores its own documents in-sample (they
were counted), which favours that domain; CCNet's choice is an outside reference such as
Wikipedia text, which is what passing files is for.
"""

from __future__ import annotations

from pathlib import Path

from streammix.format.readers import ReadOptions, RecordProblem, read_unit
from streammix.pipeline.config import BuildConfig, BuildError, DomainSpec

NGRAM_PREFIX = "ngram:"
MODEL_PREFIX = "ngram-model:"
MODEL_NAME = "reference_lm.npz"
MAX_REFERENCE_BYTES = 64 << 20
ORDER = 3
REFERENCE_NAME = "reference"


def is_reference_spec(spec: str) -> bool:
    return spec.startswith(NGRAM_PREFIX)


def reference_source(config: BuildConfig) -> DomainSpec:
    """The reference as a ``DomainSpec``: a domain of the build, or the given files."""
    name = config.scorer[len(NGRAM_PREFIX) :]
    if not name:
        raise BuildError("--quality ngram:REFERENCE needs a domain name or input files")
    for domain in config.domains:
        if domain.name == name:
            return domain
    return DomainSpec(name=REFERENCE_NAME, source=name)


def check_reference(config: BuildConfig) -> None:
    """Fail early when the reference names neither a domain nor readable files."""
    from streammix.pipeline.plan import list_domain_files

    spec = reference_source(config)
    try:
        list_domain_files(spec, config.object_store())
    except BuildError as exc:
        raise BuildError(
            f"--quality {config.scorer}: not a domain of this build"
            f" ({', '.join(d.name for d in config.domains)}) nor readable files: {exc}"
        ) from None


def reference_texts(config: BuildConfig) -> list[str]:
    """The reference documents in input order, up to :data:`MAX_REFERENCE_BYTES`."""
    from streammix.pipeline.plan import _domain_units, list_domain_files

    spec = reference_source(config)
    store = config.object_store()
    units = _domain_units(spec.name, list_domain_files(spec, store), config.unit_bytes, 0, store)
    options = ReadOptions(
        text_field=config.text_field,
        max_doc_bytes=config.max_doc_bytes,
        store=config.object_store(),
    )
    texts: list[str] = []
    used = 0
    for unit in units:
        for item in read_unit(unit, options):
            if isinstance(item, RecordProblem):
                continue
            size = len(item.text.encode("utf-8"))
            if used + size > MAX_REFERENCE_BYTES:
                return texts
            texts.append(item.text)
            used += size
    return texts


def prepare_reference_model(config: BuildConfig, work: Path) -> str:
    """Train (or reuse) the reference model; returns the scorer spec for the workers."""
    from streammix.metadata.ngram_lm import train_kneser_ney

    target = work / MODEL_NAME
    if not target.exists():
        texts = reference_texts(config)
        if not texts:
            raise BuildError(f"--quality {config.scorer}: the reference holds no usable documents")
        train_kneser_ney(texts, order=ORDER).save(target)
    return MODEL_PREFIX + str(target)

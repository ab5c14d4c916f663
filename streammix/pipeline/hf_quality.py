"""A quality scorer backed by a local Hugging Face sequence-classification model.

``HFClassifierScorer(model_dir)`` loads ``AutoTokenizer`` and
``AutoModelForSequenceClassification`` from a directory written by ``save_pretrained``
(``local_files_only=True``: a missing or broken directory is a ``ValueError``, never a hub
download) and scores documents in batches under ``torch.inference_mode``:

* a regression head (``num_labels == 1``, e.g. FineWeb-Edu's classifier): the single output;
* a classification head: the softmax probability of ``label`` (a label name from the
  model's ``id2label`` or an integer index; by default the last label, which for a binary
  "low/high quality" classifier is the positive class).

Texts are truncated to ``max_length`` tokens. Within a call they are scored in order of
character length so that a batch pads little, and the scores are put back in input order; a
text's score does not depend on the batch it lands in (up to float rounding of padded
matrix products). The device is ``"cuda"`` when available unless ``device`` says otherwise.
This module imports torch and transformers, so it lives in ``build`` and
``streammix.metadata.quality.make_scorer("hf:DIR")`` imports it only on demand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from streammix.metadata.quality import ScoreBatch


def _load(model_dir: Path):
    if not model_dir.is_dir():
        raise ValueError(f"HF quality model directory {str(model_dir)!r} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"{str(model_dir)!r} has no config.json; save the model with save_pretrained"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, TypeError, KeyError...
        raise ValueError(
            f"cannot load a sequence-classification model from {str(model_dir)!r}: {error}"
        ) from error
    return tokenizer, model


def _label_index(model, label: str | int | None) -> int | None:
    num_labels = int(model.config.num_labels)
    if num_labels == 1:
        if label is not None:
            raise ValueError("the model has a regression head (one output); do not pass label")
        return None
    if label is None:
        return num_labels - 1
    if isinstance(label, int):
        if not 0 <= label < num_labels:
            raise ValueError(f"label index {label} outside [0, {num_labels})")
        return label
    names = {str(name): int(index) for index, name in model.config.id2label.items()}
    if label not in names:
        raise ValueError(f"label {label!r} is not one of the model's labels {sorted(names)}")
    return names[label]


class HFClassifierScorer:
    """Score = regression output, or probability of ``label`` (default: the last label)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        device: str | None = None,
        label: str | int | None = None,
        name: str = "hf",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self.label = label
        self.name = name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer, self.model = _load(self.model_dir)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(
                    f"tokenizer in {str(self.model_dir)!r} has neither a pad nor an eos token"
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.label_index = _label_index(self.model, label)
        self.model.to(self.device).eval()

    def __reduce__(self):
        options = {
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "device": str(self.device),
            "label": self.label,
            "name": self.name,
        }
        return (_rebuild, (str(self.model_dir), options))

    def __repr__(self) -> str:
        return f"HFClassifierScorer({str(self.model_dir)!r}, device={str(self.device)!r})"

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        with torch.inference_mode():
            logits = self.model(**encoded).logits.float()
        if self.label_index is None:
            values = logits[:, 0]
        else:
            values = torch.softmax(logits, dim=-1)[:, self.label_index]
        return values.cpu().numpy()

    def score(self, texts: Sequence[str], records: Sequence[Mapping[str, Any]]) -> ScoreBatch:
        if len(texts) != len(records):
            raise ValueError(f"got {len(texts)} texts but {len(records)} records")
        quality = np.empty(len(texts), dtype=np.float32)
        if not texts:
            return ScoreBatch(quality=quality, signals={})
        order = np.argsort(
            np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), kind="stable"
        )
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin : begin + self.batch_size]
            quality[chunk] = self._score_batch([texts[i] for i in chunk])
        return ScoreBatch(quality=quality, signals={})


def _rebuild(model_dir: str, options: dict) -> HFClassifierScorer:
    return HFClassifierScorer(model_dir, **options)

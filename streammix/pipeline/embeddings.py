"""Sentence embeddings from a local sentence-transformers model directory (torch).

The ``--topic-backend embeddings:DIR`` option of ``streammix-build`` clusters documents by
k-means over these embeddings (:mod:`streammix.metadata.embedding_topics`), as SampleMix
does, instead of k-medoids over MinHash. ``DIR`` is a model saved by sentence-transformers
(``modules.json`` listing a ``Transformer`` module, a ``Pooling`` module with its
``config.json`` and optionally ``Normalize``) or a plain Hugging Face encoder saved with
``save_pretrained`` (then mean pooling). The pipeline is reproduced with transformers
directly, so the ``sentence-transformers`` package is not needed:

1. tokenize with the directory's tokenizer (truncation to ``max_length`` tokens, default
   the tokenizer's ``model_max_length`` capped at 512), run ``AutoModel`` and take its last
   hidden state;
2. pool over the attention mask as the ``Pooling`` config says: ``pooling_mode_mean_tokens``
   (the default), ``pooling_mode_cls_token`` or ``pooling_mode_max_tokens``;
3. L2-normalize (always: the k-means is spherical).

Only local files are read (``local_files_only=True``): a missing or broken directory is a
``ValueError``, never a download. Texts are embedded in batches of ``batch_size`` in order
of length (little padding) and put back in input order, on ``cuda`` when available unless
``device`` says otherwise. A text's embedding does not depend on its batch up to float
rounding; the build's batches depend only on the work units, never on ``--workers``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

POOLING_MODES = ("mean", "cls", "max")


def _pooling_of(model_dir: Path) -> tuple[Path, str]:
    """The transformer's folder and the pooling mode of a sentence-transformers directory."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return model_dir, "mean"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{modules_file} is not valid JSON: {error}") from None
    transformer_dir, mode = model_dir, "mean"
    for module in modules:
        kind = str(module.get("type", ""))
        folder = model_dir / str(module.get("path", ""))
        if kind.endswith("Transformer"):
            transformer_dir = folder
        elif kind.endswith("Pooling"):
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            if config.get("pooling_mode_cls_token"):
                mode = "cls"
            elif config.get("pooling_mode_max_tokens"):
                mode = "max"
            elif not config.get("pooling_mode_mean_tokens", True):
                raise ValueError(
                    f"{folder / 'config.json'}: only mean, cls and max pooling are supported"
                )
    return transformer_dir, mode


class SentenceEmbedder:
    """``embed(texts) -> float32 [n, dim]`` unit vectors (module docstring)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ValueError(f"embedding model directory {str(self.model_dir)!r} does not exist")
        transformer_dir, self.pooling = _pooling_of(self.model_dir)
        if not (transformer_dir / "config.json").is_file():
            raise ValueError(
                f"{str(transformer_dir)!r} has no config.json; save the model with"
                " sentence-transformers or save_pretrained"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(transformer_dir, local_files_only=True)
            self.model = AutoModel.from_pretrained(transformer_dir, local_files_only=True)
        except Exception as error:  # transformers raises many kinds
            raise ValueError(
                f"cannot load an encoder from {str(transformer_dir)!r}: {error}"
            ) from error
        limit = min(int(self.tokenizer.model_max_length or 512), 512)
        self.max_length = int(max_length) if max_length is not None else limit
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        with torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy().astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin : begin + self.batch_size]
            out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

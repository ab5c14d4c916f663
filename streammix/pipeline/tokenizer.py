"""The build's tokenizer: a fast tokenizer's serialized Rust backend and its vocabulary size.

Workers only need the backend (``tokenizers.Tokenizer``); the main process needs the
backend's JSON and ``len(tokenizer)`` (the token dtype). ``transformers.AutoTokenizer`` is
the reference way to load a local folder, but importing it costs 2.5-3 s (it imports
torch), which is most of the serial start-up of a small build. So the folder is loaded in
one of two ways, with the same result:

- *direct*: ``tokenizers.Tokenizer.from_file(tokenizer.json)`` alone, when the folder is one
  that ``AutoTokenizer`` would load without touching the backend: ``tokenizer_config.json``
  names the generic fast class (``PreTrainedTokenizerFast``, or ``TokenizersBackend``, its
  name in folders saved by transformers 5, which transformers 4 cannot load), no custom
  code, no legacy ``added_tokens.json``, every added or special token the configuration lists is already
  an added token of the backend with the same properties, no ``add_prefix_space`` override,
  no ``split_special_tokens``, no truncation or padding in the backend, and no Mistral
  regex patch possible (a ``config.json`` beside a vocabulary above 100000 ids);
- *transformers*: ``AutoTokenizer.from_pretrained`` for every other folder, and whenever the
  direct path finds anything it does not expect (so its error messages stay the reference).

A test checks that both give the same backend JSON and size on folders of the first kind.
transformers 5 may also rebuild the post-processor of a ``TokenizersBackend`` folder (from
``add_bos_token``/``add_eos_token``); the build encodes with ``add_special_tokens=False``,
where the post-processor adds nothing, so the token ids are the same either way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from streammix.pipeline.config import BuildError

GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")  # transformers 4, 5
SPECIAL_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
MISTRAL_PATCH_VOCAB = 100000


@dataclass(frozen=True, kw_only=True)
class TokenizerBackend:
    """What the build keeps of a tokenizer."""

    backend_json: str  # ``tokenizers.Tokenizer.to_str()``
    vocab_size: int  # with added tokens, as ``len(tokenizer)``
    loaded_by: str  # "tokenizers" or "transformers"


def load_tokenizer_backend(path: str) -> TokenizerBackend:
    """The backend of the local tokenizer folder ``path``, or a ``BuildError`` saying why not.

    Anything the direct path cannot use, a missing folder included, goes to
    :func:`load_tokenizer`, whose errors are the reference.
    """
    direct = _load_direct(path)
    if direct is not None:
        return direct
    tokenizer = load_tokenizer(path)
    return TokenizerBackend(
        backend_json=tokenizer.backend_tokenizer.to_str(),
        vocab_size=len(tokenizer),
        loaded_by="transformers",
    )


def load_tokenizer(path: str) -> Any:
    """A fast Hugging Face tokenizer from a local folder, or a ``BuildError`` saying why not."""
    if not os.path.isdir(path):
        raise BuildError(f"--tokenizer {path}: no such folder (a local tokenizer folder is needed)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except Exception as exc:  # transformers raises many kinds for a folder it cannot use
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"--tokenizer {path}: cannot load a tokenizer: {message}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise BuildError(f"--tokenizer {path}: not a fast (Rust) tokenizer")
    return tokenizer


def _load_direct(path: str) -> TokenizerBackend | None:
    """The backend from ``tokenizer.json`` alone, or None where transformers must decide."""
    config = _read_json_object(os.path.join(path, "tokenizer_config.json"))
    backend_file = os.path.join(path, "tokenizer.json")
    if config is None or not os.path.isfile(backend_file):
        return None
    if os.path.exists(os.path.join(path, "added_tokens.json")):
        return None
    special_map = {}
    if os.path.exists(os.path.join(path, "special_tokens_map.json")):
        special_map = _read_json_object(os.path.join(path, "special_tokens_map.json"))
        if special_map is None:
            return None
    backend = _read_json_object(backend_file)
    if backend is None or not _config_keeps_backend(config, special_map, backend):
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(backend_file)
    except Exception:  # the transformers path reports the problem in its own words
        return None
    base_vocab = tokenizer.get_vocab_size(with_added_tokens=False)
    if base_vocab > MISTRAL_PATCH_VOCAB and os.path.exists(os.path.join(path, "config.json")):
        return None
    return TokenizerBackend(
        backend_json=tokenizer.to_str(),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        loaded_by="tokenizers",
    )


def _read_json_object(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _config_keeps_backend(
    config: dict[str, Any], special_map: dict[str, Any], backend: dict[str, Any]
) -> bool:
    """True when ``PreTrainedTokenizerFast`` with this configuration leaves the backend as is."""
    if config.get("tokenizer_class") not in GENERIC_CLASSES or "auto_map" in config:
        return False
    if config.get("split_special_tokens") or config.get("extra_special_tokens"):
        return False
    if backend.get("truncation") is not None or backend.get("padding") is not None:
        return False
    pre_tokenizer = backend.get("pre_tokenizer")
    if isinstance(pre_tokenizer, dict) and "add_prefix_space" in pre_tokenizer:
        if pre_tokenizer["add_prefix_space"] != config.get("add_prefix_space", False):
            return False
    added = {}
    for token in backend.get("added_tokens") or []:
        if not isinstance(token, dict) or "id" not in token:
            return False
        added[str(token["id"])] = tuple(token.get(name) for name in ADDED_TOKEN_FIELDS)
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        return False
    for token_id, token in decoder.items():
        if not isinstance(token, dict):
            return False
        if added.get(str(token_id)) != tuple(token.get(name) for name in ADDED_TOKEN_FIELDS):
            return False
    contents = {fields[0] for fields in added.values()}
    return all(name in contents for name in _special_token_names(config, special_map))


def _special_token_names(config: dict[str, Any], special_map: dict[str, Any]) -> list[Any]:
    """Every special token string the configuration names (a non-string makes it unknown)."""
    names: list[Any] = []
    for source in (special_map, config):
        for key in SPECIAL_KEYS:
            if source.get(key) is not None:
                names.append(_token_content(source[key]))
        extra = source.get("additional_special_tokens") or []
        names.extend(_token_content(token) for token in extra)
    return names


def _token_content(token: Any) -> Any:
    if isinstance(token, dict):
        return token.get("content")
    return token

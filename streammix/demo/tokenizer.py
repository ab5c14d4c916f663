"""A byte-level BPE tokenizer trained locally, saved in the Hugging Face format.

Byte-level BPE (as in GPT-2): text is pre-split into words by the GPT-2 regular expression,
each word's UTF-8 bytes are mapped to 256 printable "byte characters", and the trainer
repeatedly merges the most frequent adjacent pair of symbols until ``vocab_size`` symbols
exist (256 bytes + one special token + merges). Every string is encodable (no unknown
token), and decoding inverts encoding.

The ``tokenizers`` trainer counts word frequencies, then merges; with the same texts it
produces the same vocabulary and merges (tested by training twice). The result is wrapped
in ``transformers.PreTrainedTokenizerFast`` with ``<|endoftext|>`` as the eos, bos and pad
token and saved with ``save_pretrained``, so that
``AutoTokenizer.from_pretrained(out_dir, local_files_only=True)`` loads it offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB_SIZE = 257 + 1  # 256 byte symbols + the eos token + at least one merge


def build_byte_level_bpe(texts: Iterable[str], *, vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on ``texts``; eos has id 0."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_checked_texts(texts), trainer=trainer)
    return tokenizer


def _checked_texts(texts: Iterable[str]) -> Iterable[str]:
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        yield text


def train_tokenizer(
    texts: Iterable[str],
    out_dir: Path,
    *,
    vocab_size: int = 4096,
    model_max_length: int | None = None,
) -> Path:
    """Train a byte-level BPE on ``texts`` and save it to ``out_dir``; return ``out_dir``.

    The saved directory loads with ``AutoTokenizer.from_pretrained(out_dir,
    local_files_only=True)``; ``<|endoftext|>`` (id 0) is its eos, bos and pad token. The
    vocabulary can come out smaller than ``vocab_size`` when the texts are too small to
    support that many merges. ``model_max_length`` is recorded in the tokenizer config
    (None: no limit, so long documents tokenize without warnings; chunking is the
    caller's job).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE}, got {vocab_size}")
    if model_max_length is not None and (
        isinstance(model_max_length, bool)
        or not isinstance(model_max_length, int)
        or model_max_length < 1
    ):
        raise ValueError(f"model_max_length must be an int >= 1, got {model_max_length!r}")
    tokenizer = build_byte_level_bpe(texts, vocab_size=vocab_size)
    if tokenizer.get_vocab_size() <= MIN_VOCAB_SIZE - 1:
        raise ValueError("texts are empty or too small: the tokenizer learned no merges")
    limits = {} if model_max_length is None else {"model_max_length": model_max_length}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        **limits,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out_dir))
    return out_dir

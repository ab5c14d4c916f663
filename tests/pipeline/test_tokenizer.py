"""The tokenizer loader: the direct ``tokenizers`` path equals ``AutoTokenizer`` (the oracle)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streammix.pipeline.config import BuildError
from streammix.pipeline.tokenizer import load_tokenizer, load_tokenizer_backend


def _copy(tokenizer_dir: Path, target: Path) -> Path:
    shutil.copytree(tokenizer_dir, target)
    return target


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _assert_same_as_transformers(folder: Path, loaded_by: str) -> None:
    backend = load_tokenizer_backend(str(folder))
    reference = load_tokenizer(str(folder))
    assert backend.loaded_by == loaded_by
    assert backend.backend_json == reference.backend_tokenizer.to_str()
    assert backend.vocab_size == len(reference)


def test_a_plain_fast_tokenizer_loads_without_transformers(tokenizer_dir: Path) -> None:
    _assert_same_as_transformers(tokenizer_dir, "tokenizers")


def test_an_already_present_special_token_keeps_the_direct_path(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tokenizer_dir, tmp_path / "tok")
    _edit_json(folder / "tokenizer_config.json", lambda c: c.update(bos_token="<|endoftext|>"))
    _assert_same_as_transformers(folder, "tokenizers")


def _add_pad_token(config: dict) -> None:
    config["pad_token"] = "<pad>"


def _prefix_space(config: dict) -> None:
    config["add_prefix_space"] = True


def _other_class(config: dict) -> None:
    config["tokenizer_class"] = "GPT2TokenizerFast"


def _flip_added_token(config: dict) -> None:
    config["added_tokens_decoder"]["0"]["lstrip"] = True


@pytest.mark.parametrize(
    "edit",
    [_add_pad_token, _prefix_space, _other_class, _flip_added_token],
    ids=lambda e: e.__name__,
)
def test_configurations_that_change_the_backend_go_through_transformers(
    tokenizer_dir: Path, tmp_path: Path, edit
) -> None:
    folder = _copy(tokenizer_dir, tmp_path / "tok")
    _edit_json(folder / "tokenizer_config.json", edit)
    _assert_same_as_transformers(folder, "transformers")


def test_backend_truncation_goes_through_transformers(tokenizer_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tokenizer_dir, tmp_path / "tok")
    _edit_json(
        folder / "tokenizer.json",
        lambda t: t.update(
            truncation={
                "direction": "Right",
                "max_length": 8,
                "strategy": "LongestFirst",
                "stride": 0,
            }
        ),
    )
    _assert_same_as_transformers(folder, "transformers")


def test_extra_files_send_the_folder_through_transformers(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tokenizer_dir, tmp_path / "tok")
    (folder / "added_tokens.json").write_text(json.dumps({"<extra>": 400}), encoding="utf-8")
    _assert_same_as_transformers(folder, "transformers")
    (folder / "added_tokens.json").unlink()
    (folder / "special_tokens_map.json").write_text("[not an object]", encoding="utf-8")
    assert load_tokenizer_backend(str(folder)).loaded_by == "transformers"


def test_bad_tokenizer_folders_keep_their_error_messages(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match="no such folder"):
        load_tokenizer_backend(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="cannot load a tokenizer"):
        load_tokenizer_backend(str(empty))
    broken = _copy(tokenizer_dir, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BuildError, match="cannot load a tokenizer"):
        load_tokenizer_backend(str(broken))


def test_a_transformers_5_folder_takes_the_direct_path(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """transformers 5 names the generic fast class ``TokenizersBackend`` in tokenizer_config.json."""
    import subprocess
    import sys

    folder = _copy(tokenizer_dir, tmp_path / "tok")

    def as_transformers_5(config: dict) -> None:
        config.update(tokenizer_class="TokenizersBackend", backend="tokenizers")

    _edit_json(folder / "tokenizer_config.json", as_transformers_5)
    backend = load_tokenizer_backend(str(folder))
    reference = load_tokenizer_backend(str(tokenizer_dir))
    assert backend.loaded_by == "tokenizers"
    assert (backend.backend_json, backend.vocab_size) == (
        reference.backend_json,
        reference.vocab_size,
    )
    script = (
        "import sys\n"
        "from streammix.pipeline.tokenizer import load_tokenizer_backend\n"
        f"print(load_tokenizer_backend({str(folder)!r}).loaded_by, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tokenizers", "False"]
    _edit_json(folder / "tokenizer_config.json", _add_pad_token)  # then transformers decides
    try:
        assert load_tokenizer_backend(str(folder)).loaded_by == "transformers"  # transformers 5
    except BuildError as exc:  # transformers 4 does not know the class
        assert "TokenizersBackend" in str(exc)

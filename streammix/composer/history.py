"""The decision history of an OnlineMixing run as an append-only JSON Lines file.

The first line is a header, ``{"streammix_history": 1, "domains": [...]}``; every further
line is one decision record (see ``OnlineMixing``). Writing a decision appends one line,
so its cost does not grow with the number of decisions. A resumed run rewrites the file
once from the history kept in its checkpoint (which drops any decision a killed run wrote
after that checkpoint) and appends from there.

``read_history`` also reads the single-JSON-object files (``{"domains", "history"}``) that
streammix wrote before this format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HISTORY_FORMAT = 1


class HistoryFormatError(ValueError):
    """A file that is not an OnlineMixing decision history."""


class HistoryWriter:
    """Appends decision records to ``path`` (only one process, rank 0, should write)."""

    def __init__(self, path: str | os.PathLike, domains: Sequence[str]) -> None:
        self.path = Path(path)
        self.domains = list(domains)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file with the header and ``records`` (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(json.dumps({"streammix_history": HISTORY_FORMAT,
                                     "domains": self.domains}) + "\n")
            for record in records:
                stream.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()


_EXPECTED = "expected the history that OnlineMixing(history_path=...) writes (JSON Lines)"
_SIGNATURES = {
    b"PK\x03\x04": "a zip archive (a SampleMix plan .npz? streammix plan BUILD --plots DIR "
    "draws a plan)",
    b"\x89PNG": "a PNG image",
    b"\x93NUMPY": "a numpy .npy array",
    b"PAR1": "a parquet file",
}


def read_history(path: str | os.PathLike) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """``(domain names, decision records)`` of a history file written by OnlineMixing.

    Anything else (a missing file, a plan ``.npz``, other JSON, ...) raises an error that
    says what the file is and what was expected.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no history file at {path}") from None
    except IsADirectoryError:
        raise HistoryFormatError(f"{path} is a folder; {_EXPECTED}") from None
    for signature, kind in _SIGNATURES.items():
        if data.startswith(signature):
            raise HistoryFormatError(f"{path} is {kind}, not a history; {_EXPECTED}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HistoryFormatError(f"{path} is a binary file, not a history; {_EXPECTED}") from None
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if isinstance(header, dict) and header.get("streammix_history") == HISTORY_FORMAT:
        return _names(header.get("domains")), _records(path, lines)
    try:  # the older format: one JSON object {"domains", "history"}
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryFormatError(f"{path} is not JSON ({exc}); {_EXPECTED}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("history"), list):
        raise HistoryFormatError(f"{path} is JSON without a 'history' key; {_EXPECTED}")
    return _names(payload.get("domains")), list(payload["history"])


def _names(domains: Any) -> list[str] | None:
    return None if domains is None else [str(n) for n in domains]


def _records(path: Path, lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a last line cut short by a kill mid-write
                break
            raise HistoryFormatError(f"{path}: line {number}: {exc}") from None
    return records

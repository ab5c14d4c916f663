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


def read_history(path: str | os.PathLike) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """``(domain names, decision records)`` of a history file written by OnlineMixing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HistoryFormatError(
            f"{path} is not a text file; expected the history that "
            "OnlineMixing(history_path=...) writes (JSON Lines)") from None
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not (isinstance(header, dict) and header.get("streammix_history") == HISTORY_FORMAT):
        try:  # the older format: one JSON object {"domains", "history"}
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = None
        if not (isinstance(payload, dict) and isinstance(payload.get("history"), list)):
            raise HistoryFormatError(
                f"{path} is not an OnlineMixing history (the JSON Lines file that "
                "OnlineMixing(history_path=...) writes)")
        return payload.get("domains"), list(payload["history"])
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a line cut by a kill mid-write
                break
            raise HistoryFormatError(f"{path}: line {number}: {exc}") from None
    return header.get("domains"), records

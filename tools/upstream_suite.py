"""Run mosaicml-streaming's own tests against StreamMixDataset (upstream's code is never committed).

    python3 tools/upstream_suite.py --upstream DIR [--modules test_mixing.py ...] [--jobs 2]

``DIR`` is a checkout of github.com/mosaicml/streaming at the tag of the installed version
(``git clone --depth 1 --branch v0.13.0 https://github.com/mosaicml/streaming``): the
PyPI sdist ships ``tests/`` without ``tests/common/`` (upstream's helpers and fixtures),
so it cannot run most modules. Nothing is downloaded here.

1. Copy ``DIR/tests`` into a work folder and write a shim ``conftest.py`` above it, which
   pytest loads before upstream's own ``tests/conftest.py`` and any test module:
   ``streaming.StreamingDataset`` becomes ``StreamMixDataset``, and upstream's
   ``clean_stale_shared_memory()``, which unlinks every streaming shared-memory segment on
   the machine, becomes a no-op, so the run never disturbs another job.
2. Modules: by default every upstream module whose text names ``StreamingDataset``.
3. Run each module in one pytest process (``--jobs`` at a time, upstream's pytest options
   replaced by none), then every test function that failed there (all its
   parametrizations) in its own process: upstream leaks shared-memory handles across
   datasets, so only a failure in a process of its own counts (a function that the
   exclusion list expects to fail is not run again). ``--isolate all`` runs
   every function in its own process from the start (slower: a process imports torch).
   An unlisted failure is run once more (upstream's shared-memory prefixes can race
   between concurrent processes); a function that passes only then is reported as flaky.
4. Compare with ``tools/upstream_exclusions.txt`` (one ``module::function  reason`` a line):
   a failure not listed is an error; a listed function that passes is reported.
   ``--report FILE`` writes every function's outcome and the tail of its output (JSON).

Exit status 1 on any unlisted failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

EXCLUSIONS = Path(__file__).with_name("upstream_exclusions.txt")
REPO = Path(__file__).resolve().parent.parent

SHIM = '''"""Shim written by streammix's tools/upstream_suite.py: StreamingDataset is StreamMixDataset."""
import streammix.dataset.dataset as _streammix
import streaming
import streaming.base
import streaming.base.util as _util


def _no_clean() -> None:
    """Upstream unlinks every streaming segment on the machine here; never in this run."""


_util.clean_stale_shared_memory = _no_clean
streaming.StreamingDataset = _streammix.StreamMixDataset
streaming.base.StreamingDataset = _streammix.StreamMixDataset
'''


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One upstream test function's result."""

    node: str
    passed: bool
    flaky: bool
    seconds: float
    tail: str


def prepare_tests(upstream: Path, workdir: Path) -> Path:
    """Copy upstream's ``tests/`` under ``workdir`` and write the shim; the run's root."""
    version = importlib.metadata.version("mosaicml-streaming")
    tests = upstream / "tests"
    if not (tests / "common").is_dir():
        raise SystemExit(
            f"{upstream} holds no tests/common/: give a checkout of "
            f"https://github.com/mosaicml/streaming at v{version} (the sdist lacks it)")
    version_file = upstream / "streaming" / "_version.py"
    if version_file.exists() and f"'{version}'" not in version_file.read_text():
        raise SystemExit(f"{upstream} is not at v{version} (the installed mosaicml-streaming): "
                         f"{version_file} says otherwise")
    root = workdir / f"upstream-{version}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(tests, root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "conftest.py").write_text(SHIM)
    return root


def default_modules(root: Path) -> list[str]:
    """Upstream test modules that construct (name) a ``StreamingDataset``."""
    return sorted(p.name for p in (root / "tests").glob("test_*.py")
                  if "StreamingDataset" in p.read_text())


def _pytest(root: Path, *args: str, timeout_s: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
             "--rootdir", str(root), "-W", "ignore::pytest.PytestRemovedIn9Warning", "-q",
             *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\nTIMEOUT after {timeout_s} s"
    return done.returncode, done.stdout + done.stderr


def test_functions(root: Path, modules: list[str]) -> list[str]:
    """``tests/<module>::<function>`` for every collected test function (params grouped)."""
    code, out = _pytest(root, "--collect-only", *[f"tests/{m}" for m in modules],
                        timeout_s=600)
    # node ids only: warnings in the summary also start with "tests/" but hold spaces
    ids = [line.strip() for line in out.splitlines()
           if line.startswith("tests/") and "::" in line and " " not in line.strip()]
    if code != 0 and not ids:
        raise SystemExit(f"collecting upstream's tests failed:\n{out[-4000:]}")
    return list(dict.fromkeys(i.split("[")[0] for i in ids))


def module_outcomes(root: Path, module: str, timeout_s: float) -> dict[str, bool]:
    """``{node: passed}`` for the functions of one module run in one process.

    A function passed when none of its parametrizations failed or errored (skips pass);
    functions missing from the report (the process crashed or timed out) are left out.
    """
    report = root / f"{module}.junit.xml"
    report.unlink(missing_ok=True)
    _pytest(root, f"tests/{module}", f"--junitxml={report}", timeout_s=timeout_s)
    if not report.exists():
        return {}
    passed: dict[str, bool] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        module_path = "tests." + module.removesuffix(".py")  # classname: module[.Class]
        classes = case.get("classname", "").removeprefix(module_path).strip(".")
        parts = [f"tests/{module}", *filter(None, classes.split(".")),
                 case.get("name", "").split("[")[0]]
        node = "::".join(parts)
        failed = case.find("failure") is not None or case.find("error") is not None
        passed[node] = passed.get(node, True) and not failed
    return passed


def run_function(root: Path, node: str, timeout_s: float, *, retry: bool) -> Outcome:
    """One function in a fresh process; an unlisted failure once more (flaky if it passes)."""
    start = time.perf_counter()
    code, out = _pytest(root, node, timeout_s=timeout_s)
    flaky = False
    if code != 0 and retry:
        code, out = _pytest(root, node, timeout_s=timeout_s)
        flaky = code == 0
    return Outcome(node=node, passed=code == 0, flaky=flaky,
                   seconds=round(time.perf_counter() - start, 1), tail=out[-3000:])


def read_exclusions(path: Path) -> dict[str, str]:
    exclusions = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            node, _, reason = line.partition("  ")
            if not reason.strip():
                raise ValueError(f"{path}: exclusion {node!r} gives no reason")
            exclusions[node.strip()] = reason.strip()
    return exclusions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True,
                        help="checkout of mosaicml/streaming at the installed version's tag")
    parser.add_argument("--modules", nargs="+", default=None,
                        help="upstream test modules (default: those naming StreamingDataset)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--isolate", choices=("failures", "all"), default="failures")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="streammix-upstream-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = prepare_tests(args.upstream, workdir)
    modules = args.modules or default_modules(root)
    exclusions = read_exclusions(EXCLUSIONS)
    nodes = test_functions(root, modules)
    passed_together: dict[str, bool] = {}
    if args.isolate == "failures":
        with ThreadPoolExecutor(args.jobs) as pool:
            for found in pool.map(lambda m: module_outcomes(root, m, 6 * args.timeout_s),
                                  modules):
                passed_together.update(found)
    outcomes = [Outcome(node=n, passed=True, flaky=False, seconds=0.0, tail="")
                for n in nodes if passed_together.get(n)]
    # a listed function that failed with its module is excluded without a second process
    alone = [n for n in nodes if not passed_together.get(n)
             and not (n in passed_together and n in exclusions)]
    outcomes += [Outcome(node=n, passed=False, flaky=False, seconds=0.0, tail="")
                 for n in nodes if n in exclusions and passed_together.get(n) is False]
    with ThreadPoolExecutor(args.jobs) as pool:
        outcomes += pool.map(lambda n: run_function(root, n, args.timeout_s,
                                                    retry=n not in exclusions), alone)
    outcomes.sort(key=lambda o: nodes.index(o.node))
    if args.report:
        args.report.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    groups: dict[str, list[Outcome]] = {"passed": [], "passed on the second try (flaky)": [],
                                        "excluded": [], "excluded but passed": [], "FAILED": []}
    for outcome in outcomes:
        listed = outcome.node in exclusions
        if listed:
            groups["excluded but passed" if outcome.passed else "excluded"].append(outcome)
        elif outcome.passed:
            groups["passed on the second try (flaky)" if outcome.flaky else "passed"].append(
                outcome)
        else:
            groups["FAILED"].append(outcome)
            print(f"==== {outcome.node}\n{outcome.tail}", file=sys.stderr)
    print(f"{len(nodes)} upstream test functions in {len(modules)} modules")
    for name, group in groups.items():
        print(f"{name}: {len(group)}")
        for o in group:
            reason = f"  ({exclusions[o.node]})" if o.node in exclusions else ""
            print(f"  {o.node}{reason}")
    return 1 if groups["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the Spark engine spends a warm build: per engine step, per Spark stage, per process.

The corpus and tokenizer are ``bench_build.py``'s (standard-library sources as jsonl, a BPE
trained in process). One ``local[n]`` session builds it ``--builds`` times; the first build
warms the Python workers and numba's kernels and is reported like the others. For every
build the script prints:

- *steps*: wall seconds of each engine function (the module's functions are wrapped by
  this script only, by name; the engine itself is unchanged), nested calls indented;
- *processes*: CPU seconds (user + system) over the build of the driver (this Python
  process), the JVM, and the Python workers (PySpark's daemon, its live workers and the
  workers it has reaped), read from ``/proc`` through psutil every 50 ms; and the most
  Python workers alive at once;
- *Spark stages*: from the JVM's status store (the same data as the UI, which the session
  turns off): each stage's tasks, wall span, the summed run time and CPU time of its
  tasks, and its shuffle bytes; a stage with one task, or a long span with little task
  time, is serial.

    PYTHONPATH=. python3 benchmarks/profile_spark_build.py --docs 20000 --master 'local[2]'
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

STEPS = {
    "streammix.pipeline.spark": [
        "_run_prepare", "_unit_stats", "_rejects", "_with_sample_keys", "_run_cluster",
        "_collect_arrow", "connected_components", "lsh_edges", "_write_removed_list",
        "_run_write", "merge_streams", "sidecar_columns", "write_sidecar", "write_token_counts",
        "cluster_columns", "assign_splits", "check_domains_not_empty",
        "describe_stream",
    ],
    "streammix.pipeline.local": ["finish_build"],
}


def load_bench_build() -> Any:
    path = Path(__file__).with_name("bench_build.py")
    spec = importlib.util.spec_from_file_location("bench_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StepClock:
    """Wraps module functions by name and records (depth, name, seconds) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, float]] = []
        self.depth = 0

    def wrap(self, module: Any, name: str) -> None:
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            slot = len(self.calls)
            self.calls.append((self.depth, name, 0.0))
            self.depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                self.calls[slot] = (self.depth, name, time.perf_counter() - started)

        setattr(module, name, timed)


class ProcessSampler:
    """CPU seconds of the driver, the JVM (per thread name) and the Python workers.

    Sampled every 100 ms from ``/proc``: a process or thread that ends keeps its last
    sampled time; the daemon's reaped workers are in its ``children_*`` times.
    """

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.seen: dict[int, tuple[str, float]] = {}
        self.reaped: dict[int, float] = {}  # daemon pid -> children_user + children_system
        self.jvm_threads: dict[int, tuple[str, float]] = {}
        self.max_workers = 0
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.own_cpu = 0.0  # this sampling thread's CPU seconds (subtracted from the driver)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def classify(self, process: psutil.Process, kinds: dict[int, str]) -> str | None:
        try:
            name = process.name()
            cmdline = process.cmdline()
            parent = process.ppid()
        except psutil.Error:
            return None
        if name == "java":
            return "jvm"
        if kinds.get(parent) == "daemon":
            return "worker"
        if any("pyspark.daemon" in part for part in cmdline):
            return "daemon"
        return "other"

    def sample_jvm_threads(self, pid: int) -> None:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / self.ticks
            group = name.rstrip("0123456789#-").strip() or name
            self.jvm_threads[int(tid)] = (group, seconds)

    def sample(self) -> None:
        try:
            children = self.me.children(recursive=True)
        except psutil.Error:
            return
        kinds: dict[int, str] = {}
        workers = 0
        for process in sorted(children, key=lambda p: p.pid):
            kind = self.classify(process, kinds)
            if kind is None:
                continue
            kinds[process.pid] = kind
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            self.seen[process.pid] = (kind, times.user + times.system)
            if kind == "daemon":
                self.reaped[process.pid] = times.children_user + times.children_system
            elif kind == "worker":
                workers += 1
            elif kind == "jvm":
                self.sample_jvm_threads(process.pid)
        self.max_workers = max(self.max_workers, workers)

    def totals(self) -> dict[str, float]:
        self.sample()
        times = self.me.cpu_times()
        driver = times.user + times.system - self.own_cpu
        total = {"driver": driver, "jvm": 0.0, "workers": 0.0, "other": 0.0}
        for kind, seconds in self.seen.values():
            total["workers" if kind in ("daemon", "worker") else kind] += seconds
        total["workers"] += sum(self.reaped.values())
        return total

    def jvm_by_thread(self) -> dict[str, float]:
        groups: dict[str, float] = {}
        for group, seconds in self.jvm_threads.values():
            groups[group] = groups.get(group, 0.0) + seconds
        return groups

    def loop(self) -> None:
        while not self.stop.wait(0.1):
            self.sample()
            self.own_cpu = time.thread_time()


def spark_stages(spark: Any, after: int) -> list[dict]:
    """Stages with id > ``after`` from the JVM's status store, in id order."""
    store = spark.sparkContext._jsc.sc().statusStore()
    gateway = spark.sparkContext._gateway
    quantiles = gateway.new_array(gateway.jvm.double, 0)
    stages = store.stageList(None, False, False, quantiles, None)
    rows = []
    for i in range(stages.size()):
        stage = stages.apply(i)
        if stage.stageId() <= after:
            continue
        submitted = stage.submissionTime()
        completed = stage.completionTime()
        span = (
            (completed.get().getTime() - submitted.get().getTime()) / 1000
            if submitted.isDefined() and completed.isDefined()
            else float("nan")
        )
        rows.append(
            {
                "id": stage.stageId(),
                "name": stage.name().split(" at ")[0] + " @" + stage.name().split(":")[-1],
                "tasks": stage.numTasks(),
                "span": span,
                "run": stage.executorRunTime() / 1000,
                "cpu": stage.executorCpuTime() / 1e9,
                "shuffle_write_mb": stage.shuffleWriteBytes() / 1e6,
                "input_mb": stage.inputBytes() / 1e6,
                "status": str(stage.status()),
            }
        )
    rows.sort(key=lambda row: row["id"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--doc-bytes", type=int, default=2000)
    parser.add_argument("--unit-size", default="2MB")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--builds", type=int, default=2, help="builds on one session")
    parser.add_argument("--stages", action="store_true", help="print every Spark stage")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra Spark setting of the session (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    bench = load_bench_build()
    from streammix.cli.build import parse_size
    from streammix.pipeline.config import BuildConfig, DomainSpec
    from streammix.pipeline.spark_session import local_spark_session

    clock = StepClock()
    for module_name, names in STEPS.items():
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                clock.wrap(module, name)
    from streammix.pipeline import spark as engine

    folder = Path(tempfile.mkdtemp(prefix="profile_spark_"))
    results = []
    try:
        corpus = bench.make_corpus(folder, args.docs, args.doc_bytes)
        num_docs = sum(1 for _ in open(corpus, encoding="utf-8"))
        tokenizer_dir = bench.make_tokenizer(folder / "tok", corpus)
        sampler = ProcessSampler()
        sampler.thread.start()
        extra = dict(item.split("=", 1) for item in args.conf)
        spark = local_spark_session(args.master, shuffle_partitions=4, conf=extra)
        print(f"{num_docs} documents, {args.master}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        last_stage = -1
        for build in range(args.builds):
            config = BuildConfig(
                domains=(DomainSpec(name="code", source=str(corpus)),),
                out=str(folder / f"out{build}"),
                tokenizer=str(tokenizer_dir),
                unit_bytes=parse_size(args.unit_size),
                progress=False,
            )
            clock.calls.clear()
            before = sampler.totals()
            threads_before = sampler.jvm_by_thread()
            sampler.max_workers = 0
            load = os.getloadavg()[0]
            started = time.perf_counter()
            summary = engine.run_spark_build(config, spark)
            wall = time.perf_counter() - started
            after = sampler.totals()
            cpu = {k: after[k] - before[k] for k in after}
            threads = {k: v - threads_before.get(k, 0.0) for k, v in sampler.jvm_by_thread().items()}
            threads = dict(sorted(threads.items(), key=lambda kv: -kv[1]))
            stages = spark_stages(spark, last_stage)
            if stages:
                last_stage = stages[-1]["id"]
            results.append({"build": build, "wall": wall, "cpu": cpu, "load": load,
                            "steps": list(clock.calls), "stages": stages,
                            "stage_seconds": summary.stage_seconds,
                            "max_workers": sampler.max_workers, "jvm_threads": threads})
            print(f"\n## build {build}: {wall:.2f} s wall, load {load:.2f} at start; CPU s: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                  + f"; most Python workers alive: {sampler.max_workers}")
            print("JVM CPU s by thread: " + ", ".join(
                f"{k} {v:.2f}" for k, v in threads.items() if v >= 0.1))
            print("engine stages: " + ", ".join(
                f"{k} {v:.2f}" for k, v in (summary.stage_seconds or {}).items()))
            for depth, name, seconds in clock.calls:
                if seconds >= 0.02:
                    print(f"  {'  ' * depth}{name}: {seconds:.3f}")
            total_run = sum(s["run"] for s in stages)
            total_cpu = sum(s["cpu"] for s in stages)
            print(f"Spark: {len(stages)} stages, {sum(s['tasks'] for s in stages)} tasks, "
                  f"task run {total_run:.2f} s, task CPU (JVM threads) {total_cpu:.2f} s, "
                  f"stages with 1 task: {sum(1 for s in stages if s['tasks'] == 1)}")
            groups: dict[str, list[float]] = {}
            for stage in stages:
                group = groups.setdefault(stage["name"], [0, 0, 0.0, 0.0, 0.0])
                group[0] += 1
                group[1] += stage["tasks"]
                group[2] += 0.0 if stage["span"] != stage["span"] else stage["span"]
                group[3] += stage["run"]
                group[4] += stage["cpu"]
            print("| call site | stages | tasks | summed span s | task run s | task JVM CPU s |")
            for name, (count, tasks, span, run, jcpu) in groups.items():
                print(f"| {name} | {count} | {tasks} | {span:.2f} | {run:.2f} | {jcpu:.2f} |")
            if args.stages:
                print("| id | stage | tasks | span s | task run s | task CPU s | shuffle MB |")
                for s in stages:
                    print(f"| {s['id']} | {s['name']} | {s['tasks']} | {s['span']:.2f} | "
                          f"{s['run']:.2f} | {s['cpu']:.2f} | {s['shuffle_write_mb']:.1f} |")
        spark.stop()
        sampler.stop.set()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

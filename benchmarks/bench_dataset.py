"""StreamMixDataset against upstream StreamingDataset on the same shards.

Measured in one run, on generated MDS domains (local, zstd-compressed shards):

1. **Throughput**: steady samples/s (after the first batch, whose latency is reported apart) through a torch DataLoader (batch 64) with num_workers 0 and 2,
   StreamMixDataset (natural weights) against plain StreamingDataset(shuffle=True, py1e),
   alternating the two, ``--repeats`` times each; medians and the ratio.
2. **Resume latency**: a fresh StreamMixDataset, ``load_state_dict`` at a deep position
   (default 1e8 samples into a 2e8-sample epoch), time until the first sample arrives.
3. **Weight-update stall** (exact mode, 2 workers): a training loop that "computes" for
   ``--step-ms`` per batch publishes new weights every 20 batches; the stall is the extra
   wait for the batch right after an update, over the median wait of the others.
4. **Cost per decision as decisions pile up** (``--decisions``, default 10,000): one ODM
   decision per batch, as OnlineMixing makes them: ``policy.update``, ``dataset.publish``
   (the channel's append and horizon), the history line, then what a DataLoader worker does
   with it (read the channel, extend its schedule). Medians of the decisions just before
   100, 1,000 and 10,000; flat is the goal.
5. **Packed throughput** (``--only packed`` or part of the full run): tokens/s of
   StreamMixDataset packing blocks of ``--block`` tokens by domain from token documents,
   against upstream StreamingDataset over the same tokens pre-packed into fixed-length MDS
   samples (as llm-foundry's concat-tokens converter writes them), num_workers 0 and 2; and
   the time to the first block after resuming at token position 1e10. With num_workers 0
   the reading process's CPU time is measured too (tokens per CPU-second): on a machine
   shared with other jobs it varies far less than the wall-clock rate.

    python3 benchmarks/bench_dataset.py [--quick] [--only decisions|packed|resume]

``--only resume`` times the resume (2.) with C = 1 and C = 8 canonical nodes, alternating.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from streaming import MDSWriter, Stream, StreamingDataset
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset

DOMAINS = ("web", "code", "papers")


def make_shards(root: Path, samples_per_domain: int) -> list[Path]:
    rng = np.random.Generator(np.random.PCG64(0))
    words = [f"w{i}" for i in range(5000)]
    dirs = []
    for name in DOMAINS:
        out = root / name
        dirs.append(out)
        if out.exists():
            continue
        with MDSWriter(out=str(out), columns={"text": "str", "uid": "int"}, compression="zstd",
                       size_limit=1 << 20) as writer:
            for i in range(samples_per_domain):
                text = " ".join(rng.choice(words, size=int(rng.integers(20, 60))))
                writer.write({"text": text, "uid": i})
    return dirs


def _collate(samples: list[dict]) -> int:
    return len(samples)


def _throughput(dataset, workers: int, limit: int, batch: int) -> tuple[float, float]:
    """(seconds to the first batch, steady samples/s after it)."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=_collate)
    started = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - started
    seen = 0
    started = time.perf_counter()
    for size in iterator:
        seen += size
        if seen >= limit:
            break
    return first, seen / (time.perf_counter() - started)


def bench_throughput(dirs: list[Path], *, workers: int, limit: int, repeats: int) -> dict:
    batch = 64
    ours, upstream, first_ours, first_upstream = [], [], [], []
    for _ in range(repeats):
        gc.collect()
        mix = StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=batch,
                               mixing=MixingConfig(seed=1))
        first, rate = _throughput(mix, workers, limit, batch)
        first_ours.append(first)
        ours.append(rate)
        del mix
        gc.collect()
        plain = StreamingDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=batch,
                                 shuffle=True, shuffle_seed=1)
        first, rate = _throughput(plain, workers, limit, batch)
        first_upstream.append(first)
        upstream.append(rate)
        del plain
    return {"workers": workers, "streammix": statistics.median(ours),
            "upstream": statistics.median(upstream),
            "ratio": statistics.median(ours) / statistics.median(upstream),
            "runs_streammix": ours, "runs_upstream": upstream,
            "first_batch_s": statistics.median(first_ours),
            "first_batch_upstream_s": statistics.median(first_upstream)}


def bench_resume(dirs: list[Path], *, position: int, repeats: int,
                 canonical_nodes: int | None = None) -> dict:
    latencies, constructions = [], []
    for _ in range(repeats):
        gc.collect()
        def make() -> StreamMixDataset:  # upstream mutates Streams: fresh ones every time
            return StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=64,
                                    epoch_size=2 * position,
                                    mixing=MixingConfig(seed=1, canonical_nodes=canonical_nodes))

        state = make().state_dict(position, True)
        gc.collect()
        started = time.perf_counter()
        dataset = make()
        constructions.append(time.perf_counter() - started)
        dataset.load_state_dict(state)
        next(iter(dataset))
        latencies.append(time.perf_counter() - started)
        del dataset
    return {"position": position, "median_s": statistics.median(latencies), "runs": latencies,
            "construction_median_s": statistics.median(constructions),
            "after_construction_median_s": statistics.median(
                [t - c for t, c in zip(latencies, constructions)])}


def bench_stall(dirs: list[Path], *, step_ms: float, batches: int) -> dict:
    gc.collect()
    dataset = StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=64,
                               mixing=MixingConfig(seed=1, weight_updates="exact"))
    interval = 20
    dataset.publish(0, [1, 1, 1], final_until=interval)
    loader = DataLoader(dataset, batch_size=64, num_workers=2, collate_fn=_collate,
                        prefetch_factor=2)
    waits, after_update = [], []
    rng = np.random.Generator(np.random.PCG64(3))
    iterator = iter(loader)
    for b in range(batches):
        started = time.perf_counter()
        next(iterator)
        wait = time.perf_counter() - started
        (after_update if b and b % interval == 0 else waits).append(wait)
        time.sleep(step_ms / 1000)  # the training step
        if (b + 1) % interval == 0:
            dataset.publish(b + 1, rng.dirichlet([1, 1, 1]).tolist(), final_until=b + 1 + interval)
    del iterator, loader
    steady = statistics.median(waits[5:])
    return {"step_ms": step_ms, "steady_wait_ms": 1000 * steady,
            "wait_after_update_ms": 1000 * statistics.median(after_update),
            "stall_ms": 1000 * (statistics.median(after_update) - steady),
            "stall_in_batch_times": (statistics.median(after_update) - steady)
            / (step_ms / 1000 + steady)}


def make_token_domains(root: Path, docs_per_domain: int, block: int) -> tuple[list, list]:
    """Token documents (random lengths 50-500, uint16 ids) per domain, plus the same tokens
    pre-packed per domain into ``block``-token samples (separator 0 after each document)."""
    from streammix.format.sidecar import write_token_counts

    rng = np.random.Generator(np.random.PCG64(1))
    docs, packed = [], []
    for name in DOMAINS:
        out, pre = root / f"tok-{name}", root / f"prepacked-{name}"
        docs.append(out)
        packed.append(pre)
        if out.exists():
            continue
        lengths = rng.integers(50, 500, size=docs_per_domain)
        stream = []
        with MDSWriter(out=str(out), columns={"tokens": "ndarray:uint16"}, compression="zstd",
                       size_limit=1 << 22) as writer:
            for n in lengths:
                tokens = rng.integers(1, 50_000, size=int(n)).astype(np.uint16)
                writer.write({"tokens": tokens})
                stream.append(tokens)
                stream.append(np.zeros(1, dtype=np.uint16))
        write_token_counts(out, lengths)
        flat = np.concatenate(stream)
        with MDSWriter(out=str(pre), columns={"tokens": "ndarray:uint16"}, compression="zstd",
                       size_limit=1 << 22) as writer:
            for i in range(len(flat) // block):
                writer.write({"tokens": flat[i * block:(i + 1) * block]})
    return docs, packed


def _tokens_per_s(dataset, workers: int, blocks: int, block: int) -> tuple[float, float]:
    """Tokens per wall-clock second, and per CPU-second of this process (workers=0 only:
    with workers the reading happens in other processes; then NaN)."""
    loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=_collate)
    iterator = iter(loader)
    next(iterator)
    started, cpu_started = time.perf_counter(), time.process_time()
    served = 0
    for size in iterator:
        served += size
        if served >= blocks:
            break
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return served * block / wall, served * block / cpu if workers == 0 else float("nan")


def bench_packed(root: Path, *, docs_per_domain: int, block: int, blocks: int,
                 repeats: int) -> dict:
    docs, packed = make_token_domains(root, docs_per_domain, block)
    result: dict = {"block": block}
    for workers in (0, 2):
        ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
        for _ in range(repeats):
            gc.collect()
            dataset = StreamMixDataset(
                streams=[Stream(local=str(d)) for d in docs], batch_size=8,
                mixing=MixingConfig(seed=1, sequence_length=block, separator_id=0))
            wall, cpu = _tokens_per_s(dataset, workers, blocks, block)
            ours.append(wall)
            ours_cpu.append(cpu)
            del dataset
            gc.collect()
            upstream = StreamingDataset(streams=[Stream(local=str(d)) for d in packed],
                                        batch_size=8, shuffle=True, shuffle_seed=1)
            wall, cpu = _tokens_per_s(upstream, workers, blocks, block)
            theirs.append(wall)
            theirs_cpu.append(cpu)
            del upstream
        result[workers] = (statistics.median(ours), statistics.median(theirs), ours, theirs)
        result[f"cpu{workers}"] = (statistics.median(ours_cpu), statistics.median(theirs_cpu))
    gc.collect()
    resume = []
    for _ in range(repeats):
        dataset = StreamMixDataset(
            streams=[Stream(local=str(d)) for d in docs], batch_size=8,
            mixing=MixingConfig(seed=1, sequence_length=block, separator_id=0))
        position = 10**10 // block // 8 * 8
        state = dataset.state_dict(num_samples=0, from_beginning=True)
        epoch, sample = divmod(position, dataset.epoch_size)
        sample -= sample % 8
        state.update(epoch=epoch, sample_in_epoch=sample)
        state["streammix"]["position"] = epoch * dataset.epoch_size + sample
        del dataset
        gc.collect()
        fresh = StreamMixDataset(
            streams=[Stream(local=str(d)) for d in docs], batch_size=8,
            mixing=MixingConfig(seed=1, sequence_length=block, separator_id=0))
        fresh.load_state_dict(state)
        started = time.perf_counter()
        next(iter(fresh))
        resume.append(time.perf_counter() - started)
        del fresh
    result["resume_s"] = statistics.median(resume)
    return result


def _print_packed(r: dict) -> None:
    for workers in (0, 2):
        ours, theirs, runs_ours, runs_theirs = r[workers]
        print(f"packed {r['block']}-token blocks, workers={workers}: streammix "
              f"{ours:,.0f} tokens/s, upstream pre-packed {theirs:,.0f} tokens/s, ratio "
              f"{ours / theirs:.2f} (runs {[round(x) for x in runs_ours]} vs "
              f"{[round(x) for x in runs_theirs]})", flush=True)
        ours_cpu, theirs_cpu = r[f"cpu{workers}"]
        if workers == 0:
            print(f"  per CPU-second of the reading process: streammix {ours_cpu:,.0f} tokens, "
                  f"upstream {theirs_cpu:,.0f} tokens, ratio {ours_cpu / theirs_cpu:.2f}",
                  flush=True)
    print(f"packed resume at token position 1e10: first block after {r['resume_s']:.3f} s "
          "(median)", flush=True)


def bench_decisions(dirs: list[Path], *, decisions: int, root: Path) -> dict:
    import pickle

    from streammix.composer.history import HistoryWriter
    from streammix.mixing.protocol import Observation
    from streammix.mixing.registry import make_policy

    gc.collect()
    dataset = StreamMixDataset(streams=[Stream(local=str(d)) for d in dirs], batch_size=8,
                               mixing=MixingConfig(seed=1, weight_updates="exact"))
    worker = pickle.loads(pickle.dumps(dataset))  # a DataLoader worker's copy
    policy = make_policy("odm", interval=1)
    state = policy.init(len(DOMAINS), np.asarray(dataset.initial_weights))
    decision, state = policy.start(state)
    history = HistoryWriter(root / "history.jsonl", DOMAINS)
    history.rewrite([])
    losses, counts = np.array([2.0, 6.0, 3.0]), np.array([3.0, 3.0, 2.0])
    main_s, worker_s = [], []
    for step in range(decisions):
        started = time.perf_counter()
        if step:
            decision, state = policy.update(state, Observation(
                step=step, train_loss=losses, train_count=counts))
        dataset.publish(step, decision.weights.tolist(), final_until=step + 1)
        history.append({"step": step, "phase": decision.phase, "num_steps": 1,
                        "weights": decision.weights.tolist(), "train_loss": losses.tolist(),
                        "train_count": counts.tolist(), "val_loss": None, "info": {}})
        middle = time.perf_counter()
        updates = worker.channel.wait_until_final(step, timeout_s=10).updates
        worker.schedule_for(updates)
        main_s.append(middle - started)
        worker_s.append(time.perf_counter() - middle)
    marks = [m for m in (100, 1_000, 10_000, 100_000) if m <= decisions]
    window = 50

    def at(values: list[float], mark: int) -> float:
        return statistics.median(values[mark - window:mark]) * 1e6

    result = {"marks": marks, "main_us": [at(main_s, m) for m in marks],
              "worker_us": [at(worker_s, m) for m in marks]}
    dataset.channel.close()
    del dataset, worker
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-domain", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=60_000, help="samples read per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resume-position", type=int, default=100_000_000)
    parser.add_argument("--step-ms", type=float, default=50.0)
    parser.add_argument("--data", type=Path, default=None, help="keep shards here")
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--block", type=int, default=512, help="tokens per packed block")
    parser.add_argument("--only", choices=["decisions", "packed", "resume"], default=None,
                        help="run only this part")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.samples_per_domain, args.limit, args.repeats = 20_000, 10_000, 1
        args.resume_position = 1_000_000
    root = args.data or Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        if args.only == "packed":
            _print_packed(bench_packed(root, docs_per_domain=args.samples_per_domain // 10,
                                       block=args.block, blocks=args.limit // 10,
                                       repeats=args.repeats))
            return
        dirs = make_shards(root, args.samples_per_domain)
        if args.only == "decisions":
            _print_decisions(bench_decisions(dirs, decisions=args.decisions, root=root))
            return
        if args.only == "resume":  # C = 1 against C = 8 canonical nodes, alternating
            for canonical_nodes in (1, 8) * args.repeats:
                r = bench_resume(dirs, position=args.resume_position, repeats=1,
                                 canonical_nodes=canonical_nodes)
                print(f"resume at position {r['position']:.0e}, C = {canonical_nodes}: first "
                      f"sample after {r['median_s']:.3f} s (construction "
                      f"{r['construction_median_s']:.3f} s, then load_state_dict and the first "
                      f"sample {r['after_construction_median_s']:.3f} s)", flush=True)
            return
        for workers in (0, 2):
            r = bench_throughput(dirs, workers=workers, limit=args.limit, repeats=args.repeats)
            print(f"throughput workers={workers}: streammix {r['streammix']:,.0f} samples/s, "
                  f"upstream {r['upstream']:,.0f} samples/s, ratio {r['ratio']:.2f} "
                  f"(runs {[round(x) for x in r['runs_streammix']]} vs "
                  f"{[round(x) for x in r['runs_upstream']]}); first batch after "
                  f"{r['first_batch_s']:.2f} s vs {r['first_batch_upstream_s']:.2f} s", flush=True)
        r = bench_resume(dirs, position=args.resume_position, repeats=args.repeats)
        print(f"resume at position {r['position']:.0e}: first sample after {r['median_s']:.3f} s "
              f"(median; runs {[round(x, 3) for x in r['runs']]})", flush=True)
        r = bench_stall(dirs, step_ms=args.step_ms, batches=120 if not args.quick else 60)
        print(f"weight update (exact mode, 2 workers, {r['step_ms']:.0f} ms steps): steady wait "
              f"{r['steady_wait_ms']:.1f} ms, wait after an update {r['wait_after_update_ms']:.1f}"
              f" ms, stall {r['stall_ms']:.1f} ms = {r['stall_in_batch_times']:.2f} batch times",
              flush=True)
        _print_decisions(bench_decisions(dirs, decisions=args.decisions, root=root))
        _print_packed(bench_packed(root, docs_per_domain=args.samples_per_domain // 10,
                                   block=args.block, blocks=args.limit // 10,
                                   repeats=args.repeats))
    finally:
        if args.data is None:
            shutil.rmtree(root, ignore_errors=True)


def _print_decisions(r: dict) -> None:
    for mark, main_us, worker_us in zip(r["marks"], r["main_us"], r["worker_us"]):
        print(f"decision {mark:>6,}: callback side (ODM update, publish, history line) "
              f"{main_us:7.0f} us, worker side (read channel, extend schedule) "
              f"{worker_us:7.0f} us (medians of the 50 decisions before)", flush=True)


if __name__ == "__main__":
    main()

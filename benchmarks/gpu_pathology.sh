#!/usr/bin/env bash
# The pathology mixing benchmark (benchmarks/bench_pathology.py) on one GPU.
#
#   benchmarks/gpu_pathology.sh OUT_DIR            # the GPU preset: GPT-2, 8 layers, width 512,
#                                                  # 8192-token vocabulary (about 30M parameters),
#                                                  # 256-token packed blocks, batch 32, 1200 steps,
#                                                  # 11 recipes x 5 seeds, 4 runs at a time
#   benchmarks/gpu_pathology.sh OUT_DIR --smoke    # the same pipeline at tiny size on the CPU
#
# Writes OUT_DIR/results.json (every run), OUT_DIR/results.md (per-seed table, paired
# differences against stratified and natural with 95% t-intervals) and OUT_DIR/machine.txt
# (GPU, load average, start and end time, wall seconds of the corpus build and of the runs).
# A rerun skips the runs already in results.json. Needs the project installed with torch
# built for CUDA; nothing is downloaded (the corpus is built from files on the machine).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT_DIR [--smoke]" >&2
    exit 2
fi
out=$1
preset=gpu
if [[ ${2:-} == "--smoke" ]]; then
    preset=smoke
elif [[ -n ${2:-} ]]; then
    echo "unknown option: $2 (only --smoke)" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
{
    echo "preset: $preset"
    echo "start: $(date -u +%FT%TZ)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    else
        echo "gpu: none (nvidia-smi not found)"
    fi
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$out/machine.txt"
if [[ $preset == gpu ]]; then
    python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'the gpu preset needs CUDA; use --smoke on a machine without a GPU')"
fi

started=$(date +%s)
# The corpus and build first (CPU work), then the runs, so machine.txt can say which took what.
python3 "$here/bench_pathology.py" --out "$out" --preset "$preset" --prepare-only
built=$(date +%s)
python3 "$here/bench_pathology.py" --out "$out" --preset "$preset"
finished=$(date +%s)
{
    echo "end: $(date -u +%FT%TZ)"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "corpus and build: $((built - started)) s; runs: $((finished - built)) s"
} >> "$out/machine.txt"
cat "$out/machine.txt"

#!/bin/bash
# The trainer on one CUDA GPU, paper preset (B=256, H=512, batch 16): windows/s, data-wait share
# and peak GPU memory of every system (benchmarks.perf.train_throughput), on a synthetic shard
# set made on the spot (32 tracks x 30 s, every core). Runs on a bare CUDA image: needs python3
# with torch, h5py, numpy, joblib, tqdm, pyyaml, pytest (no dvclive: --no-dvclive).
#
#   bash benchmarks/perf/gpu.sh [OUTDIR]     # default runs-bench/gpu; ~6 min on one H200
#
# OUTDIR gets all.log (every pass's output, as it goes), util.csv (GPU utilisation every 0.5 s)
# and NAME.json per pass (benchmarks.perf.train_throughput's JSON). Passes, most important first:
#   1. paper-w6: all systems, bf16 autocast, 6 loader workers (params/paper.yaml)
#   2. paper-w2, paper-w12: step1 and step3 with 2 and 12 workers (is the GPU waiting for data?)
#   3. paper-w6-fp32: steps 1-3 without autocast
#   4. paper-w6-b32, paper-w6-b64: step1 and step3 at batch 32 (the batch recommended for a GPU,
#      reports/bench/findings/35-batch-size-and-lr-rule.md) and 64; the lr follows by the sqrt rule
# then the GPU utilisation of each pass (benchmarks.perf.gpu_util: util.json) and the FLOPs per
# window of each system with the achieved TFLOP/s and share of the bf16 peak
# (benchmarks.perf.step_flops: flops.json).
set -u
OUT=${1:-runs-bench/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."  # the repository root: `python -m` finds benchmarks, prep and train
# there, so the project need not be installed
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG=$OUT/all.log
SYN=${SYNTHETIC:-/tmp/scorecritic-bench-shards}
# smoke test elsewhere: DEVICE=cpu PRESET=tiny STEPS=2 TRACKS=4 bash benchmarks/perf/gpu.sh /tmp/g
STEPS=${STEPS:-80} DEVICE=${DEVICE:-cuda} PRESET=${PRESET:-paper} TRACKS=${TRACKS:-32}
{
    date
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY -c "import sys, torch, h5py, numpy; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.version.cuda, 'h5py', h5py.__version__, 'numpy',
numpy.__version__, 'cpus', __import__('os').cpu_count())"
} 2>&1 | tee "$LOG"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
    > "$OUT/util.csv" 2>&1 &
UTIL=$!
trap 'kill $UTIL 2>/dev/null' EXIT

bench() {  # bench NAME ARGS...: one train_throughput pass, its output appended to the log
    local name=$1
    shift
    echo "== $name: $* ($(date +%T))" | tee -a "$LOG"
    $PY -m benchmarks.perf.train_throughput --preset "$PRESET" --device "$DEVICE" --steps "$STEPS" \
        --no-dvclive --synthetic "$SYN" --train-tracks "$TRACKS" --seconds 30 \
        --json "$OUT/$name.json" "$@" 2>&1 | tee -a "$LOG" | grep -v -e "^\[" -e "Warning" \
        -e "check_worker_number_rationality"  # the tables (or the error), not the epochs
    local status=${PIPESTATUS[0]}
    [ "$status" = 0 ] || echo "!! $name failed with exit status $status" | tee -a "$LOG"
}

bench paper-w6 --workers 6
for workers in 2 12; do
    bench "paper-w$workers" --workers "$workers" --systems step1,step3
done
bench paper-w6-fp32 --workers 6 --fp32 --systems step1,step2,step3
bench paper-w6-b32 --workers 6 --batch-size 32 --systems step1,step3
bench paper-w6-b64 --workers 6 --batch-size 64 --systems step1,step3
echo "done $(date +%T)" | tee -a "$LOG"
# GPU utilisation per pass, and FLOPs per window (counted on CPU) -> TFLOP/s, share of bf16 peak
$PY -m benchmarks.perf.gpu_util "$OUT" 2>&1 | tee -a "$LOG"
$PY -m benchmarks.perf.step_flops --preset "$PRESET" --batch-size 16 --systems step1,step2,step3,scorecritic \
    --throughput "$OUT"/paper-*.json --json "$OUT/flops.json" 2>&1 | grep -v "^\[" | tee -a "$LOG"

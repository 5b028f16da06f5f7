#!/usr/bin/env bash
# The GPU checks of issue 23 ("GPU-shaped defaults") in one script, for the day a GPU is lent:
#
#     benchmarks/gpu.sh                 # from the repository root, in a venv with a CUDA build of torch
#     PYTHON=python benchmarks/gpu.sh   # another interpreter than .venv/bin/python
#     OUT=/some/dir benchmarks/gpu.sh   # where the logs go (default outputs/gpu_checks)
#     DEVICE=cpu SMALL=1 benchmarks/gpu.sh   # dry run of the script itself on a CPU (tiny settings)
#
# Nothing of it has run on a GPU yet: the times below are estimates for one H100/H200. Each part has a
# hard timeout (the sum is 540 s), and a part that fails or times out does not stop the others; the
# script ends with each part's exit status (124: timed out) and exits non-zero if any failed.
#
#   part  what                                                     expected   timeout
#   1     pytest -m gpu tests/gpu: CUDA = CPU in float64 (1e-6),   ~1-2 min   150 s
#         chunking bit for bit, whole batches after .to("cuda"),
#         compiled simulator (Triton compiles ~3 kernels), one
#         bf16-mixed Lightning training step
#   2     sim_throughput --only-chunks: hst_ensai (192 px) at      ~1 min      90 s
#         batch 256, automatic chunk (the whole batch) against
#         chunks of 28 (every device's chunk before issue 23)
#   3     train_throughput, quickstart and AlexNet rows, batch     ~1.5 min   120 s
#         256, trainer=gpu (bf16-mixed, channels-last)
#   4     train_throughput, ResNet-18 on 192 px, batch 256: the    ~1.5 min   120 s
#         automatic (ImageNet) stem, then the small stem (before)
#   5     flops.py --table-only (CPU, meta tensors)                ~15 s       60 s
#
# What to compare:
#   1  all pass (no skips: a skip means torch sees no CUDA device).
#   2  "auto (256 images)" against "28 images": the issue measured ~820,000 against ~70,000 img/s on an
#      H200 (at batch 256 the host's parameter draws may cap the automatic row lower; the ratio is the check).
#   3  images/s, and the render share: rendering should be a small part of a step (render ms against
#      fwd+bwd+opt ms); compare with scaling.md's projections.
#   4  the automatic stem should train several times faster than the small one (15x fewer FLOPs, part 5).
#   5  ResNet-18/34/50 at 192 px: "before / now" >= 8x (counted: 40.0 -> 2.7 GFLOP for ResNet-18, 15x).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-outputs/gpu_checks}
mkdir -p "$OUT"
export LENSCNN_GPU_TEST_DEVICE=$DEVICE   # where tests/gpu run (cpu: a dry run of the tests' code)

if [[ -n "${SMALL:-}" ]]; then   # a dry run: every part with tiny settings, 4x the timeouts (a slow CPU)
    SIM=(--batch 32 --seconds 1 --chunk-sizes 8)
    TRAIN=(--batch 8 --steps 2 --warmup 1)
    SCALE=4
else
    SIM=(--batch 256 --seconds 6 --chunk-sizes 28)
    TRAIN=(--batch 256 --steps 30 --warmup 10)
    SCALE=1
fi

declare -a STATUS=()

part() {   # part NAME TIMEOUT COMMAND...: run it with a timeout, log to $OUT/NAME.log, record its status
    local name=$1 limit=$2
    shift 2
    limit=$((limit * SCALE))
    echo "=== $name (timeout ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    STATUS+=("$name: exit $rc in $((SECONDS - start)) s")
    echo
}

echo "device $DEVICE, $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "(no CUDA device)")')"

part 1_tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu --durations=5
part 2_sim_chunks 90 "$PYTHON" benchmarks/sim_throughput.py --device "$DEVICE" --only-chunks "${SIM[@]}"
part 3_train 120 "$PYTHON" benchmarks/train_throughput.py --device "$DEVICE" "${TRAIN[@]}"
part 4_train_resnet18 120 bash -c '"$0" benchmarks/train_throughput.py --only resnet18 "${@}" &&
    "$0" benchmarks/train_throughput.py --only resnet18 --override model.net.stem=small "${@}"' \
    "$PYTHON" --device "$DEVICE" "${TRAIN[@]}"
part 5_flops 60 "$PYTHON" benchmarks/flops.py --table-only

echo "=== summary (logs in $OUT)"
printf '%s\n' "${STATUS[@]}" | tee "$OUT/summary.txt"
! grep -qv ": exit 0 in" "$OUT/summary.txt"

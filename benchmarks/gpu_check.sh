#!/usr/bin/env bash
# GPU check for a lent CUDA machine (no network there), under 8 minutes: the CUDA-marked tests,
# the faiss GPU path when faiss-gpu is installed, and benchmarks/gpu_step_time.py on the GPU
# (eager, compiled, compiled with CUDA graphs via mode="reduce-overhead", pytorch-dnc if present).
#
#   bash benchmarks/gpu_check.sh          # from the repo root; results in $OUT (default gpu_check_out)
#
# Without CUDA it runs the same steps quickly: the CUDA tests skip and the benchmark does a tiny
# CPU pass (--device cpu --quick), which is how the script's logic is tested on a CPU machine.
#
# Packages the GPU machine lacks travel as wheels in .gpu_wheels/ (git-ignored). Fill it once on a
# machine with network, from the repo root (Python 3.12 x86-64 on the GPU machine):
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
#      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
#   pip download $P -d .gpu_wheels optree faiss-cpu      # optree: memfn needs it; faiss-cpu: `import dnc` needs faiss
#   pip download --no-deps --no-binary :all: -d .gpu_wheels dnc==1.1.0   # pytorch-dnc, an sdist (optional)
# faiss-gpu does not fit: faiss-gpu-cu12 1.14.1.post1 is a 48 MB wheel that also needs the CUDA 12
# runtime and cuBLAS wheels (hundreds of MB; the machine's torch is CUDA 13), faiss-gpu 1.15.1 is
# 135 MB on its own, no faiss-gpu-cu13 wheel exists on PyPI, and a device run carries 64 MiB in all.
# A faiss with StandardGpuResources found in .gpu_wheels or on the machine is used; else those tests skip.
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_wheels"], timeout_s=540).
#
# memfn itself is used from the working tree via PYTHONPATH (no pip install -e: nothing is built or
# written into the tree, and the image's environment stays as it was). Carried wheels go to a
# --target folder on /tmp, also put on PYTHONPATH. Every step runs even when an earlier one failed;
# the statuses are listed at the end, and the script exits non-zero if a step failed.
set -uo pipefail

OUT=${OUT:-gpu_check_out}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.gpu_wheels}
SITE=${SITE:-/tmp/memfn_gpu_site}
TOTAL_S=${TOTAL_S:-450} # the whole script's budget (under 8 minutes)
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
export PYTHONUNBUFFERED=1
STATUS=()
step() { # step NAME COMMAND...: run, log, remember the status
    local name=$1 rc t0
    shift
    t0=$(date +%s)
    echo
    echo "=== $name ($(elapsed) s into the run)"
    "$@"
    rc=$?
    STATUS+=("$(printf '%-12s %s (rc %s, %s s)' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" $rc $(($(date +%s) - t0)))")
    return 0
}
skip() { STATUS+=("$(printf '%-12s skipped: %s' "$1" "$2")"); echo; echo "=== $1: skipped ($2)"; }

env_info() {
    date -u
    nvidia-smi || echo "(no nvidia-smi)"
    "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| available', torch.cuda.is_available(),
'|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
}
step env env_info

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    GPU=1
else
    GPU=0
    echo "no CUDA device: CUDA tests will skip and the benchmark does a quick CPU pass"
fi

install_wheels() {
    local rc=0 f
    mkdir -p "$SITE"
    for f in "$WHEELS"/*.whl "$WHEELS"/*.tar.gz; do
        [ -e "$f" ] || continue
        # One at a time, so one that fails (a missing dependency, an sdist that won't build) leaves the rest.
        if timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --no-build-isolation --find-links "$WHEELS" --target "$SITE" "$f"; then
            echo "installed $(basename "$f")"
        else
            echo "FAILED to install $(basename "$f") (continuing)"
            rc=1
        fi
    done
    return $rc
}
if [ $GPU -eq 0 ]; then
    skip install "no GPU (this machine's own packages are used)"
elif ls "$WHEELS"/*.whl "$WHEELS"/*.tar.gz >/dev/null 2>&1; then
    step install install_wheels
else
    skip install "no $WHEELS folder (see the header to fill it)"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"

packages() {
    "$PYTHON" - <<'EOF'
import importlib
for name in ("memfn", "optree", "faiss", "dnc"):
    try:
        m = importlib.import_module(name)
        extra = " (GPU: StandardGpuResources)" if name == "faiss" and hasattr(m, "StandardGpuResources") else ""
        print(f"{name}: {getattr(m, '__version__', '?')} from {m.__file__}{extra}")
    except Exception as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
import memfn  # the step fails if memfn itself cannot be imported
EOF
}
step packages packages

# The CUDA-marked tests (tests/test_cuda.py; test_knn.py's faiss-gpu test), without xdist: one
# process owns the GPU.
step tests timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda --junitxml="$OUT/pytest_cuda.xml" \
    tests/test_cuda.py tests/test_knn.py

BENCH_S=$((TOTAL_S - $(elapsed)))
if [ $BENCH_S -lt 60 ]; then
    skip benchmark "only $BENCH_S s left of $TOTAL_S"
elif [ $GPU -eq 1 ]; then
    # --budget stops starting new cases; timeout is the hard stop (the JSON is written after every case).
    step benchmark timeout $BENCH_S "$PYTHON" benchmarks/gpu_step_time.py --device cuda \
        --budget $((BENCH_S - 90)) --json "$OUT/gpu_step_time.json"
else
    step benchmark timeout $BENCH_S "$PYTHON" benchmarks/gpu_step_time.py --device cpu --quick \
        --variants eager dnc --json "$OUT/gpu_step_time.json"
fi

echo
echo "=== summary ($(elapsed) s; GPU: $([ $GPU -eq 1 ] && echo yes || echo no); log: $LOG)"
FAILED=0
for s in "${STATUS[@]}"; do
    echo "  $s"
    [[ $s == *FAILED* ]] && FAILED=1
done
exit $FAILED

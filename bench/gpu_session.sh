#!/usr/bin/env bash
# Every GPU check of the project in one short run, for a lent GPU machine with little time on it
# (the device tool: one H100/H200, ~15 minutes in all, machine start included; nothing can be downloaded there).
#
# Prepare here (needs PyPI), once per checkout — the optional peers of the kernel benchmarks, as wheels:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform any -d .whl liger-kernel cut-cross-entropy
# Then run it there with `.whl` carried:
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=590)
# Or on any CUDA machine with the project's dependencies installed: `OUT=/tmp/out bash bench/gpu_session.sh`.
#
# Steps, most important first, each under its own time limit so that one slow step cannot eat the rest:
#   1. the CUDA tests: Triton kernels compiled for real (fp32/fp16 against fp64, bf16 error within 2x torch's),
#      the CUDA sampling operator, the compiled (CUDA-graph) decode step;
#   2. kernel benchmarks at the Llama-3-8B head (ours vs eager, compiled chunking, Liger, Cut Cross-Entropy);
#   3. generation: a 1B model against transformers, with the HBM roofline fraction;
#   4. training steps (SFT MFU, DPO memory).
# Logs and result JSON land in $OUT (at most 8 files come back: keep it so); commit bench/results/*-cuda*.json.
set -u
trap 'echo "stopped by a signal" >&2; exit 130' TERM INT  # a killed session stops, instead of starting the next step
OUT=${OUT:-/tmp/srlm-gpu-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
PY=${PY:-python3}
LOG="$OUT/gpu_session.log"
start=$(date +%s)

step() {  # step <name> <seconds> <command...>: run with a time limit, log it, never stop the session
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at +$(($(date +%s) - start))s) ===" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} ===" | tee -a "$LOG"
}

collect() {  # the result JSON of this device, merged into one file (the 8-file limit on what comes back)
    "$PY" - "$OUT/results-cuda.json" <<'EOF'
import json, pathlib, sys
results = {p.name: json.loads(p.read_text()) for p in sorted(pathlib.Path("bench/results").glob("*.json"))
           if "cuda" in p.name or "h100" in p.name.lower() or "h200" in p.name.lower()}
pathlib.Path(sys.argv[1]).write_text(json.dumps(results, indent=1))
print("collected:", ", ".join(results) or "nothing")
EOF
}

# Limits sum to ~560 s: the session must end inside one 600 s command.
step "environment" 30 bash -c "nvidia-smi -L; $PY -c 'import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())'"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The project itself, without touching the machine's torch (no dependency resolution, no downloads).
step "install" 60 "$PY" -m pip install -q --no-deps --no-build-isolation -e .

step "cuda tests" 120 "$PY" -m pytest -q -x -p no:cacheprovider \
    tests/kernels tests/test_sampling.py tests/test_generate.py -m "cuda or not slow"
# The 8B head at 4k and 16k tokens (32k too when a later session has the time: drop the --shape flags).
step "bench: fused linear cross-entropy" 100 "$PY" bench/bench_fused_linear_cross_entropy.py \
    --shape 4096 4096 128256 --shape 16384 4096 128256 --shape 8192 2048 32000 --iters 5
collect
step "bench: fused DPO" 50 "$PY" bench/bench_fused_linear_dpo.py --iters 5
collect
# The compiled decode step compiles once per attended-length bucket: most of this step may be compilation.
step "bench: generation (1B)" 140 "$PY" bench/bench_generate.py --preset llama-3.2-1b --iters 2
collect
step "bench: training steps (1B)" 60 "$PY" bench/bench_train.py --iters 3
collect
echo "total $(($(date +%s) - start))s" | tee -a "$LOG"

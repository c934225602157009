#!/usr/bin/env bash
# The prepared GPU run: one command on a machine with a CUDA GPU and no network.
#
#   bash bench/gpu_session.sh [STEPS]
#
# STEPS (comma-separated; default all; always run in this order, the most important first):
#   tests-fixed   the re-fixed GPU tests and the property suite on CuPy
#   tests-gpu     every other test marked `gpu`
#   tests-cuda    the CUDA kernels' host-side tests (transliterations, launchers, nvcc builds)
#   deconv-cupy   run_deconvolution_full, 10,000 x 27,000, fft and banded: cold, warm, peak
#                 device memory, parity with the NumPy backend on 32 cells spread over the batch
#   deconv-jax    the same on JAX
#   oom           the FFT solve again under a CuPy pool limit of a quarter of its peak
#   cadecon-cupy  run_cadecon, 1000 x 27,000 simulated (known kernel): cold and warm, phases,
#                 then the taus on the first 200 cells against the NumPy backend's
#   cadecon-jax   the same on JAX
#   indeca-cupy   solve_traces at u = 10, 1000 x 27,000: wall time, peak device memory
#   indeca-jax    the same on JAX
#   dataset       deconvolve_dataset from a Zarr input bigger than a CuPy pool limit
# Aliases: tests, deconv, cadecon, indeca (both backends / all three test steps).
#
# The whole session ends within MAX_SECONDS (default 470).  Every step has a budget (B_<STEP>,
# e.g. B_DECONV_CUPY=90, dashes as underscores); a step may also use what earlier steps left
# unused, never what later steps are owed, and is skipped when less than 10 s remain for it.
# Python steps print each row as it is measured; everything lands in $OUT:
#   session.log (all output), rows.jsonl (one JSON row per measurement), pytest.log,
#   cadecon_cpu.log (the NumPy subset run, in the background on the host CPU).
#
# Environment:
#   OUT         results folder (default $TMPDIR/gpu-session-out)
#   WORK        scratch data and caches (default $TMPDIR/gpu-session-work)
#   PYTHON      interpreter (default python3)
#   CALAB_GPU_DRY=1   rehearsal on a machine without a GPU: small sizes, NumPy stands in
#                     for CuPy, JAX runs on the CPU, budgets x3 (BUDGET_SCALE), 1500 s in all
#   CPU_THREADS threads of the background NumPy run (default a quarter of the cores, 1..4)
#
# Python packages the image may lack (pydantic, zarr and their needs) are installed from the
# wheels in .whl/ (fetch them with `bash bench/gpu_wheels.sh`; carry `.whl` to the machine).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-${TMPDIR:-/tmp}/gpu-session-out}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu-session-work}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export OUT WORK PYTHONUNBUFFERED=1
DRY=${CALAB_GPU_DRY:-0}
if [ "$DRY" = 1 ]; then
    export CALAB_GPU_SIZE=dry CALAB_GPU_STANDIN=1
    MAX_SECONDS=${MAX_SECONDS:-1500}
    BUDGET_SCALE=${BUDGET_SCALE:-3}
else
    MAX_SECONDS=${MAX_SECONDS:-470}
    BUDGET_SCALE=${BUDGET_SCALE:-1}
fi
DEADLINE=$((SECONDS + MAX_SECONDS))
LOG="$OUT/session.log"
ROWS="$OUT/rows.jsonl"
say() { echo "== $(date -u +%T) [$((SECONDS))s] $*" | tee -a "$LOG"; }
row() { printf '%s\n' "$1" >>"$ROWS"; }

ORDER=(tests-fixed tests-gpu tests-cuda deconv-cupy deconv-jax oom cadecon-cupy cadecon-jax indeca-cupy indeca-jax dataset)
declare -A BUDGET=([tests-fixed]=45 [tests-gpu]=60 [tests-cuda]=25 [deconv-cupy]=70 [deconv-jax]=65 [oom]=25
                   [cadecon-cupy]=55 [cadecon-jax]=45 [indeca-cupy]=20 [indeca-jax]=25 [dataset]=35)
REQUEST=",${1:-all},"
REQUEST=${REQUEST//,tests,/,tests-fixed,tests-gpu,tests-cuda,}
REQUEST=${REQUEST//,deconv,/,deconv-cupy,deconv-jax,}
REQUEST=${REQUEST//,cadecon,/,cadecon-cupy,cadecon-jax,}
REQUEST=${REQUEST//,indeca,/,indeca-cupy,indeca-jax,}
STEPS=()
for step in "${ORDER[@]}"; do
    case "$REQUEST" in *",all,"* | *",$step,"*) STEPS+=("$step") ;; esac
done
budget_of() {
    local name="B_${1//-/_}"
    name=${name^^}
    echo $(( ${!name:-${BUDGET[$1]}} * BUDGET_SCALE ))
}

# --------------------------------------------------------------------------- environment
SITE="$WORK/site"
if ls .whl/*.whl >/dev/null 2>&1; then
    if [ "$DRY" = 1 ]; then
        # Here the interpreter is not the GPU image's (Python 3.12): check that the wheel set
        # installs for it, without using it.
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site-check" \
            --python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 .whl/*.whl \
            && say "wheels: the .whl set installs for CPython 3.12 manylinux x86_64 ($(ls .whl/*.whl | wc -l) wheels)" \
            || say "WARNING: the .whl set does not install for CPython 3.12"
        export PYTHONPATH=$PWD
    elif "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
        export PYTHONPATH=$PWD:$SITE
    else
        say "WARNING: the wheels in .whl/ did not install; going on without them"
        export PYTHONPATH=$PWD
    fi
else
    say "no .whl/ folder: pydantic and zarr must already be importable"
    export PYTHONPATH=$PWD
fi
say "session: steps ${STEPS[*]}; at most ${MAX_SECONDS} s; dry=${DRY}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
else
    say "no nvidia-smi here"
fi
timeout 60 "$PY" bench/gpu_proof.py env 2>&1 | tee -a "$LOG"

# The NumPy backend's CaDecon taus on the subset run on the host CPU, in the background,
# from the start: it is slow on a CPU, and a few cores are enough to finish in time.
BG_PID=
case " ${STEPS[*]} " in *" cadecon-"*)
    cores=$(nproc)
    threads=${CPU_THREADS:-$((cores / 4 < 1 ? 1 : (cores / 4 > 4 ? 4 : cores / 4)))}
    say "background: NumPy run_cadecon on the subset, ${threads} thread(s), niced"
    nice -n 10 env CUDA_VISIBLE_DEVICES= CALAB_BACKEND=numpy NUMBA_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
        OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
        timeout "$MAX_SECONDS" "$PY" bench/gpu_proof.py cadecon-cpu >"$OUT/cadecon_cpu.log" 2>&1 &
    BG_PID=$!
    ;;
esac

# --------------------------------------------------------------------------- steps
XDIST=
if "$PY" -c "import xdist" >/dev/null 2>&1 && [ "$(nproc)" -ge 8 ]; then
    XDIST="-n 4"
fi
FIXED="real_out_of_memory or solve_matches_numpy_backend or documented_error_or_finite_documented_output"
PYTEST=("$PY" -m pytest -v -ra -p no:cacheprovider --timeout 240)  # -v: outcomes as they happen

run_step() {
    local step=$1 limit=$2 rc
    local python_part=("$PY" bench/gpu_proof.py --budget $((limit - 3)))
    case "$step" in
    tests-*)
        local args
        case "$step" in
        tests-fixed) args=(tests/test_cuda_gpu.py tests/test_properties.py -m gpu -k "$FIXED") ;;
        tests-gpu) args=(tests -m gpu -k "not ($FIXED)") ;;
        tests-cuda) args=(tests/test_cuda_reference.py tests/test_cuda_launchers.py tests/test_cuda_backend.py
                          tests/test_cuda_nvcc.py -m "not gpu") ;;
        esac
        echo "-------- $step: pytest ${args[*]} $XDIST" >>"$OUT/pytest.log"
        XLA_PYTHON_CLIENT_PREALLOCATE=false CUPY_CACHE_DIR="$WORK/cupy-cache-tests" \
            timeout -k 5 "$limit" "${PYTEST[@]}" $XDIST "${args[@]}" >"$WORK/$step.log" 2>&1
        rc=$?
        cat "$WORK/$step.log" >>"$OUT/pytest.log"
        "$PY" bench/gpu_proof.py tests-row --step "$step" --exit "$rc" --log "$WORK/$step.log" 2>&1 | tee -a "$LOG"
        grep -E "^(FAILED|ERROR) " "$WORK/$step.log" | head -20 | tee -a "$LOG"
        ;;
    deconv-cupy) CUPY_CACHE_DIR="$WORK/cupy-cache" timeout -k 5 "$limit" "${python_part[@]}" deconv --backend cupy 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    deconv-jax) timeout -k 5 "$limit" "${python_part[@]}" deconv --backend jax 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    oom) CUPY_CACHE_DIR="$WORK/cupy-cache" timeout -k 5 "$limit" "${python_part[@]}" oom 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    cadecon-cupy) CUPY_CACHE_DIR="$WORK/cupy-cache" timeout -k 5 "$limit" "${python_part[@]}" cadecon --backend cupy 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    cadecon-jax) timeout -k 5 "$limit" "${python_part[@]}" cadecon --backend jax 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    indeca-cupy) CUPY_CACHE_DIR="$WORK/cupy-cache" timeout -k 5 "$limit" "${python_part[@]}" indeca --backend cupy 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    indeca-jax) timeout -k 5 "$limit" "${python_part[@]}" indeca --backend jax 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    dataset) CUPY_CACHE_DIR="$WORK/cupy-cache" timeout -k 5 "$limit" "${python_part[@]}" dataset 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]} ;;
    esac
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        say "$step: stopped at its limit of ${limit} s (the rows above are what it finished)"
        row "{\"part\": \"run\", \"step\": \"$step\", \"stopped\": \"stopped at its limit of ${limit} s\"}"
    elif [ "$rc" != 0 ] && [[ $step != tests-* ]]; then
        say "$step: exit status $rc"
        row "{\"part\": \"run\", \"step\": \"$step\", \"stopped\": \"exit status $rc\"}"
    fi
}

for i in "${!STEPS[@]}"; do
    step=${STEPS[$i]}
    owed=0
    for later in "${STEPS[@]:$((i + 1))}"; do owed=$((owed + $(budget_of "$later"))); done
    limit=$((DEADLINE - SECONDS - owed))
    own=$(budget_of "$step")
    if [ "$limit" -lt 10 ]; then
        say "$step: skipped, ${limit} s left for it"
        row "{\"part\": \"run\", \"step\": \"$step\", \"skipped\": \"${limit} s left for it\"}"
        continue
    fi
    say "$step: up to ${limit} s (own budget ${own} s)"
    run_step "$step" "$limit"
done

if [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null; then
    say "background NumPy run still going: stopped"
    kill "$BG_PID" 2>/dev/null
fi
cat "$OUT/cadecon_cpu.log" 2>/dev/null | grep "^ROW" | tee -a "$LOG" >/dev/null
"$PY" bench/gpu_proof.py summary --rows "$ROWS" 2>&1 | tee -a "$LOG"
say "done"

#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no network; see bench/README.md, "GPU").
#
#   bash bench/gpu_session.sh [PARTS]      PARTS: any of tests,deconv,indeca,chunked,cadecon
#                                          (default: all; run in the order
#                                          tests, deconv, indeca, cadecon, chunked)
#
# Needs `.whl/` carried with pydantic's wheels for cp312 (bench/README.md says how to fetch
# them); writes every log and JSON to $OUT (default: gpu-out/ in the current directory).  Each part has its
# own time limit (T_TESTS, T_DECONV, T_INDECA, T_CADECON, T_CHUNKED seconds) so that one
# slow part cannot take the whole lease, and TESTS_K (pytest -k), DECONV_BACKENDS, DECONV_ARGS,
# CADECON_BACKENDS and CADECON_CALLS narrow a rerun; at most 6 files land in $OUT (the device tool
# brings back 8).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PARTS=${1:-tests,deconv,indeca,cadecon,chunked}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false CUPY_CACHE_DIR=/tmp/cupy-cache
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=$PWD:/tmp/site
    else
        echo "warning: the wheels in .whl/ did not install; going on without them"
        export PYTHONPATH=$PWD
    fi
else
    export PYTHONPATH=$PWD
fi
has() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
stamp() { echo "== $(date -u +%T) $*" | tee -a "$OUT/session.log"; }

stamp "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc; python3 -c "import sys, numpy, scipy, numba, cupy, jax; print(sys.version.split()[0], 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__, 'jax', jax.__version__, jax.devices())"
  git log -1 --format='commit %h %s' 2>/dev/null || true
} 2>&1 | tee -a "$OUT/session.log"

if has tests; then
    stamp "GPU tests"
    timeout ${T_TESTS:-150} python3 -m pytest tests/test_cuda_gpu.py tests/test_cuda_reference.py tests/test_cuda_launchers.py \
        tests/test_cuda_backend.py tests/test_cuda_nvcc.py -q -ra --timeout 60 -p no:cacheprovider ${TESTS_K:+-k "$TESTS_K"} \
        >"$OUT/pytest_gpu.log" 2>&1
    echo "pytest exit $?" | tee -a "$OUT/session.log"
    timeout ${T_PROPERTIES:-60} python3 -m pytest tests/test_properties.py -m gpu -q -ra --timeout 50 -p no:cacheprovider \
        >>"$OUT/pytest_gpu.log" 2>&1
    echo "property tests (-m gpu) exit $?" | tee -a "$OUT/session.log"
    tail -25 "$OUT/pytest_gpu.log"
fi
if has deconv; then
    stamp "deconvolution 10k x 27k (cupy, jax; fft, banded)"
    timeout ${T_DECONV:-180} python3 bench/bench_gpu.py --cells 10000 --frames 27000 --no-reference --repeats 2 \
        --backends ${DECONV_BACKENDS:-cupy,jax} ${DECONV_ARGS:-} \
        --json "$OUT/gpu_10k.json" 2>&1 | tee -a "$OUT/session.log"
fi
if has indeca; then
    stamp "InDeCa 20 x 9000, u = 10"
    timeout ${T_INDECA:-80} python3 bench/bench_gpu_indeca.py --part indeca --backends numpy,cupy,jax --json "$OUT/indeca.json" 2>&1 | tee -a "$OUT/session.log"
fi
if has cadecon; then
    stamp "CaDecon 200 x 9000"
    timeout ${T_CADECON:-110} python3 bench/bench_gpu_indeca.py --part cadecon --backends ${CADECON_BACKENDS:-cupy,jax,numpy} --calls ${CADECON_CALLS:-2} --json "$OUT/cadecon.json" 2>&1 | tee -a "$OUT/session.log"
fi
if has chunked; then
    stamp "InDeCa 1000 x 27000, u = 10"
    timeout ${T_CHUNKED:-60} python3 bench/bench_gpu_indeca.py --part chunked --backends cupy,jax --json "$OUT/chunked.json" 2>&1 | tee -a "$OUT/session.log"
fi
stamp "done"

#!/usr/bin/env bash
# Fetch the wheels the GPU machine's image lacks into .whl/ (git-ignored), for CPython 3.12
# on manylinux x86_64.  Run once, in the repository root of the checkout that is sent to the
# GPU machine, on a machine with access to the package index; then carry `.whl` with the
# command `bash bench/gpu_session.sh` (which installs them with --no-index).
#
# The image has NumPy, SciPy, Numba, tqdm, h5py, CuPy, JAX, pytest, pytest-timeout,
# pytest-xdist and hypothesis; calab also needs pydantic (CaDecon settings, test collection),
# and the streamed-dataset step and tests need zarr.  One version of each (no dependencies are
# resolved on the machine: every wheel needed is listed here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
)
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
# Exactly one wheel per project: two versions of one stop the whole install on the machine.
names=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z' 'a-z' | tr '.' '_' | sort)
if [ -n "$(echo "$names" | uniq -d)" ]; then
    echo "more than one version of: $(echo "$names" | uniq -d | tr '\n' ' ') in .whl/; delete the extra ones" >&2
    exit 1
fi
du -sh .whl
ls .whl

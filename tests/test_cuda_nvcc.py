"""Compile the shipped CUDA sources with ``nvcc`` (skipped when no CUDA compiler is found).

At run time NVRTC compiles the same files through CuPy; here ``nvcc`` builds them ahead of
time for the GPUs calab targets (T4/Colab ``sm_75``, A100 ``sm_80``, H100/H200 ``sm_90``)
with the backend's options, warnings as errors, and checks from ``ptxas`` that every
kernel of the manifest is emitted without spills or local-memory stack frames.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from calab.backends.cuda._sources import COMPILE_OPTIONS, KERNEL_FILES, kernel_file


def find_nvcc() -> str | None:
    candidates = [shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(str(Path(root) / "bin" / "nvcc"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


NVCC = find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDA_HOME or put nvcc on PATH)")

ARCHS = ("75", "80", "90")


@pytest.mark.parametrize("filename", sorted(KERNEL_FILES))
def test_nvcc_compiles_every_kernel(filename, tmp_path):
    source = tmp_path / filename
    source.write_text(kernel_file(filename).read_text())
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    gencode.append("-gencode=arch=compute_90,code=compute_90")  # PTX for newer GPUs
    cmd = [NVCC, *COMPILE_OPTIONS, "--Werror", "all-warnings", "-Xptxas", "-v", "--fatbin", *gencode, "-o", str(tmp_path / "out.fatbin"), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    for arch in ARCHS:
        compiled = set(re.findall(rf"Compiling entry function '(\w+)' for 'sm_{arch}'", log))
        assert compiled == set(KERNEL_FILES[filename]), (arch, log)
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert frames and all(values == ("0", "0", "0") for values in frames), log


@pytest.mark.parametrize("filename", sorted(KERNEL_FILES))
def test_ptx_exports_c_names(filename, tmp_path):
    """``extern "C"``: CuPy's ``RawModule.get_function`` finds the kernels by plain name."""
    source = tmp_path / filename
    source.write_text(kernel_file(filename).read_text())
    ptx = tmp_path / "out.ptx"
    cmd = [NVCC, *COMPILE_OPTIONS, "-arch=sm_90", "-ptx", "-o", str(ptx), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = set(re.findall(r"\.visible \.entry (\w+)\(", ptx.read_text()))
    assert entries == set(KERNEL_FILES[filename])

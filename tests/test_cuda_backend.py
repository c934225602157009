"""CPU tests of the CuPy backend module: probing, registry, package data, consistency.

Nothing here needs a GPU or CuPy: the probe's branches run against a fake ``cupy`` module,
and the kernel manifest, the ``.cu`` sources, the CuPy launchers and the NumPy
transliterations are checked against each other by reading their source.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import calab.backends.cuda as cuda_backend
from calab.backends import backend_info, install_hint
from calab.backends.cuda import CupyBackend, is_out_of_memory, probe_cupy
from calab.backends.cuda._sources import COMPILE_OPTIONS, KERNEL_FILES, kernel_file, kernel_source
from calab.backends.cuda.reference import NumpyKernels

PACKAGE = Path(cuda_backend.__file__).resolve().parent
REPO = PACKAGE.parents[2]


# --------------------------------------------------------------------------- probe
class FakeRuntimeError(RuntimeError):
    pass


def fake_cupy(*, driver=13000, built=13000, count=1, count_error=None, compute_error=None):
    """A stand-in ``cupy`` module exposing what :func:`probe_cupy` touches."""

    def get_count():
        if count_error is not None:
            raise FakeRuntimeError(count_error)
        return count

    runtime = types.SimpleNamespace(
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: built,
        getDeviceCount=get_count,
        getDeviceProperties=lambda i: {"name": b"NVIDIA H200", "totalGlobalMem": 141 * 2**30, "major": 9, "minor": 0},
    )

    class Array:
        def __mul__(self, other):
            if compute_error is not None:
                raise FakeRuntimeError(compute_error)
            return self

        def sum(self):
            return 1.0

        def __float__(self):
            return 1.0

    stream = types.SimpleNamespace(synchronize=lambda: None)
    module = types.ModuleType("cupy")
    module.__version__ = "14.2.0"
    module.float32 = np.float32
    module.cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=lambda *a: types.SimpleNamespace(id=0),
        get_current_stream=lambda: stream,
    )
    module.arange = lambda *a, **k: Array()
    module.fft = types.SimpleNamespace(rfft=lambda a: a)
    return module


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(cuda_backend, "module_installed", lambda name: True)

    def use(module):
        monkeypatch.setitem(sys.modules, "cupy", module)

    return use


def test_probe_without_cupy_names_the_extras(monkeypatch):
    monkeypatch.setattr(cuda_backend, "module_installed", lambda name: False)
    info = probe_cupy()
    assert not info.usable and not info.has_gpu
    assert "not installed" in info.reason
    assert "calab[cuda12]" in info.reason and "calab[cuda13]" in info.reason
    assert info.reason.endswith(install_hint("cupy"))


def test_probe_broken_import(installed):
    installed(None)  # `import cupy` raises ImportError
    info = probe_cupy()
    assert not info.usable and "fails to import" in info.reason and "calab[cuda12]" in info.reason


def test_probe_no_driver(installed):
    installed(fake_cupy(driver=0))
    info = probe_cupy()
    assert not info.usable and "no NVIDIA CUDA driver" in info.reason


def test_probe_driver_too_old_for_toolkit(installed):
    installed(fake_cupy(driver=12020, built=13000, count_error="cudaErrorInsufficientDriver: CUDA driver version is insufficient"))
    info = probe_cupy()
    assert not info.usable
    assert "CUDA 12.2" in info.reason and "CUDA 13.0" in info.reason and "calab[cuda12]" in info.reason


@pytest.mark.parametrize("error", [None, "cudaErrorNoDevice: no CUDA-capable device is detected"])
def test_probe_no_device(installed, monkeypatch, error):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    installed(fake_cupy(count=0, count_error=error))
    info = probe_cupy()
    assert not info.usable and "no CUDA device is visible" in info.reason and "CUDA_VISIBLE_DEVICES=''" in info.reason


def test_probe_other_runtime_error(installed):
    installed(fake_cupy(count_error="cudaErrorUnknown: unknown error"))
    info = probe_cupy()
    assert not info.usable and "cudaErrorUnknown" in info.reason


def test_probe_missing_toolkit_libraries(installed):
    installed(fake_cupy(compute_error="CompileException: nvrtc: cannot open libnvrtc.so.13"))
    info = probe_cupy()
    assert not info.usable and "test computation failed" in info.reason and "[ctk]" in info.reason


def test_probe_usable_device(installed):
    installed(fake_cupy())
    info = probe_cupy()
    assert info.usable and info.has_gpu
    assert "NVIDIA H200" in info.reason and "sm_90" in info.reason and "CuPy 14.2.0" in info.reason


def test_probe_here_never_raises_and_explains():
    info = backend_info("cupy", refresh=True)
    assert info.name == "cupy" and info.reason
    if not info.usable:
        assert not info.has_gpu
    assert CupyBackend.probe().usable == info.usable


def test_importing_the_backend_does_not_import_cupy():
    code = "import sys, calab, calab.backends.cuda, calab.backends.cuda.reference, calab.backends.cuda._driver; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "exc, expected",
    [
        (RuntimeError("cudaErrorMemoryAllocation: out of memory"), True),
        (RuntimeError("CUFFT_ALLOC_FAILED"), True),
        (RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"), True),
        (type("OutOfMemoryError", (Exception,), {})("Out of memory allocating 1,024 bytes"), True),
        (ValueError("bad shape"), False),
        (RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered"), False),
    ],
)
def test_is_out_of_memory(exc, expected):
    assert is_out_of_memory(exc) is expected


def test_chunk_budget_and_recovery(monkeypatch):
    backend = object.__new__(CupyBackend)  # no CuPy needed for the arithmetic
    backend.memory_scale = 1.0
    monkeypatch.setattr(CupyBackend, "free_memory_bytes", lambda self: 139 * 2**30)
    big = backend.max_chunk_cells(50_000, 27_000)
    assert big >= 50_000  # the largest benchmark row fits an H200 in one chunk (estimate)
    backend.memory_scale = 0.5
    assert backend.max_chunk_cells(50_000, 27_000) < big
    monkeypatch.setattr(CupyBackend, "free_memory_bytes", lambda self: 0)
    assert backend.max_chunk_cells(10, 1000) == 1


# --------------------------------------------------------------------------- sources
def test_package_data_declared_and_shipped():
    text = (REPO / "pyproject.toml").read_text()
    assert '"calab.backends.cuda" = ["kernels/*.cu"]' in text
    shipped = sorted(p.name for p in (PACKAGE / "kernels").glob("*.cu"))
    assert shipped == sorted(KERNEL_FILES)
    for name in KERNEL_FILES:
        assert kernel_file(name).is_file()


@pytest.mark.parametrize("filename", sorted(KERNEL_FILES))
def test_sources_list_exactly_the_manifest_kernels(filename):
    source = kernel_source(filename)
    declared = re.findall(r'extern "C" __global__ void (\w+)\(', source)
    assert sorted(declared) == sorted(KERNEL_FILES[filename])
    assert not re.search(r"^\s*#\s*include", source, re.M)  # NVRTC: no host headers
    assert "--fmad=false" in COMPILE_OPTIONS


def _class_methods(path: Path, class_name: str) -> dict[str, list[str]]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            methods = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    args = [a.arg for a in item.args.args + item.args.kwonlyargs]
                    methods[item.name] = args
            return methods
    raise AssertionError(f"{class_name} not found in {path}")


def test_launchers_mirror_the_transliterations():
    """Same kernel methods, same argument names, in CupyKernels and NumpyKernels."""
    launchers = _class_methods(PACKAGE / "_device.py", "CupyKernels")
    transliterations = {
        name: [p for p in inspect.signature(getattr(NumpyKernels, name)).parameters]
        for name in dir(NumpyKernels)
        if not name.startswith("_") and callable(getattr(NumpyKernels, name))
    }
    launchers.pop("warmup")  # compile step: GPU only
    assert set(launchers) == set(transliterations)
    for name, args in launchers.items():
        assert args == transliterations[name], name


def test_every_kernel_is_launched_and_transliterated():
    device_source = (PACKAGE / "_device.py").read_text()
    launched = set(re.findall(r'_fn\("(\w+)"\)', device_source))
    every = {name for names in KERNEL_FILES.values() for name in names}
    assert launched == every
    for name in every:
        method = "rolling_rank" if name.startswith("rolling_rank_") else name
        assert callable(getattr(NumpyKernels, method, None)), name

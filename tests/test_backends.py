"""Backend registry and resolution order (argument → context → env → array → auto)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import calab
from calab.backends import (
    BackendUnavailableError,
    array_library,
    available_backends,
    backend_info,
    resolve_backend,
)


def test_importing_calab_imports_neither_jax_nor_cupy():
    code = (
        "import sys, calab, numpy as np\n"
        "calab.run_deconvolution(np.ones(50), 30.0, 0.1, 0.6, 0.1, backend='numpy')\n"
        "calab.available_backends()\n"
        "print(sorted(m for m in ('jax', 'cupy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_numpy_is_always_available_and_reasons_are_given():
    assert "numpy" in available_backends()
    report = available_backends(with_reasons=True)
    assert set(report) == {"numpy", "jax", "cupy"}
    for name, info in report.items():
        assert info.name == name and isinstance(info.reason, str) and info.reason
    cupy = report["cupy"]
    if not cupy.usable:
        assert "calab[cuda12]" in cupy.reason or "CUDA" in cupy.reason or "device" in cupy.reason


def test_unusable_backend_raises_an_error_naming_the_fix():
    if backend_info("cupy").usable:
        pytest.skip("CuPy is usable here")
    with pytest.raises(BackendUnavailableError, match="cupy"):
        calab.run_deconvolution(np.ones(20), 30.0, 0.1, 0.6, 0.1, backend="cupy")
    with pytest.raises(ImportError):  # BackendUnavailableError is an ImportError
        with calab.use_backend("cupy"):
            pass


def test_resolution_order(monkeypatch):
    monkeypatch.delenv("CALAB_BACKEND", raising=False)
    assert resolve_backend(None).name in available_backends()
    assert resolve_backend("numpy").name == "numpy"
    monkeypatch.setenv("CALAB_BACKEND", "numpy")
    assert resolve_backend(None).name == "numpy"
    monkeypatch.setenv("CALAB_BACKEND", "bogus")
    with pytest.raises(ValueError, match="CALAB_BACKEND"):
        resolve_backend(None)
    monkeypatch.delenv("CALAB_BACKEND")
    if "jax" in available_backends():
        import jax.numpy as jnp

        array = jnp.zeros(3)
        assert array_library(array) == "jax"
        assert resolve_backend(None, array).name == "jax"  # the array's own library
        with calab.use_backend("numpy"):
            assert resolve_backend(None, array).name == "numpy"  # context beats the array
            assert resolve_backend("jax").name == "jax"  # argument beats the context
        monkeypatch.setenv("CALAB_BACKEND", "jax")
        with calab.use_backend("numpy"):
            assert resolve_backend(None).name == "numpy"  # context beats the environment
        assert resolve_backend(None).name == "jax"


def test_array_library_detection():
    assert array_library(np.zeros(2)) == "numpy"
    assert array_library([1, 2]) is None


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="'numpy', 'jax'|'cupy', 'jax'"):
        calab.use_backend("torch").__enter__()
    with pytest.raises(ValueError, match="unknown backend"):
        calab.bandpass_filter(np.ones(20), 0.1, 0.6, 30.0, backend="opencl")

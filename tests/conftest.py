"""Shared pytest fixtures: every numeric test runs on every usable backend."""

from __future__ import annotations

import pytest

from calab.backends import BACKEND_NAMES, backend_info


def _backend_param(name: str):
    info = backend_info(name)
    marks = [pytest.mark.gpu] if name == "cupy" else []
    if not info.usable:
        marks.append(pytest.mark.skip(reason=f"backend {name!r} unusable here: {info.reason}"))
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES])
def backend(request) -> str:
    """Name of a usable backend; unusable ones are reported as skipped with the reason."""
    return request.param


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES if name != "numpy"])
def accelerated_backend(request) -> str:
    """A non-NumPy backend, for parity tests against the NumPy oracle."""
    return request.param


def assert_activity_matches(ours, reference, *, tolerance: float = 1e-3, min_pearson: float = 0.999):
    """The project's parity criterion against the reference, per cell (row).

    A cell matches when its activity is within ``tolerance`` of that cell's peak, or —
    for cells that stop one iteration earlier or later than the reference because float32
    rounding moved them across the convergence threshold — when the two activities have a
    Pearson correlation of at least ``min_pearson``.
    """
    import numpy as np

    ours, reference = np.atleast_2d(ours), np.atleast_2d(reference)
    assert ours.shape == reference.shape
    for row, (mine, theirs) in enumerate(zip(ours, reference)):
        peak = max(float(np.abs(theirs).max(initial=0.0)), 1e-6)
        error = float(np.abs(mine - theirs).max(initial=0.0))
        if error <= tolerance * peak:
            continue
        pearson = float(np.corrcoef(mine, theirs)[0, 1])
        assert pearson >= min_pearson, f"cell {row}: max error {error / peak:.2e} of peak, Pearson r {pearson:.6f}"


@pytest.fixture
def jax_device_paths(monkeypatch):
    """A JAX backend that keeps its own (GPU) code paths on the CPU.

    On the CPU the JAX backend hands banded problems to the CPU backend's compiled
    kernels; this instance does not (``CALAB_JAX_HOST_KERNELS=0``), so the code a GPU
    runs is tested without one.
    """
    pytest.importorskip("jax")
    if not backend_info("jax").usable:
        pytest.skip(backend_info("jax").reason)
    monkeypatch.setenv("CALAB_JAX_HOST_KERNELS", "0")
    from calab.backends.jax import JaxBackend

    instance = JaxBackend()
    assert instance.host_backend() is None and instance.banded_by_fft
    return instance


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES] + [pytest.param(None, id="jax-device-paths")])
def ar2_backend(request):
    """Every usable backend by name, plus JAX's GPU code paths on the CPU (an instance)."""
    if request.param is None:
        return request.getfixturevalue("jax_device_paths")
    return request.param

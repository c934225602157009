"""JAX compiles programs per shape bucket, not per call or per round of a solve.

Counted with ``jax_log_compiles``: every XLA compilation logs one "Compiling ..." record.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest

import calab
from calab.backends import backend_info

pytestmark = pytest.mark.skipif(not backend_info("jax").usable, reason="JAX is not installed")

SETTINGS = dict(tau_rise=0.1, tau_decay=0.6, fs=30.0, upsample_factor=2, hp_enabled=True, lp_enabled=True,
                noise_constrained=True)


@contextlib.contextmanager
def counted_compiles():
    import jax

    names: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling"):
                names.append(message.split(" with ")[0])

    logger = logging.getLogger("jax")
    handler = Handler(level=logging.DEBUG)
    logger.addHandler(handler)
    previous_level, previous_flag = logger.level, jax.config.jax_log_compiles
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        yield names
    finally:
        jax.config.update("jax_log_compiles", previous_flag)
        logger.setLevel(previous_level)
        logger.removeHandler(handler)


def _traces(cells: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spikes = (rng.random((cells, 150)) < 0.08).astype(np.float64)
    kernel = calab.build_kernel(0.1, 0.6, 30.0)
    return np.array([np.convolve(s, kernel)[:150] for s in spikes]) + 0.05 * rng.standard_normal((cells, 150))


def test_jax_on_the_cpu_compiles_nothing_for_indeca():
    from calab.backends import get_backend

    if get_backend("jax").host_backend() is None:
        pytest.skip("JAX runs on an accelerator here")
    with counted_compiles() as names:
        calab.solve_traces(_traces(5, 1), **SETTINGS, backend="jax")
    assert names == []


@pytest.mark.slow
def test_jax_device_paths_compile_once_per_row_bucket(jax_device_paths, monkeypatch):
    # The code a GPU runs (no host kernels): the first call compiles its programs; calls
    # with other data, another batch size in the same bucket (up to 8 rows) and scale
    # rounds with fewer live cells reuse them.
    from calab import backends

    monkeypatch.setitem(backends._instances, "jax", jax_device_paths)
    with counted_compiles() as first:
        calab.solve_traces(_traces(5, 1), **SETTINGS, backend="jax")
    assert first, "the first call compiles"
    for cells, seed in ((5, 2), (3, 3), (8, 4), (1, 5)):
        with counted_compiles() as again:
            calab.solve_traces(_traces(cells, seed), **SETTINGS, backend="jax")
        assert again == [], (cells, again)

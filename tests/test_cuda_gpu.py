"""GPU tests of the CuPy backend (marker ``gpu``; the module skips cleanly without a device).

* every CUDA kernel against its NumPy transliteration, bit for bit (``--fmad=false``);
* cuFFT plans and buffers, rolling baseline (shared-memory and global-scratch kernels);
* the fused solve against the generic on-GPU step and the NumPy backend;
* parity with the NumPy backend on the golden fixtures;
* return types and devices, band-pass filter on the device, out-of-memory halving.

Run on a GPU machine with ``pytest tests/test_cuda_gpu.py -m gpu -q``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calab.backends import backend_info

pytestmark = pytest.mark.gpu

INFO = backend_info("cupy")
if not INFO.usable:
    pytest.skip(f"CuPy backend unusable here: {INFO.reason}", allow_module_level=True)

import cupy  # noqa: E402

import calab  # noqa: E402
from calab.backends import get_backend  # noqa: E402
from calab.backends.cuda import _device, _driver  # noqa: E402
from calab.backends.cuda.reference import NumpyKernels  # noqa: E402
from calab.filters import rolling_baseline  # noqa: E402
from calab.fista import TOLERANCE_SQUARED, make_plan  # noqa: E402

FS, TAU_R, TAU_D = 30.0, 0.1, 0.6
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def gpu():
    return get_backend("cupy")


@pytest.fixture(scope="module")
def cpu():
    return get_backend("numpy")


@pytest.fixture(scope="module")
def ops(gpu):
    return gpu.kernels()


def calcium(cells, n, seed=0, rate=0.03):
    rng = np.random.default_rng(seed)
    spikes = (rng.random((cells, n)) < rate).astype(np.float64)
    t = np.arange(min(n, 200))
    kernel = np.exp(-t / (TAU_D * FS)) - np.exp(-t / (TAU_R * FS))
    size = 1 << int(np.ceil(np.log2(n + kernel.size)))
    traces = np.fft.irfft(np.fft.rfft(spikes, size) * np.fft.rfft(kernel, size), size)[:, :n]
    return (traces + rng.normal(0, 0.1, (cells, n)) + 1.0).astype(np.float32)


def assert_cells_close(x, expected, iterations, expected_iterations, tight=2e-4):
    """Per cell: iterations within one; activity within ``tight``·peak where the counts are
    equal, else 5e-3·peak (one FISTA step more or less moves a solution by up to ~1e-3 of
    its peak: the stopping rule is a relative change of 1e-4)."""
    x, expected = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(expected, np.float64))
    slack = np.abs(np.atleast_1d(iterations) - np.atleast_1d(expected_iterations))
    assert np.all(slack <= 1), (iterations, expected_iterations)
    if x.size == 0:
        return
    peak = np.maximum(np.abs(expected).max(axis=1), 1e-6)
    error = np.abs(x - expected).max(axis=1) / peak
    assert np.all(error <= np.where(slack == 0, tight, 5e-3)), (error, slack)


def run_both(ops, name, arrays, *args, **kwargs):
    """Call kernel ``name`` on CuPy copies and its transliteration on NumPy copies of
    ``arrays`` (a list; None stays None); assert every array ends bit-identical."""
    host = [None if a is None else np.array(a, copy=True) for a in arrays]
    device = [None if a is None else cupy.asarray(a) for a in arrays]
    getattr(NumpyKernels(ops.multiprocessors), name)(*host, *args, **kwargs)
    getattr(ops, name)(*device, *args, **kwargs)
    cupy.cuda.get_current_stream().synchronize()
    for index, (h, d) in enumerate(zip(host, device)):
        if h is None:
            continue
        got = cupy.asnumpy(d)
        if h.dtype.kind == "f":
            same = np.array_equal(got.view(f"u{h.itemsize}"), h.view(f"u{h.itemsize}"))
        else:
            same = np.array_equal(got, h)
        assert same, f"{name}: argument {index} differs (max |Δ| {np.max(np.abs(got.astype(float) - h.astype(float)))})"


def fista_vectors(rng, cells, k=3):
    tmom = 1.0 + 3.0 * rng.random(cells)
    iters = np.full(cells, k, dtype=np.int32)
    active = np.ones(cells, dtype=bool)
    active[-1] = False
    converged = np.zeros(cells, dtype=bool)
    return tmom, iters, active, converged


# --------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("box", [False, True])
def test_fista_update_fft_kernel(ops, cpu, gram, box):
    rng = np.random.default_rng(1)
    cells, n, size = 7, 1503, 2048
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, "fft", "nonneg", 2000)
    boundary = _driver._trimmed_boundary(plan) if gram else np.zeros((0, 0), np.float32)
    x = np.maximum(rng.normal(size=(cells, n)), 0).astype(np.float32)
    ypad = np.zeros((cells, size), np.float32)
    ypad[:, :n] = np.maximum(x + 0.1 * rng.normal(size=(cells, n)), 0)
    full = rng.normal(size=(cells, size)).astype(np.float32)
    data = rng.normal(size=(cells, n)).astype(np.float32)
    tmom, iters, active, converged = fista_vectors(rng, cells)
    threshold = plan.thresholds(np.full(cells, 0.01))
    for threads in (32, _driver.update_threads(n)):
        run_both(
            ops, "fista_update_fft",
            [x, ypad, full, data, boundary, tmom, iters, active, converged, threshold],
            gram=gram, step=plan.step32, scale=np.float32(1 / size), box=box, cap=plan.max_iterations,
            tol2=TOLERANCE_SQUARED, threads=threads,
        )  # fmt: skip


def test_residual_pad_kernel(ops):
    rng = np.random.default_rng(2)
    cells, n, size = 5, 300, 512
    full = rng.normal(size=(cells, size)).astype(np.float32)
    work = rng.normal(size=(cells, n)).astype(np.float32)
    valid = (rng.random((cells, n)) > 0.3).astype(np.float32)
    active = np.array([1, 1, 0, 1, 1], dtype=bool)
    run_both(ops, "residual_pad", [full, work, valid, active], n, np.float32(1 / size))
    run_both(ops, "residual_pad", [full, work, None, active], n, np.float32(1 / size))


@pytest.mark.parametrize("n", [1, 2, 9, 1000])
def test_sequential_ar2_kernels(ops, cpu, n):
    rng = np.random.default_rng(3)
    cells = 37
    g1, g2, gain = make_plan(cpu, max(n, 2), FS, TAU_R, TAU_D, "banded", "nonneg", 100).ar2
    src = rng.normal(size=(n, cells)).astype(np.float32)
    out = np.zeros((n, cells), np.float32)
    work = rng.normal(size=(n, cells)).astype(np.float32)
    valid = (rng.random((n, cells)) > 0.2).astype(np.float32)
    active = rng.random(cells) > 0.3
    run_both(ops, "ar2_forward_tm", [src, out, None, None, None], g1, g2, gain)
    run_both(ops, "ar2_forward_tm", [src, out, work, valid, active], g1, g2, gain)
    run_both(ops, "ar2_adjoint_tm", [src, out], g1, g2, gain)
    x = np.abs(rng.normal(size=(n, cells))).astype(np.float32)
    y = np.abs(rng.normal(size=(n, cells))).astype(np.float32)
    tmom, iters, active, converged = fista_vectors(rng, cells)
    threshold = np.full(cells, 0.01, np.float32)
    for box in (False, True):
        run_both(
            ops, "ar2_adjoint_update_tm", [src, x, y, tmom, iters, active, converged, threshold],
            g1=g1, g2=g2, gain=gain, step=np.float32(0.004), box=box, cap=2000, tol2=TOLERANCE_SQUARED,
        )  # fmt: skip


@pytest.mark.parametrize("n, L", [(1000, 64), (1025, 64), (130, 2), (65, 64)])
def test_chunked_ar2_kernels(ops, cpu, n, L):
    rng = np.random.default_rng(4)
    cells = 19
    C = -(-n // L)
    g1, g2, gain = make_plan(cpu, n, FS, TAU_R, TAU_D, "banded", "nonneg", 100).ar2
    pq = _driver.pq_table(g1, g2, L)
    src = rng.normal(size=(n, cells)).astype(np.float32)
    z = np.zeros((n, cells), np.float32)
    out = np.zeros((n, cells), np.float32)
    ends = rng.normal(size=(C, cells, 2)).astype(np.float32)
    starts = rng.normal(size=(C, cells, 2)).astype(np.float32)
    work = rng.normal(size=(n, cells)).astype(np.float32)
    active = rng.random(cells) > 0.3
    for act in (None, active):
        run_both(ops, "ar2_chunk_forward_local", [src, z, ends, act], L, C, g1, g2, gain)
        run_both(ops, "ar2_chunk_carry_forward", [ends, starts, pq, act], L, C)
        run_both(ops, "ar2_chunk_forward_fix", [z, out, starts, pq, work, None, act], L)
        run_both(ops, "ar2_chunk_adjoint_local", [src, z, ends, act], L, C, g1, g2, gain)
        run_both(ops, "ar2_chunk_carry_adjoint", [ends, starts, pq, act], n, L, C)
    run_both(ops, "ar2_chunk_adjoint_fix", [z, out, starts, pq], L)
    x = np.abs(rng.normal(size=(n, cells))).astype(np.float32)
    y = np.abs(rng.normal(size=(n, cells))).astype(np.float32)
    tmom, iters, active, converged = fista_vectors(rng, cells)
    partials = np.zeros((C, cells, 3))
    flags = np.zeros(cells, dtype=bool)
    threshold = np.full(cells, 0.01, np.float32)
    run_both(ops, "ar2_chunk_adjoint_update", [z, starts, pq, x, y, tmom, active, threshold, partials], L, C, np.float32(0.004), False)
    partials = rng.normal(size=(C, cells, 3))
    host = [partials, tmom, iters, active, converged, flags]
    _decide_both(ops, host, C)
    run_both(ops, "fista_restart_tm", [x, y, rng.random(cells) > 0.5])


def _decide_both(ops, host, C):
    """fista_decide has a scalar between its array arguments: call it explicitly."""
    partials, tmom, iters, active, converged, flags = (np.array(a, copy=True) for a in host)
    dev = [cupy.asarray(a) for a in (partials, tmom, iters, active, converged, flags)]
    NumpyKernels().fista_decide(partials, C, tmom, iters, active, converged, flags, 2000, TOLERANCE_SQUARED)
    ops.fista_decide(dev[0], C, dev[1], dev[2], dev[3], dev[4], dev[5], 2000, TOLERANCE_SQUARED)
    for h, d in zip((tmom, iters, active, converged, flags), dev[1:]):
        assert np.array_equal(cupy.asnumpy(d), h)


@pytest.mark.parametrize("window", [1, 5, 450, 20_000])
def test_rolling_rank_kernel_exact(ops, cpu, window):
    rng = np.random.default_rng(window)
    traces = rng.normal(size=(11, 3000)).astype(np.float32)
    traces[3] = np.round(traces[3])  # ties
    traces[4, ::2] = -0.0
    ours = cupy.asnumpy(_driver.rolling_quantile(ops, cupy.asarray(traces), window, 0.2))
    full_rank, ranks = _driver.rolling_ranks(window, 0.2, traces.shape[1])
    expected = np.empty_like(traces)
    NumpyKernels().rolling_rank(traces, expected, window, full_rank, ranks)
    assert np.array_equal(ours.view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(ours, cpu.rolling_quantile(traces, window, 0.2))


def test_rolling_rank_global_scratch(ops, cpu, monkeypatch):
    monkeypatch.setattr(ops, "shared_optin", 0)  # force the global-memory kernel
    traces = np.random.default_rng(5).normal(size=(6, 800)).astype(np.float32)
    ours = cupy.asnumpy(_driver.rolling_quantile(ops, cupy.asarray(traces), 100, 0.2))
    assert np.array_equal(ours, cpu.rolling_quantile(traces, 100, 0.2))


def test_fft_plans_and_sub_batches(ops, monkeypatch):
    rng = np.random.default_rng(6)
    src = rng.normal(size=(9, 1024)).astype(np.float32)
    spec = cupy.empty((9, 513), cupy.complex64)
    back = cupy.empty((9, 1024), cupy.float32)
    monkeypatch.setattr(_device, "_FFT_ELEMENTS", 4 * 1026)  # 4 rows per plan
    ops.release_plans()
    ops.rfft_rows(cupy.asarray(src), spec)
    np.testing.assert_allclose(cupy.asnumpy(spec), np.fft.rfft(src), rtol=0, atol=2e-3)
    ops.irfft_rows(spec, back)
    np.testing.assert_allclose(cupy.asnumpy(back) / 1024, src, rtol=0, atol=1e-5)
    ops.release_plans()


def test_warmup_compiles_every_kernel(gpu):
    seconds = gpu.warmup()
    assert seconds >= 0
    ops = gpu.kernels()
    assert all(name in ops._functions for names in _device.KERNEL_FILES.values() for name in names)


# --------------------------------------------------------------------------- solves
def prepared(cpu, cells, n, mode, lam=0.05, seed=0):
    plan = make_plan(cpu, n, FS, TAU_R, TAU_D, mode, "nonneg", 2000)
    traces = calcium(cells, n, seed)
    work = traces - rolling_baseline(cpu, traces, TAU_D, FS)
    return plan, work, plan.thresholds(np.full(cells, lam))


def chaotic_cells(cpu, cells, n, seed=0, lam=0.05):
    """Cells whose float32 FISTA run is chaotic, measured on the CPU alone.

    The NumPy backend solves the same problem twice, in FFT and in banded mode (same
    maths, different rounding).  A cell whose iteration count moves by more than one
    between the two is chaotic: any other rounding (cuFFT, a chunked scan) may land it on
    either trajectory.  Returns the mask and, per cell, the two counts and the activity
    spread (max |Δ| / peak) between the modes.
    """
    runs = []
    for mode in ("fft", "banded"):
        plan, work, threshold = prepared(cpu, cells, n, mode, lam=lam, seed=seed)
        runs.append(cpu.run_fista(plan, work, threshold))
    counts = np.stack([np.asarray(r.iterations) for r in runs])
    x_fft, x_banded = (np.asarray(r.x, np.float64) for r in runs)
    spread = np.abs(x_fft - x_banded).max(axis=1) / np.maximum(np.abs(x_fft).max(axis=1), 1e-6)
    return np.abs(counts[0] - counts[1]) > 1, counts, spread


@pytest.mark.parametrize("mode, chunks", [("fft", None), ("banded", 1), ("banded", 8)])
def test_solve_matches_numpy_backend(gpu, cpu, mode, chunks):
    plan, work, threshold = prepared(cpu, 24, 3000, mode)
    oracle = cpu.run_fista(plan, work, threshold)
    x, iterations, converged = _driver.solve(gpu.kernels(), plan, cupy.asarray(work), cupy.asarray(threshold), chunks=chunks)
    x = cupy.asnumpy(x)
    if mode == "banded" and chunks == 1 and np.array_equal(iterations, oracle.iterations):
        assert np.array_equal(x, oracle.x)  # the same float32 operations in the same order
    np.testing.assert_array_equal(converged, oracle.converged)
    chaotic, counts, spread = chaotic_cells(cpu, 24, 3000)
    # Seen on an H200: 2 of these 24 cells (5 and 15) are chaotic, 402/426 and 366/412
    # iterations, 4 % and 7 % of peak apart between the CPU's own two modes.
    assert chaotic.sum() <= 3, f"{chaotic.sum()} chaotic cells: the test data no longer separates the cases"
    steady = ~chaotic
    assert_cells_close(x[steady], np.asarray(oracle.x)[steady], np.asarray(iterations)[steady], np.asarray(oracle.iterations)[steady])
    for cell in np.flatnonzero(chaotic):
        low, high = counts[:, cell].min() - 1, counts[:, cell].max() + 1
        assert low <= iterations[cell] <= high, (cell, iterations[cell], counts[:, cell])
        peak = max(float(np.abs(oracle.x[cell]).max()), 1e-6)
        error = float(np.abs(np.asarray(x[cell], np.float64) - oracle.x[cell]).max()) / peak
        assert error <= max(5e-3, 1.5 * spread[cell]), (cell, error, spread[cell])


@pytest.mark.parametrize("mode", ["fft", "banded"])
def test_fused_equals_generic_on_gpu(gpu, cpu, mode, monkeypatch):
    plan, work, threshold = prepared(cpu, 16, 2000, mode, seed=1)
    work_d, threshold_d = cupy.asarray(work), cupy.asarray(threshold)
    fused = gpu.run_fista(plan, work_d, threshold_d)
    monkeypatch.setenv("CALAB_CUDA_FUSED", "0")
    generic = gpu.run_fista(plan, work_d, threshold_d)
    assert_cells_close(cupy.asnumpy(fused.x), cupy.asnumpy(generic.x), fused.iterations, generic.iterations)


def test_public_api_types_and_devices():
    traces = calcium(4, 900, seed=2) * 100 + 1000
    host = calab.run_deconvolution_full(traces.astype(np.float64), FS, TAU_R, TAU_D, 0.5, backend="cupy")
    assert isinstance(host.activity, np.ndarray) and host.activity.dtype == np.float64
    assert isinstance(host.baseline, np.ndarray) and host.iterations.dtype == np.int64
    device = cupy.asarray(traces)
    on_gpu = calab.run_deconvolution_full(device, FS, TAU_R, TAU_D, 0.5)  # resolved from the input
    assert isinstance(on_gpu.activity, cupy.ndarray) and on_gpu.activity.dtype == np.float32
    assert on_gpu.activity.device.id == device.device.id
    assert np.array_equal(cupy.asnumpy(on_gpu.activity), host.activity.astype(np.float32))  # same device work
    one = calab.run_deconvolution(traces[0].astype(np.float64), FS, TAU_R, TAU_D, 0.5, backend="cupy")
    assert one.shape == (900,) and one.dtype == np.float64


def test_bandpass_filter_on_device():
    trace = calcium(3, 1000, seed=3)
    host = calab.bandpass_filter(trace.astype(np.float64), TAU_R, TAU_D, FS, backend="numpy")
    device = calab.bandpass_filter(cupy.asarray(trace), TAU_R, TAU_D, FS)
    assert isinstance(device, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(device), host, rtol=0, atol=2e-6 * max(1.0, np.abs(host).max()))


def test_out_of_memory_halves_the_batch(gpu, cpu, monkeypatch):
    plan, work, threshold = prepared(cpu, 12, 1500, "fft", seed=4)
    work_d, threshold_d = cupy.asarray(work), cupy.asarray(threshold)
    whole = gpu.run_fista(plan, work_d, threshold_d)
    real_solve = _driver.solve
    sizes = []

    def tight_solve(ops, plan, work, threshold, x0=None, valid=None, **kw):
        sizes.append(work.shape[0])
        if work.shape[0] > 3:
            raise cupy.cuda.memory.OutOfMemoryError(1 << 30, 1 << 30)
        return real_solve(ops, plan, work, threshold, x0, valid, **kw)

    monkeypatch.setattr(_driver, "solve", tight_solve)
    scale = gpu.memory_scale
    split = gpu.run_fista(plan, work_d, threshold_d)
    monkeypatch.setattr(gpu, "memory_scale", scale)
    assert sizes[:3] == [12, 6, 3]
    np.testing.assert_array_equal(split.iterations, whole.iterations)
    assert bool(cupy.all(split.x == whole.x))


def test_real_out_of_memory_with_a_pool_limit(gpu, cpu, monkeypatch):
    """A memory-pool limit far below the batch's needs: the solve still completes."""
    plan, work, threshold = prepared(cpu, 64, 20_000, "fft", lam=0.5, seed=5)
    work_d, threshold_d = cupy.asarray(work), cupy.asarray(threshold)
    reference = gpu.run_fista(plan, work_d, threshold_d)
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    recoveries = gpu.oom_recoveries
    # The solve needs ~0.5 MB per cell (x, Kᵀwork, padded y, FFT buffers, cuFFT work area):
    # ~32 MB for the batch, so 12 MB forces at least two halvings.
    pool.set_limit(size=pool.used_bytes() + (12 << 20))
    try:
        limited = gpu.run_fista(plan, work_d, threshold_d)
        halved = gpu.oom_recoveries > recoveries
    finally:
        pool.set_limit(size=0)
    assert gpu.memory_scale == 1.0, "an out-of-memory retry must not shrink later solves"
    assert halved, "the pool limit did not trigger an out-of-memory recovery"
    np.testing.assert_array_equal(limited.iterations, reference.iterations)
    assert bool(cupy.all(limited.x == reference.x))


# --------------------------------------------------------------------------- golden parity
CASES = json.loads((GOLDEN / "manifest.json").read_text())["cases"] if (GOLDEN / "manifest.json").exists() else []


@pytest.mark.parametrize("case", [c["name"] for c in CASES])
def test_golden_parity_with_numpy_backend(case):
    entry = next(c for c in CASES if c["name"] == case)
    with np.load(GOLDEN / entry["file"], allow_pickle=False) as data:
        ref = {key: data[key] for key in data.files}
    traces = np.array(ref["traces"])
    args = (float(ref["fs"]), float(ref["tau_r"]), float(ref["tau_d"]), float(ref["lam"]))
    kwargs = dict(max_iters=int(ref["max_iters"]), conv_mode=str(ref["conv_mode"]), constraint=str(ref["constraint"]))
    oracle = calab.run_deconvolution_full(traces, *args, **kwargs, backend="numpy")
    ours = calab.run_deconvolution_full(traces, *args, **kwargs, backend="cupy")
    assert_cells_close(ours.activity, oracle.activity, ours.iterations, oracle.iterations, tight=1e-3)
    if np.size(ours.activity):
        tol = 1e-3 * float(ref["amplitude_scale"])
        np.testing.assert_allclose(np.atleast_1d(ours.baseline), np.atleast_1d(oracle.baseline), rtol=0, atol=tol)
        if np.array_equal(np.atleast_1d(ours.iterations), np.atleast_1d(oracle.iterations)):
            np.testing.assert_allclose(
                np.atleast_2d(ours.reconvolution), np.atleast_2d(oracle.reconvolution), rtol=0, atol=tol
            )

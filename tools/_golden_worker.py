"""Worker for ``tools/make_golden.py``: runs INSIDE the reference venv (``calab==0.3.0``).

Never run this with our venv's python: it imports ``calab`` and must get the published
reference, not our package.  ``make_golden.py`` launches it with the reference
interpreter, from a working directory outside the repository, and passes the output
directory as its only argument::

    <reference python> tools/_golden_worker.py OUTDIR

It needs nothing but NumPy and the reference ``calab``.  It generates the inputs
deterministically (fixed seeds; the benchmark's data arrive in the extra ``.npz``), runs
the reference on them and writes:

``OUTDIR/deconv/<case>.npz``
    One file per ``run_deconvolution[_full]`` case, self-contained: the exact input array
    (in the dtype that was passed), the parameters, the reference outputs, the Python
    types of the full result's fields, and ``ens_*``: how far the reference itself moves
    when its float32 input is nudged by one ulp (see :func:`perturbation_ensemble`).
``OUTDIR/manifest.json``
    Index of the deconvolution cases (file, description, tags, reference iteration counts).
``OUTDIR/host_maths.npz`` + ``OUTDIR/host_maths.json``
    ``build_kernel``, ``compute_lipschitz``, ``tau_to_ar2``, ``compute_upsample_factor`` and
    ``bandpass_filter`` outputs.
``OUTDIR/errors.json`` + ``OUTDIR/errors_inputs.npz``
    Exception type and message of the reference for invalid inputs.

Everything in the outputs is produced by the reference; nothing is computed by our code.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np

import calab  # the reference, thanks to the interpreter we are run with

REFERENCE_VERSION = "0.3.0"


def _check_reference() -> None:
    """Refuse to run against anything but the published reference."""
    version = importlib.metadata.version("calab")
    if version != REFERENCE_VERSION or "site-packages" not in str(Path(calab.__file__)):
        raise SystemExit(
            f"_golden_worker.py must run with the reference calab=={REFERENCE_VERSION} "
            f"from a venv; got version {version} from {calab.__file__}"
        )


# ---------------------------------------------------------------------------------------
# Deterministic inputs
# ---------------------------------------------------------------------------------------

SPEC9_SPIKES = (20, 80, 150, 230)


def spec9_trace(scale: float = 1.0, dc: float = 0.0) -> np.ndarray:
    """Spec §9 golden example: build_kernel(0.04, 0.4, 30) driven by unit spikes, n = 300.

    The kernel is causal with h[0] = 0, so a spike at sample i rises from sample i + 1.
    """
    n = 300
    kernel = np.asarray(calab.build_kernel(0.04, 0.4, 30.0), dtype=np.float64)
    spikes = np.zeros(n)
    spikes[list(SPEC9_SPIKES)] = 1.0
    return scale * np.convolve(spikes, kernel)[:n] + dc


def short_dc_trace(dc: float, n: int = 200) -> np.ndarray:
    """``build_kernel(0.02, 0.4, 30)`` driven by unit spikes at 10/50/100/150 plus ``dc``.

    200 samples: shorter than the rolling-baseline window (W = 300 at these taus), so
    every baseline window is a growing prefix of the trace.
    """
    kernel = np.asarray(calab.build_kernel(0.02, 0.4, 30.0), dtype=np.float64)
    spikes = np.zeros(n)
    spikes[[10, 50, 100, 150]] = 1.0
    return np.convolve(spikes, kernel)[:n] + dc


def double_exponential(tau_rise: float, tau_decay: float, fs: float) -> np.ndarray:
    """Peak-normalised double-exponential calcium response, long enough to decay to ~1e-6."""
    n = max(2, int(math.ceil(13.815510557964274 * tau_decay * fs)))
    t = np.arange(n) / fs
    h = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    return h / h.max()


def calcium_traces(
    seed: int,
    n_cells: int,
    n: int,
    *,
    fs: float,
    tau_rise: float,
    tau_decay: float,
    rate_hz: float = 1.0,
    amplitude: float = 1.0,
    noise_sd: float = 0.1,
    offset: float = 0.0,
    drift: float = 0.0,
) -> np.ndarray:
    """Synthetic calcium traces: Poisson spikes * kernel, Gaussian noise, slow drift.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.default_rng``.
    n_cells, n : int
        Output shape ``(n_cells, n)``.
    fs, tau_rise, tau_decay : float
        Sampling rate (Hz) and kernel time constants (s).
    rate_hz : float
        Mean firing rate.
    amplitude : float
        Response to one spike (trace units); noise and drift are relative to it.
    noise_sd : float
        Gaussian noise standard deviation, in units of ``amplitude``.
    offset : float
        Constant fluorescence offset (F0), e.g. ~1000 for raw fluorescence.
    drift : float
        Peak amplitude of the slow drift (sinusoid plus smoothed random walk), in units
        of ``amplitude``.

    Returns
    -------
    ndarray, shape (n_cells, n), float64
    """
    rng = np.random.default_rng(seed)
    kernel = double_exponential(tau_rise, tau_decay, fs)
    spikes = rng.poisson(rate_hz / fs, size=(n_cells, n)).astype(np.float64)
    calcium = np.stack([np.convolve(row, kernel)[:n] for row in spikes])
    t = np.arange(n) / fs
    period = rng.uniform(30.0, 120.0, size=(n_cells, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_cells, 1))
    walk = np.cumsum(rng.normal(size=(n_cells, n)), axis=1)
    width = max(1, min(n, int(5 * fs)))  # ~5 s moving average keeps the walk slow
    walk = np.stack([np.convolve(w, np.ones(width) / width, mode="same") for w in walk])
    walk /= np.maximum(np.abs(walk).max(axis=1, keepdims=True), 1e-12)
    slow = 0.5 * np.sin(2 * np.pi * t / period + phase) + 0.5 * walk
    noise = rng.normal(scale=noise_sd, size=(n_cells, n))
    # per-cell F0 jitter keeps rows distinguishable in raw-unit batches
    f0 = offset * (1.0 + 0.05 * rng.uniform(-1, 1, size=(n_cells, 1)))
    return f0 + amplitude * (calcium + drift * slow + noise)


# ---------------------------------------------------------------------------------------
# run_deconvolution[_full] cases
# ---------------------------------------------------------------------------------------

DEFAULTS = dict(fs=30.0, tau_r=0.04, tau_d=0.4, lam=0.01, max_iters=2000, conv_mode="fft", constraint="nonneg")


def deconv_cases(extra: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Every run_deconvolution case: name, description, tags, input and parameters.

    ``extra`` holds inputs prepared by ``make_golden.py`` outside this venv (the
    benchmark's data generator lives with the benchmark); their cases are skipped when
    it is not given.
    """
    extra = extra or {}
    cases: list[dict] = []

    def add(name, traces, description, tags=(), amplitude_scale=1.0, as_list=False, **params):
        merged = dict(DEFAULTS)
        merged.update(params)
        cases.append(
            dict(
                name=name,
                traces=traces,
                description=description,
                tags=list(tags),
                amplitude_scale=float(amplitude_scale),
                as_list=as_list,
                params=merged,
            )
        )

    spec9 = spec9_trace()
    # --- spec §9 golden example and its documented variants --------------------------------
    add("spec9_clean", spec9, "spec §9 golden example (4 unit spikes, n=300, 30 Hz, λ=0.01)", ["spec9", "1d"])
    add("spec9_dc5", spec9_trace(dc=5.0), "spec §9 example + 5 DC offset", ["spec9", "1d"])
    add("spec9_banded", spec9, "spec §9 example, banded AR(2) operator", ["spec9", "1d", "banded"], conv_mode="banded")
    add("spec9_x3_box01", spec9_trace(scale=3.0), "spec §9 example ×3, box01 constraint", ["spec9", "1d", "box01"], constraint="box01")
    add("spec9_x3_box01_banded", spec9_trace(scale=3.0), "spec §9 ×3, box01, banded", ["spec9", "1d", "box01", "banded"], constraint="box01", conv_mode="banded")
    add("spec9_lam1", spec9, "spec §9 example, λ=1: all-zero solution stops at 6 iterations", ["spec9", "1d", "high_lambda"], lam=1.0)
    add("spec9_lam0", spec9, "spec §9 example, λ=0 (no sparsity)", ["spec9", "1d", "lambda0"], lam=0.0)
    add("spec9_float32", spec9.astype(np.float32), "spec §9 example passed as float32", ["spec9", "1d", "float32"])
    add("spec9_row", spec9[None, :].copy(), "spec §9 example as a (1, n) 2-D input", ["spec9", "2d", "one_row"])
    add("spec9_list", spec9, "spec §9 example passed as a Python list", ["spec9", "1d", "list"], as_list=True)
    add("spec9_int", np.round(100 * spec9).astype(np.int64), "spec §9 ×100 rounded, int64 input", ["spec9", "1d", "int"], amplitude_scale=100.0)
    add(
        "spec9_batch",
        np.stack([spec9, spec9_trace(dc=5.0), spec9_trace(scale=3.0)]),
        "(3, 300) batch: clean, +5 DC, ×3",
        ["spec9", "2d"],
    )

    # --- iteration cap rounding: a trace that needs > 200 iterations -----------------------
    slow = calcium_traces(11, 1, 400, fs=30.0, tau_rise=0.04, tau_decay=0.4, noise_sd=0.2)[0]
    for mi in (0, 37, 150):
        add(f"maxiter_{mi}", slow, f"max_iters={mi} (cap rounds to 100·ceil(max_iters/100))", ["1d", "max_iters"], lam=0.0, max_iters=mi)
    add("maxiter_150_banded", slow, "max_iters=150, banded", ["1d", "max_iters", "banded"], lam=0.0, max_iters=150, conv_mode="banded")
    add(
        "maxiter_37_batch",
        calcium_traces(12, 3, 400, fs=30.0, tau_rise=0.04, tau_decay=0.4, noise_sd=0.2),
        "max_iters=37 on a (3, 400) batch",
        ["2d", "max_iters"],
        lam=0.0,
        max_iters=37,
    )
    add("maxiter_u32max_zeros", np.zeros(64), "max_iters=2**32-1 (largest accepted) on zeros: 6 iterations", ["1d", "max_iters", "zeros"], max_iters=2**32 - 1)

    # --- raw fluorescence units (F0 ~ 1000, spike response ~ 100) --------------------------
    raw_kw = dict(fs=30.0, tau_rise=0.1, tau_decay=0.6, amplitude=100.0, noise_sd=0.15, offset=1000.0, drift=0.5)
    raw1 = calcium_traces(21, 1, 2000, **raw_kw)[0]
    add("raw_1d_fft", raw1, "raw fluorescence (F0≈1000, scale 100), 1-D, 30 Hz", ["raw", "1d"], amplitude_scale=100.0, tau_r=0.1, tau_d=0.6, lam=0.5)
    add("raw_1d_banded", raw1, "raw fluorescence 1-D, banded", ["raw", "1d", "banded"], amplitude_scale=100.0, tau_r=0.1, tau_d=0.6, lam=0.5, conv_mode="banded")
    add(
        "raw_batch_float32",
        calcium_traces(22, 3, 1500, **raw_kw).astype(np.float32),
        "raw fluorescence (3, 1500) float32",
        ["raw", "2d", "float32"],
        amplitude_scale=100.0,
        tau_r=0.1,
        tau_d=0.6,
        lam=0.5,
    )

    # --- gcamp6f-like batch (τ 0.1/0.6 s, 30 Hz, λ 0.5), raw units -------------------------
    gcamp = calcium_traces(31, 4, 3000, **raw_kw)
    add("gcamp6f_fft", gcamp, "gcamp6f-like (4, 3000): spikes+noise+drift, raw units", ["gcamp6f", "raw", "2d"], amplitude_scale=100.0, tau_r=0.1, tau_d=0.6, lam=0.5)
    add("gcamp6f_banded", gcamp, "gcamp6f-like (4, 3000), banded", ["gcamp6f", "raw", "2d", "banded"], amplitude_scale=100.0, tau_r=0.1, tau_d=0.6, lam=0.5, conv_mode="banded")
    add("gcamp6f_float32", gcamp.astype(np.float32), "gcamp6f-like (4, 3000) as float32", ["gcamp6f", "raw", "2d", "float32"], amplitude_scale=100.0, tau_r=0.1, tau_d=0.6, lam=0.5)
    dff = calcium_traces(32, 3, 1500, fs=30.0, tau_rise=0.1, tau_decay=0.6, amplitude=0.8, noise_sd=0.1, drift=0.3)
    add("gcamp6f_dff_box01", dff, "gcamp6f-like ΔF/F units (3, 1500), box01", ["gcamp6f", "2d", "box01"], tau_r=0.1, tau_d=0.6, lam=0.5, constraint="box01")
    add("gcamp6f_dff_box01_banded", dff, "gcamp6f-like ΔF/F (3, 1500), box01, banded", ["gcamp6f", "2d", "box01", "banded"], tau_r=0.1, tau_d=0.6, lam=0.5, constraint="box01", conv_mode="banded")
    add("high_lambda_batch", dff, "ΔF/F batch with λ=50: every cell all-zero, 6 iterations", ["2d", "high_lambda"], tau_r=0.1, tau_d=0.6, lam=50.0)

    # --- the target problem (bench data, 100 x 9000): its hardest cells ---------------------------
    if "bench_target_cells" in extra:
        # Rows 0, 8 and 98 of bench/bench_deconvolution.py's make_traces(100, 9000, seed=0):
        # long, slowly converging solves (1000+ iterations) where FFT rounding differences
        # are amplified most.  float32 input: the reference casts to float32 first, so this
        # gives the same numbers as the float64 data at half the fixture size.
        add(
            "bench_target_cells",
            extra["bench_target_cells"].astype(np.float32),
            "hardest 3 cells of the bench's 100x9000 gcamp6f-like raw data (float32)",
            ["gcamp6f", "raw", "2d", "float32", "bench", "long"],
            amplitude_scale=100.0,
            tau_r=0.1,
            tau_d=0.6,
            lam=0.5,
        )

    # --- other sampling rates --------------------------------------------------------------
    fs20 = calcium_traces(41, 2, 1200, fs=20.0, tau_rise=0.05, tau_decay=1.0, noise_sd=0.1, drift=0.3)
    add("fs20_fft", fs20, "20 Hz, τ 0.05/1.0, (2, 1200)", ["fs", "2d"], fs=20.0, tau_r=0.05, tau_d=1.0, lam=0.02)
    add("fs20_banded", fs20, "20 Hz, banded", ["fs", "2d", "banded"], fs=20.0, tau_r=0.05, tau_d=1.0, lam=0.02, conv_mode="banded")
    fs100 = calcium_traces(42, 1, 2000, fs=100.0, tau_rise=0.015, tau_decay=0.15, noise_sd=0.1, drift=0.3)[0]
    add("fs100_fft", fs100, "100 Hz, τ 0.015/0.15, n=2000", ["fs", "1d"], fs=100.0, tau_r=0.015, tau_d=0.15, lam=0.01)
    add("fs100_banded", fs100, "100 Hz, banded", ["fs", "1d", "banded"], fs=100.0, tau_r=0.015, tau_d=0.15, lam=0.01, conv_mode="banded")
    fs30 = calcium_traces(43, 1, 900, fs=30.0, tau_rise=0.02, tau_decay=0.4, noise_sd=0.1, drift=0.3)[0]
    add("fs30_fast_rise", fs30, "30 Hz, τ 0.02/0.4 (argmax at sample 2)", ["fs", "1d"], tau_r=0.02, tau_d=0.4, lam=0.01)
    add(
        "tau_clamp",
        fs30,
        "τr just below τd (near-equal clamp: τr ← τd/2)",
        ["1d", "clamp"],
        tau_r=0.4 * (1 - 1e-7),
        tau_d=0.4,
    )
    add("tau_clamp_banded", fs30, "near-equal clamp, banded", ["1d", "clamp", "banded"], tau_r=0.4 * (1 - 1e-7), tau_d=0.4, conv_mode="banded")

    # --- traces shorter than the kernel (N_k = 166 here) -------------------------------------
    short = calcium_traces(51, 3, 50, fs=30.0, tau_rise=0.04, tau_decay=0.4, rate_hz=3.0, noise_sd=0.05)
    add("short_n50", short[0], "n=50 < kernel length 166", ["short", "1d"])
    add("short_n50_banded", short[0], "n=50 < kernel length, banded", ["short", "1d", "banded"], conv_mode="banded")
    add("short_batch_box01", short, "(3, 50) batch, box01", ["short", "2d", "box01"], constraint="box01")
    add("short_n1", np.array([2.5]), "n=1", ["short", "1d", "tiny"])
    add("short_n2", np.array([0.0, 1.0]), "n=2", ["short", "1d", "tiny"])
    add("short_n7", spec9[18:25].copy(), "n=7 (rising edge of a transient)", ["short", "1d", "tiny"])
    add("short_n9_banded", spec9[18:27].copy(), "n=9, banded", ["short", "1d", "tiny", "banded"], conv_mode="banded")
    add("short_n3_batch", np.array([[0.0, 1.0, 0.5], [3.0, 1.0, 2.0]]), "(2, 3) batch", ["short", "2d", "tiny"])

    # --- all-zero, constant, decreasing ------------------------------------------------------
    add("zeros_1d", np.zeros(300), "all-zero trace", ["zeros", "1d"])
    add("const_1d", np.full(300, 3.7), "constant trace 3.7", ["const", "1d"])
    add("const_1d_banded", np.full(300, 3.7), "constant trace, banded", ["const", "1d", "banded"], conv_mode="banded")
    add("decreasing_1d", np.linspace(2.0, 0.0, 200), "linearly decreasing trace", ["1d"])
    add(
        "mixed_zero_const_batch",
        np.stack([np.zeros(300), np.full(300, -2.0), spec9, spec9_trace(dc=1000.0)]),
        "(4, 300) batch: zeros, constant −2, spec §9, spec §9 + 1000",
        ["zeros", "const", "2d"],
    )

    # --- empty inputs ------------------------------------------------------------------------
    add("empty_1d", np.zeros(0), "empty 1-D input", ["empty", "1d"])
    add("empty_c0", np.zeros((3, 0)), "(3, 0) input: per-row empty results", ["empty", "2d"])
    add("empty_10", np.zeros((1, 0)), "(1, 0) input", ["empty", "2d", "one_row"])
    # --- DC offset on a trace shorter than the rolling-baseline window ----------------------
    # (last: a case's perturbation seed is its index, so new cases go at the end)
    short = dict(tau_r=0.02, tau_d=0.4, lam=0.001)
    add("dc5_short", short_dc_trace(5.0), "4 unit spikes + 5 DC, n=200 < baseline window 300, λ=0.001",
        ["1d", "dc_offset", "short"], **short)
    add("dc_short_batch", np.stack([short_dc_trace(dc) for dc in (5.0, 0.0, -3.0)]),
        "(3, 200) batch: DC +5, 0, -3 on the short trace", ["2d", "dc_offset", "short"], **short)
    return cases


def _compact_float(values: np.ndarray) -> np.ndarray:
    """Store float64 arrays holding float32 values as float32 (lossless, half the size)."""
    values = np.asarray(values)
    as32 = values.astype(np.float32)
    if values.dtype == np.float64 and np.array_equal(as32.astype(np.float64), values, equal_nan=True):
        return as32
    return values


def _type_name(value) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray:{value.dtype}"
    return type(value).__name__


#: Size of the perturbation ensemble that measures the reference's own sensitivity.
ENSEMBLE_SIZE = 4
#: Fraction of samples nudged by one float32 ulp in each ensemble member.
ENSEMBLE_FRACTION = 0.01


def perturbation_ensemble(traces: np.ndarray, args: tuple, kwargs: dict, base, seed: int) -> dict[str, np.ndarray]:
    """How far the reference moves when its float32 input moves by one ulp.

    FISTA runs of 1000+ iterations can be chaotic in float32: two implementations whose
    FFTs round differently may end on visibly different iterates, and so does the
    reference itself when the last bit of a few input samples changes.  For each of
    ``ENSEMBLE_SIZE`` members, ~1 % of the samples (at least one) are moved one float32
    ulp up and the reference is re-run.  The per-cell spread tells the tests how much of
    a difference is inherent rather than a defect.

    Returns
    -------
    dict
        ``ens_iterations`` / ``ens_converged``: (members, cells); ``ens_activity_spread``:
        (cells,) max over members of max |Δactivity| / max(peak, 1e-6);
        ``ens_reconvolution_spread`` and ``ens_baseline_spread``: (cells,) absolute.
    """
    x32 = np.atleast_2d(np.asarray(np.asarray(traces, dtype=np.float64), dtype=np.float32))
    cells, n = x32.shape
    rng = np.random.default_rng(seed)
    base_act = np.atleast_2d(np.asarray(base.activity, dtype=np.float64))
    base_rc = np.atleast_2d(np.asarray(base.reconvolution, dtype=np.float64))
    base_b = np.atleast_1d(np.asarray(base.baseline, dtype=np.float64))
    peak = np.maximum(np.abs(base_act).max(axis=1, initial=0.0), 1e-6)
    iters, conv = [], []
    act_spread = np.zeros(cells)
    rc_spread = np.zeros(cells)
    b_spread = np.zeros(cells)
    for _ in range(ENSEMBLE_SIZE):
        y = x32.copy()
        if n:
            mask = rng.random(y.shape) < ENSEMBLE_FRACTION
            mask[:, rng.integers(n)] = True
            y[mask] = np.nextafter(y[mask], np.float32(np.inf))
        member = calab.run_deconvolution_full(y.reshape(np.shape(traces)) if np.ndim(traces) == 1 else y, *args, **kwargs)
        iters.append(np.atleast_1d(np.asarray(member.iterations, dtype=np.int64)))
        conv.append(np.atleast_1d(np.asarray(member.converged, dtype=bool)))
        if n:
            act = np.atleast_2d(np.asarray(member.activity, dtype=np.float64))
            rc = np.atleast_2d(np.asarray(member.reconvolution, dtype=np.float64))
            act_spread = np.maximum(act_spread, np.abs(act - base_act).max(axis=1) / peak)
            rc_spread = np.maximum(rc_spread, np.abs(rc - base_rc).max(axis=1))
        b_spread = np.maximum(b_spread, np.abs(np.atleast_1d(np.asarray(member.baseline, dtype=np.float64)) - base_b))
    return dict(
        ens_iterations=np.stack(iters),
        ens_converged=np.stack(conv),
        ens_activity_spread=act_spread,
        ens_reconvolution_spread=rc_spread,
        ens_baseline_spread=b_spread,
    )


def run_deconv_case(case: dict, outdir: Path, index: int = 0) -> dict:
    """Run one case through the reference and write ``deconv/<name>.npz``."""
    p = case["params"]
    traces = case["traces"]
    call_input = traces.tolist() if case["as_list"] else traces
    before = np.array(traces, copy=True)
    args = (p["fs"], p["tau_r"], p["tau_d"], p["lam"])
    kwargs = dict(max_iters=p["max_iters"], conv_mode=p["conv_mode"], constraint=p["constraint"])
    full = calab.run_deconvolution_full(call_input, *args, **kwargs)
    simple = calab.run_deconvolution(call_input, *args, **kwargs)
    assert np.array_equal(before, traces), "reference mutated its input"
    if not np.array_equal(simple, full.activity):
        raise AssertionError(f"{case['name']}: run_deconvolution != run_deconvolution_full.activity")

    field_types = [_type_name(v) for v in full]
    iterations = np.asarray(full.iterations, dtype=np.int64)
    converged = np.asarray(full.converged, dtype=bool)
    payload = dict(
        traces=np.asarray(traces),
        as_list=np.array(case["as_list"]),
        fs=np.float64(p["fs"]),
        tau_r=np.float64(p["tau_r"]),
        tau_d=np.float64(p["tau_d"]),
        lam=np.float64(p["lam"]),
        max_iters=np.int64(p["max_iters"]),
        conv_mode=np.array(p["conv_mode"]),
        constraint=np.array(p["constraint"]),
        amplitude_scale=np.float64(case["amplitude_scale"]),
        activity=_compact_float(full.activity),
        baseline=np.asarray(full.baseline, dtype=np.float64),
        reconvolution=_compact_float(full.reconvolution),
        iterations=iterations,
        converged=converged,
        full_fields=np.array(list(full._fields)),
        full_types=np.array(field_types),
        simple_type=np.array(_type_name(simple)),
        simple_shape=np.array(simple.shape, dtype=np.int64),
        **perturbation_ensemble(traces, args, kwargs, full, seed=1000 + index),
    )
    path = outdir / "deconv" / f"{case['name']}.npz"
    np.savez_compressed(path, **payload)
    return dict(
        name=case["name"],
        file=f"deconv/{case['name']}.npz",
        description=case["description"],
        tags=case["tags"],
        input_shape=list(np.shape(traces)),
        input_dtype="list" if case["as_list"] else str(np.asarray(traces).dtype),
        params=p,
        iterations=iterations.tolist(),
        converged=converged.tolist(),
        full_types=field_types,
        ensemble_iterations=payload["ens_iterations"].tolist(),
        ensemble_activity_spread=payload["ens_activity_spread"].tolist(),
    )


# ---------------------------------------------------------------------------------------
# Host maths
# ---------------------------------------------------------------------------------------

KERNEL_CASES = [
    # spec §3.1 table
    (0.02, 0.4, 30.0),
    (0.04, 0.4, 30.0),
    (0.015, 0.15, 100.0),
    (0.05, 1.0, 20.0),
    (0.04, 0.4, 100.0),
    (0.001, 2.0, 100.0),
    (0.02, 0.4, 1000.0),
    # minimum length [0, 1]
    (0.001, 0.002, 30.0),
    # gcamp6f-like
    (0.1, 0.6, 30.0),
    # near-equal clamp: must equal (0.2, 0.4, 30)
    (0.4 * (1 - 1e-7), 0.4, 30.0),
    (0.2, 0.4, 30.0),
    # non-round values
    (0.0337, 0.511, 17.3),
]

AR2_CASES = [(0.02, 0.4, 30.0), (0.04, 0.4, 30.0), (0.1, 0.6, 30.0), (0.015, 0.15, 100.0), (-0.02, 0.4, 30.0), (0.4, 0.4, 30.0)]

UPSAMPLE_CASES = [(30, 300), (30, 100), (30, 15), (30, 45), (20, 50), (30, 75), (30, 30), (7.5, 100), (100, 1), (30, 44.999)]


def host_maths(outdir: Path) -> dict:
    """Reference build_kernel / compute_lipschitz / tau_to_ar2 / upsample / bandpass."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"kernels": [], "lipschitz": [], "tau_to_ar2": [], "upsample": [], "bandpass": []}

    for i, (tr, td, fs) in enumerate(KERNEL_CASES):
        k = calab.build_kernel(tr, td, fs)
        key = f"kernel_{i}"
        arrays[key] = np.asarray(k)
        meta["kernels"].append(dict(key=key, tau_rise=tr, tau_decay=td, fs=fs, dtype=str(k.dtype), length=int(k.size)))
        lip = calab.compute_lipschitz(k)
        meta["lipschitz"].append(dict(key=key, value=lip, type=type(lip).__name__))

    extra_lipschitz = {
        "lip_three": np.array([3.0]),
        "lip_alternating": np.array([1.0, -1.0, 1.0, -1.0]),
        "lip_mixed": np.array([0.5, -0.25, 1.0, 0.125, -0.75]),
        "lip_zeros": np.zeros(4),
        "lip_negzero": np.array([0.0, -0.0, 2.0]),
    }
    for key, k in extra_lipschitz.items():
        arrays[key] = k
        lip = calab.compute_lipschitz(k)
        meta["lipschitz"].append(dict(key=key, value=lip, type=type(lip).__name__))

    for tr, td, fs in AR2_CASES:
        out = calab.tau_to_ar2(tr, td, fs)
        meta["tau_to_ar2"].append(dict(tau_rise=tr, tau_decay=td, fs=fs, value=list(out), types=[type(v).__name__ for v in out]))

    for fs, target in UPSAMPLE_CASES:
        out = calab.compute_upsample_factor(fs, target)
        meta["upsample"].append(dict(fs=fs, target_fs=target, value=out, type=type(out).__name__))

    rng = np.random.default_rng(7)
    bp_inputs = {
        "bp_n5": (rng.normal(size=5), (0.04, 0.4, 30.0)),
        "bp_n5_nan": (np.array([0.0, 1.0, np.nan, 2.0, 3.0]), (0.04, 0.4, 30.0)),
        "bp_n7_f32": (rng.normal(size=7).astype(np.float32), (0.04, 0.4, 30.0)),
        "bp_n8": (rng.normal(size=8), (0.04, 0.4, 30.0)),
        "bp_n9": (rng.normal(size=9), (0.04, 0.4, 30.0)),
        "bp_n1000": (spec9_trace().repeat(4)[:1000] + 0.1 * rng.normal(size=1000), (0.02, 0.4, 30.0)),
        "bp_n1001_fs100": (calcium_traces(8, 1, 1001, fs=100.0, tau_rise=0.04, tau_decay=0.4, drift=0.5)[0], (0.04, 0.4, 100.0)),
        "bp_n1024_f32": (calcium_traces(9, 1, 1024, fs=100.0, tau_rise=0.1, tau_decay=0.4, drift=0.5)[0].astype(np.float32), (0.1, 0.4, 100.0)),
        "bp_const": (np.full(64, 2.0), (0.04, 0.4, 30.0)),
        "bp_tiny_fs": (rng.normal(size=32), (0.04, 0.4, 0.04)),  # f_hp >= f_lp: returned unchanged
    }
    for key, (trace, (tr, td, fs)) in bp_inputs.items():
        out = calab.bandpass_filter(trace, tr, td, fs)
        arrays[f"{key}_in"] = np.asarray(trace)
        arrays[f"{key}_out"] = np.asarray(out)
        meta["bandpass"].append(
            dict(key=key, tau_rise=tr, tau_decay=td, fs=fs, n=int(np.size(trace)), in_dtype=str(np.asarray(trace).dtype), out_dtype=str(out.dtype), out_type=type(out).__name__)
        )

    np.savez_compressed(outdir / "host_maths.npz", **arrays)
    (outdir / "host_maths.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

# "mentions": list of groups; the message (lower-cased) must contain one string of every
# group.  These are OUR requirements on messages (free to be reworded); the reference's
# own messages are recorded next to them for information.
M_NONFINITE = ["non-finite", "nan", "inf", "finite"]
M_FS = ["fs"]
M_TAU_R = ["tau_r"]
M_TAU_D = ["tau_d"]
M_LAM = ["lam"]
M_TRACES = ["traces", "1-d", "2-d", "dimension", "ndim", "shape"]


def error_cases() -> tuple[list[dict], dict[str, np.ndarray]]:
    """Invalid calls, as (func, args, kwargs, mentions); arrays go to errors_inputs.npz."""
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict] = []

    def arr(key: str, value: np.ndarray) -> dict:
        arrays[key] = np.asarray(value)
        return {"array": key}

    good = np.linspace(0.0, 1.0, 50)
    good2d = np.stack([good, good[::-1], 0.5 * good])

    def rd(name, traces, *, fs=30.0, tau_r=0.04, tau_d=0.4, lam=0.01, mentions, func="run_deconvolution", **kwargs):
        cases.append(dict(name=name, func=func, args=[traces, fs, tau_r, tau_d, lam], kwargs=kwargs, mentions=mentions))

    t1 = arr("good_1d", good)
    t2 = arr("good_2d", good2d)

    # --- non-finite traces ----------------------------------------------------------------
    x = good.copy(); x[17] = NAN
    rd("nan_1d", arr("nan_1d", x), mentions=[M_NONFINITE])
    rd("nan_1d_full", {"array": "nan_1d"}, func="run_deconvolution_full", mentions=[M_NONFINITE])
    x = good.copy(); x[0] = INF
    rd("inf_1d", arr("inf_1d", x), mentions=[M_NONFINITE])
    x = good.copy(); x[49] = 1e39  # finite in float64, overflows float32
    rd("f32_overflow_1d", arr("f32_overflow_1d", x), mentions=[M_NONFINITE + ["overflow", "float32"]])
    x = good2d.copy(); x[2, 5] = NAN
    rd("nan_2d_row2", arr("nan_2d_row2", x), mentions=[M_NONFINITE, ["row 2", "cell 2", "row=2", "cell=2", "row index 2"]])
    x = good2d.copy(); x[1, 3] = -INF; x[2, 0] = NAN
    rd("inf_2d_row1_first", arr("inf_2d_row1_first", x), func="run_deconvolution_full", mentions=[M_NONFINITE, ["row 1", "cell 1", "row=1", "cell=1", "row index 1"]])
    x = good.copy()[None, :]; x[0, 4] = NAN
    rd("nan_1row", arr("nan_1row", x), mentions=[M_NONFINITE])

    # --- shapes -----------------------------------------------------------------------------
    rd("ndim3", arr("ndim3", np.zeros((2, 2, 5))), mentions=[M_TRACES])
    rd("ndim0", arr("ndim0", np.array(1.0)), mentions=[M_TRACES])
    rd("empty_rows", arr("empty_rows", np.zeros((0, 5))), mentions=[["traces", "row", "cell", "at least one", "empty"]])
    rd("empty_rows_full", {"array": "empty_rows"}, func="run_deconvolution_full", mentions=[["traces", "row", "cell", "at least one", "empty"]])

    # --- parameters -------------------------------------------------------------------------
    for label, value in [("neg", -30.0), ("zero", 0.0), ("nan", NAN), ("inf", INF), ("neginf", -INF)]:
        rd(f"fs_{label}", t1, fs=value, mentions=[M_FS])
    for label, value in [("neg", -0.02), ("zero", 0.0), ("nan", NAN), ("inf", INF)]:
        rd(f"tau_r_{label}", t1, tau_r=value, mentions=[M_TAU_R])
    for label, value in [("neg", -0.4), ("zero", 0.0), ("nan", NAN), ("inf", INF)]:
        rd(f"tau_d_{label}", t1, tau_d=value, mentions=[M_TAU_D])
    rd("tau_r_ge_tau_d", t1, tau_r=0.5, tau_d=0.4, mentions=[M_TAU_R, M_TAU_D])
    rd("tau_r_eq_tau_d", t1, tau_r=0.4, tau_d=0.4, mentions=[M_TAU_R, M_TAU_D])
    for label, value in [("neg", -0.01), ("nan", NAN), ("inf", INF)]:
        rd(f"lam_{label}", t1, lam=value, mentions=[M_LAM])
    rd("kernel_too_long", t1, tau_d=100.0, tau_r=0.04, fs=30000.0, mentions=[M_TAU_D, M_FS])
    rd("kernel_too_long_2d", t2, tau_d=40.0, fs=3000.0, mentions=[M_TAU_D, M_FS])
    rd("conv_mode_unknown", t1, conv_mode="direct", mentions=[["conv_mode"]])
    rd("conv_mode_case", t1, conv_mode="FFT", mentions=[["conv_mode"]])
    rd("constraint_unknown", t1, constraint="box", mentions=[["constraint"]])
    rd("constraint_case_2d", t2, constraint="NONNEG", mentions=[["constraint"]])
    rd("max_iters_negative", t1, max_iters=-1, mentions=[["max_iters"]])
    rd("max_iters_huge", t1, max_iters=2**32, mentions=[["max_iters"]])
    rd("max_iters_float", t1, max_iters=2.5, mentions=[["max_iters"]])
    rd("max_iters_float_whole", t1, max_iters=100.0, mentions=[["max_iters"]])
    rd("max_iters_none", t1, max_iters=None, mentions=[["max_iters"]])
    # precedence (spec §2.2)
    rd("prec_param_before_conv_mode", {"array": "nan_1d"}, fs=-1.0, conv_mode="bad", mentions=[M_FS])
    rd("prec_conv_mode_before_nan", {"array": "nan_1d"}, conv_mode="bad", mentions=[["conv_mode"]])
    rd("prec_constraint_before_nan", {"array": "nan_2d_row2"}, constraint="bad", mentions=[["constraint"]])

    # --- other entry points ---------------------------------------------------------------------
    def other(name, func, args, mentions):
        cases.append(dict(name=name, func=func, args=args, kwargs={}, mentions=mentions))

    other("kernel_tau_r_ge_tau_d", "build_kernel", [0.5, 0.4, 30.0], [M_TAU_R, M_TAU_D])
    other("kernel_fs_zero", "build_kernel", [0.04, 0.4, 0.0], [M_FS])
    other("kernel_tau_d_nan", "build_kernel", [0.04, NAN, 30.0], [M_TAU_D])
    other("kernel_tau_r_neg", "build_kernel", [-0.04, 0.4, 30.0], [M_TAU_R])
    other("kernel_too_long", "build_kernel", [0.04, 100.0, 30000.0], [M_TAU_D, M_FS])
    other("lipschitz_empty", "compute_lipschitz", [arr("lip_empty", np.zeros(0))], [["kernel", "empty"]])
    other("lipschitz_nan", "compute_lipschitz", [arr("lip_nan", np.array([0.0, 1.0, NAN]))], [M_NONFINITE])
    x = np.linspace(0, 1, 32); x[3] = NAN
    other("bandpass_nan", "bandpass_filter", [arr("bp_nan", x), 0.04, 0.4, 30.0], [M_NONFINITE])
    other("bandpass_tau_r_ge_tau_d", "bandpass_filter", [arr("bp_ok", np.linspace(0, 1, 32)), 0.5, 0.4, 30.0], [M_TAU_R, M_TAU_D])
    other("bandpass_fs_neg", "bandpass_filter", [{"array": "bp_ok"}, 0.04, 0.4, -30.0], [M_FS])
    other("upsample_target_zero", "compute_upsample_factor", [30.0, 0.0], [["target"]])
    other("upsample_target_neg", "compute_upsample_factor", [30.0, -100.0], [["target"]])
    other("upsample_target_nan", "compute_upsample_factor", [30.0, NAN], [["target"]])
    other("upsample_target_inf", "compute_upsample_factor", [30.0, INF], [["target"]])
    other("upsample_ratio_huge", "compute_upsample_factor", [1.0, 1e12], [["target", "factor"]])
    other("upsample_fs_zero", "compute_upsample_factor", [0.0, 300.0], [M_FS])
    return cases, arrays


def _materialise(value, arrays: dict[str, np.ndarray]):
    if isinstance(value, dict) and "array" in value:
        return arrays[value["array"]].copy()
    return value


def errors(outdir: Path) -> list[dict]:
    """Record the reference's exception type and message for every invalid call."""
    cases, arrays = error_cases()
    for case in cases:
        func = getattr(calab, case["func"])
        args = [_materialise(a, arrays) for a in case["args"]]
        try:
            func(*args, **case["kwargs"])
        except Exception as exc:  # noqa: BLE001 - recording whatever the reference raises
            case["exception"] = type(exc).__name__
            case["exception_module"] = type(exc).__module__
            case["message"] = str(exc)
            msg = str(exc).lower()
            case["reference_message_satisfies_mentions"] = all(
                any(s.lower() in msg for s in group) for group in case["mentions"]
            )
        else:
            raise AssertionError(f"error case {case['name']!r}: the reference raised nothing")
    np.savez_compressed(outdir / "errors_inputs.npz", **arrays)
    # json writes NaN/Infinity literals, which Python's json reads back.
    (outdir / "errors.json").write_text(json.dumps(cases, indent=1) + "\n")
    return cases


def main(argv: list[str]) -> int:
    """Generate every fixture into ``argv[1]``; print a JSON summary on stdout."""
    if len(argv) not in (2, 3):
        print("usage: _golden_worker.py OUTDIR [EXTRA_INPUTS.npz]", file=sys.stderr)
        return 2
    _check_reference()
    outdir = Path(argv[1])
    extra: dict[str, np.ndarray] = {}
    if len(argv) == 3:
        with np.load(argv[2], allow_pickle=False) as data:
            extra = {key: data[key] for key in data.files}
    (outdir / "deconv").mkdir(parents=True, exist_ok=True)
    manifest = {
        "reference": f"calab=={importlib.metadata.version('calab')}",
        "numpy": np.__version__,
        "generator": "tools/make_golden.py (worker tools/_golden_worker.py)",
        "cases": [run_deconv_case(case, outdir, i) for i, case in enumerate(deconv_cases(extra))],
    }
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    host = host_maths(outdir)
    errs = errors(outdir)
    summary = {
        "deconv_cases": len(manifest["cases"]),
        "kernels": len(host["kernels"]),
        "bandpass": len(host["bandpass"]),
        "errors": len(errs),
        "iterations": {c["name"]: c["iterations"] for c in manifest["cases"]},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

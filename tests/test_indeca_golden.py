"""InDeCa functions against calab 0.3.0 golden fixtures (tests/golden/indeca, made by
tools/make_indeca_golden.py in the reference venv), plus batch invariance and errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _indeca_parity as parity  # noqa: E402

import calab  # noqa: E402
from calab.backends import backend_info  # noqa: E402

BACKENDS = ["numpy"] + (["jax"] if backend_info("jax").usable else [])
MANIFEST = parity.manifest()
#: cases where the reference only fits float rounding noise (a constant trace after the
#: band-pass is ~1e-7 of FFT round-off): both sides must find no real signal (alpha ~ 0)
NOISE_ONLY = {"constant"}
#: cells allowed to miss the per-cell parity criteria, on every backend: the two
#: noise-constrained cells documented in docs/differences.md (fs60_u5/0, u10_app_long/1)
ALLOWED_FAILURES = 2

_solved: dict[tuple[str, str], tuple[dict, object]] = {}


def solved(name: str, backend: str) -> tuple[dict, object]:
    """``(golden case, our result)`` of one solve case, computed once per test session."""
    key = (name, backend)
    if key not in _solved:
        entry = next(e for e in MANIFEST["solve"] if e["name"] == name)
        _solved[key] = parity.solve_case(name, entry["kwargs"], backend)
    return _solved[key]


@pytest.mark.parametrize("backend", BACKENDS)
def test_solve_trace_parity(backend):
    failures = []
    for entry in MANIFEST["solve"]:
        case, result = solved(entry["name"], backend)
        for i in range(case["traces"].shape[0]):
            if entry["name"] in NOISE_ONLY:
                assert abs(result.alpha[i]) < 1e-6 and abs(case["scalars"][i][0]) < 1e-6
                continue
            m = parity.cell_metrics(case["s_counts"][i], case["scalars"][i], result.s_counts[i], result.alpha[i],
                                    result.pve[i], int(result.iterations[i]))
            if not m["ok"]:
                failures.append((entry["name"], i, m))
    assert len(failures) <= ALLOWED_FAILURES, failures


#: golden cells that the JAX backend missed while it evaluated the AR(2) operator by FFT
#: (count correlation down to 0.947, alpha up to 8 % off); NumPy meets all of them
#: (u10_app_long cell 1 is left out: since traces are centred on their median in float64,
#: NumPy misses it too, by alpha 4.3 %; it is one of NumPy's allowed failures)
JAX_MISSED_BEFORE = [("u1_plain", 2), ("u4_filtered", 2), ("hp_only", 2), ("short_u4", 0),
                     ("u10_app_long", 3), ("gcamp6s_short_u10", 3)]


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX is not installed")
@pytest.mark.parametrize("name, cell", JAX_MISSED_BEFORE, ids=lambda v: str(v))
def test_jax_meets_the_reference_where_it_diverged(name, cell):
    case, result = solved(name, "jax")
    m = parity.cell_metrics(case["s_counts"][cell], case["scalars"][cell], result.s_counts[cell], result.alpha[cell],
                            result.pve[cell], int(result.iterations[cell]))
    assert m["ok"], m


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX is not installed")
@pytest.mark.parametrize("name", [e["name"] for e in MANIFEST["solve"]])
def test_jax_on_the_cpu_solves_exactly_like_numpy(name):
    # JAX's arrays live in host memory on the CPU, and InDeCa runs on the CPU backend's
    # compiled kernels there: every output equals NumPy's, so JAX meets the reference
    # exactly where NumPy does (before, the AR(2) operator by FFT and XLA's fused
    # multiply-adds moved 7 of the golden cells off the criteria).
    from calab.backends import get_backend

    if get_backend("jax").host_backend() is None:
        pytest.skip("JAX runs on an accelerator here")
    _, ours = solved(name, "jax")
    _, oracle = solved(name, "numpy")
    for field in ("s_counts", "alpha", "baseline", "threshold", "pve", "iterations", "converged", "filtered_trace"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(oracle, field), err_msg=field)


def test_solve_trace_single_matches_documented_types():
    entry = next(e for e in MANIFEST["solve"] if e["name"] == "u1_plain")
    case = parity.load("solve", "u1_plain")
    result = calab.solve_trace(case["traces"][0], **entry["kwargs"], backend="numpy")
    assert isinstance(result, calab.SolveTraceResult)
    assert result.s_counts.dtype == np.float32 and result.s_counts.shape == case["traces"][0].shape
    assert isinstance(result.iterations, int) and isinstance(result.converged, bool)
    np.testing.assert_array_equal(result.s_counts, case["s_counts"][0])
    assert result.alpha == pytest.approx(case["scalars"][0][0], rel=1e-5)
    assert result.iterations == int(case["scalars"][0][4])


def test_batch_invariance():
    case = parity.load("solve", "u4_noise")
    kwargs = next(e for e in MANIFEST["solve"] if e["name"] == "u4_noise")["kwargs"]
    batch = calab.solve_traces(case["traces"], **kwargs, backend="numpy")
    for i in range(case["traces"].shape[0]):
        alone = calab.solve_trace(case["traces"][i], **kwargs, backend="numpy")
        np.testing.assert_array_equal(alone.s_counts, batch.s_counts[i])
        assert alone.alpha == batch.alpha[i] and alone.iterations == batch.iterations[i]


def test_ragged_list_matches_dense_groups():
    case = parity.load("solve", "u1_filtered")
    kwargs = next(e for e in MANIFEST["solve"] if e["name"] == "u1_filtered")["kwargs"]
    traces = [case["traces"][0], case["traces"][1][:600], case["traces"][2]]
    result = calab.solve_traces(traces, **kwargs, backend="numpy")
    assert [c.size for c in result.s_counts] == [900, 600, 900]
    np.testing.assert_array_equal(result.s_counts[0], case["s_counts"][0])
    np.testing.assert_array_equal(result.s_counts[2], case["s_counts"][2])
    alone = calab.solve_trace(traces[1], **kwargs, backend="numpy")
    np.testing.assert_array_equal(alone.s_counts, result.s_counts[1])
    assert result.filtered_trace[1].shape == (600,)


@pytest.mark.parametrize("entry", MANIFEST["kernel"], ids=lambda e: e["name"])
def test_estimate_kernel_parity(entry):
    case = parity.load("kernel", entry["name"])
    kernel = calab.estimate_kernel(case["traces_flat"], case["spikes_flat"], case["trace_lengths"], case["alphas"],
                                   case["baselines"], entry["kernel_length"], warm_kernel=case.get("warm_kernel"), **entry["kwargs"])
    assert kernel.dtype == np.float32 and kernel.shape == (entry["kernel_length"],)
    peak = float(np.max(np.abs(case["kernel"])))
    assert np.max(np.abs(kernel - case["kernel"])) <= 2e-3 * max(peak, 1e-12)


def test_estimate_kernels_batched_equals_single():
    entries = MANIFEST["kernel"][:2]
    cases = [parity.load("kernel", e["name"]) for e in entries]
    subsets = []
    for case in cases:
        edges = np.concatenate([[0], np.cumsum(case["trace_lengths"])])
        subsets.append(calab.KernelSubset([case["traces_flat"][a:b] for a, b in zip(edges[:-1], edges[1:])],
                                          [case["spikes_flat"][a:b] for a, b in zip(edges[:-1], edges[1:])],
                                          case["alphas"], case["baselines"]))
    batched = calab.estimate_kernels(subsets, 45)
    for subset, row in zip(subsets, batched):
        alone = calab.estimate_kernels([subset], 45)[0]
        np.testing.assert_array_equal(alone, row)


def _biexp_expected(entry):
    values = [math.inf if isinstance(v, str) else v for v in entry["result"]]
    return values, entry["fit_mode"]


def _biexp_kwargs(entry):
    kwargs = dict(entry["kwargs"])
    if "warm" in kwargs:
        kwargs["warm"] = calab.BiexpFitResult(*kwargs["warm"])
    return kwargs


@pytest.mark.parametrize("entry", MANIFEST["biexp"], ids=lambda e: e["name"])
def test_fit_biexponential_parity(entry):
    h = parity.load("biexp", entry["name"])["h"]
    result = calab.fit_biexponential(h, entry["fs"], **_biexp_kwargs(entry))
    expected, mode = _biexp_expected(entry)
    assert isinstance(result, calab.BiexpFitResult) and result.fit_mode == mode
    for index in (0, 1, 4, 5):  # taus within 1 %
        assert result[index] == pytest.approx(expected[index], rel=0.01, abs=1e-12)
    if math.isfinite(expected[3]):  # residual within 2 % (absolute floor for exact fits)
        assert result.residual == pytest.approx(expected[3], rel=0.02, abs=1e-9)


def test_fit_biexponentials_batched_equals_single():
    entries = [e for e in MANIFEST["biexp"] if e["name"] in ("noisy_refined", "two_refined", "estimated_refined")]
    kernels = [parity.load("biexp", e["name"])["h"] for e in entries]
    fits = calab.fit_biexponentials(kernels, 30.0)
    for i, h in enumerate(kernels):
        assert fits.fit(i) == calab.fit_biexponential(h, 30.0)


def test_fit_biexponentials_warm_batch_equals_single():
    """Warm starts are refined in the same batch as the grid's candidates: every kernel's
    fit must still be exactly the one it gets alone (warm or cold, with and without skip)."""
    entries = [e for e in MANIFEST["biexp"] if e["name"] in ("noisy_refined", "two_refined", "estimated_refined")]
    kernels = [parity.load("biexp", e["name"])["h"] for e in entries]
    first = calab.fit_biexponentials(kernels, 30.0)
    moved = [1.05 * h for h in kernels]
    warm = [first.fit(0), None, first.fit(2)]
    for skip in (0, 2):
        fits = calab.fit_biexponentials(moved, 30.0, warm=warm, skip=skip)
        for i, h in enumerate(moved):
            assert fits.fit(i) == calab.fit_biexponential(h, 30.0, warm=warm[i], skip=skip)


@pytest.mark.parametrize("entry", MANIFEST["seed"], ids=lambda e: e["name"])
def test_seed_traces_parity(entry):
    case = parity.load("seed", entry["name"])
    result = calab.seed_traces(case["traces"], entry["fs"])
    np.testing.assert_array_equal(result.s_counts, case["s_counts"])
    np.testing.assert_allclose(result.baseline, case["baseline"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.alpha, case["alpha"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tau_rise=0.6, tau_decay=0.1), "tau_rise .* must be smaller than tau_decay"),
        (dict(fs=-1.0), "fs must be a finite sampling rate"),
        (dict(upsample_factor=0), "upsample_factor must be >= 1"),
        (dict(lambda_=-1.0), "lambda must be finite and >= 0"),
        (dict(tol=-1.0), "tol must be finite and >= 0"),
    ],
)
def test_solve_trace_errors(kwargs, match):
    args = dict(trace=np.ones(50), tau_rise=0.1, tau_decay=0.6, fs=30.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calab.solve_trace(**args)


def test_solve_trace_input_errors():
    with pytest.raises(ValueError, match="non-finite value .* at index 1"):
        calab.solve_trace(np.array([1.0, np.nan, 2.0]), 0.1, 0.6, 30.0)
    with pytest.raises(ValueError, match="use calab.solve_traces"):
        calab.solve_trace(np.ones((2, 30)), 0.1, 0.6, 30.0)
    with pytest.raises(ValueError, match="one row per trace"):
        calab.solve_traces(np.ones((2, 30)), 0.1, 0.6, 30.0, warm_counts=np.ones((3, 30)))


def test_estimate_and_fit_errors():
    with pytest.raises(ValueError, match="kernel_length must be in 1..=1048576"):
        calab.estimate_kernel(np.ones(10), np.ones(10), np.array([10]), np.ones(1), np.zeros(1), 0)
    with pytest.raises(ValueError, match="smooth_lambda must be finite and >= 0"):
        calab.estimate_kernel(np.ones(10), np.ones(10), np.array([10]), np.ones(1), np.zeros(1), 5, smooth_lambda=-1)
    with pytest.raises(ValueError, match="one entry per trace"):
        calab.estimate_kernel(np.ones(10), np.ones(10), np.array([5, 5]), np.ones(1), np.zeros(1), 5)
    with pytest.raises(ValueError, match="trace_lengths sum to"):
        calab.estimate_kernel(np.ones(10), np.ones(10), np.array([4]), np.ones(1), np.zeros(1), 5)
    with pytest.raises(ValueError, match="fs must be a finite sampling rate"):
        calab.fit_biexponential(np.ones(10), -1.0)
    with pytest.raises(ValueError, match="skip must be a whole number"):
        calab.fit_biexponential(np.ones(10), 30.0, skip=-1)
    assert calab.fit_biexponential(np.zeros(0), 30.0).fit_mode == "Empty"


#: JAX's own code paths (the ones a GPU runs: the AR(2) operator by FFT, XLA's fused
#: multiply-adds) flip threshold decisions that sit at a margin on some golden cells;
#: measured on the CPU: 10 of 53 cells, count correlation >= 0.947 (NumPy: 2)
JAX_DEVICE_PATHS_ALLOWED_FAILURES = 10


@pytest.mark.slow
def test_jax_device_code_paths_stay_near_the_reference(jax_device_paths, monkeypatch):
    import calab.backends

    # solve_traces looks the backend up at call time: hand it the instance with JAX's own paths
    monkeypatch.setattr(calab.backends, "resolve_backend", lambda *args, **kwargs: jax_device_paths)
    failures = []
    for entry in MANIFEST["solve"]:
        case = parity.load("solve", entry["name"])
        result = calab.solve_traces(case["traces"], **entry["kwargs"], warm_counts=case.get("warm_counts"),
                                    backend="jax")
        for i in range(case["traces"].shape[0]):
            if entry["name"] in NOISE_ONLY:
                continue
            m = parity.cell_metrics(case["s_counts"][i], case["scalars"][i], result.s_counts[i], result.alpha[i],
                                    result.pve[i], int(result.iterations[i]))
            if not m["ok"]:
                failures.append((entry["name"], i, round(m.get("corr", float("nan")), 3)))
    assert len(failures) <= JAX_DEVICE_PATHS_ALLOWED_FAILURES, failures

"""Compare every backend against golden outputs of the published ``calab==0.3.0``.

The fixtures in ``tests/golden/`` were produced by the reference itself, run in its own
venv by ``tools/make_golden.py``; they are independent truth, never our own output.
Regenerate them with::

    .venv/bin/python tools/make_golden.py

Acceptance criteria (see spec ``numerics.md`` §15):

* activity, per cell: ``max |ours - ref| <= 1e-3 * max(peak |ref|, 1e-6)``; a cell that
  misses this but has Pearson r >= 0.999 passes with a warning (the alternative criterion;
  ``CALAB_GOLDEN_STRICT=1`` disables it);
* baseline and reconvolution: within ``1e-3`` absolute, scaled by the case's amplitude for
  traces in raw fluorescence units (see :data:`ABS_TOL`);
* iteration counts within 10 % (at least +-1), exact where the count is determined by the
  cap or the input is empty; exactly equal on the NumPy backend (spec §15: a faithful port
  with float32 arrays and float64 reductions reproduces them in every case);
* converged flags equal; output types, shapes and dtypes as in spec §9;
* host maths: kernels to 1e-7, Lipschitz constants to 1e-9 relative, upsample factors
  exactly, bandpass to 2e-6;
* invalid inputs raise the reference's exception type, with a message naming the
  offending parameter (wording is ours to choose).

Where the reference is itself unstable, the tolerances widen to what is attainable: every
fixture also records how far the reference moves when ~1 % of its float32 input samples
change by one ulp (``ens_*`` arrays, 4 members).  Long FISTA runs can be chaotic in
float32 — in the benchmark's 100 x 9000 data set, 2 cells jump between ~1085 and ~1380
iterations and 2.5 % of peak activity under such a nudge — so no implementation whose FFT
rounds differently can be held to 1e-3 there.  Tolerances are therefore
``max(criterion, ENSEMBLE_MARGIN * reference self-spread)``, iteration counts may match
any ensemble member, and the exact-count check applies to cells whose count the
perturbation does not change (every cell except those 2).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.reference

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = "regenerate with `.venv/bin/python tools/make_golden.py`"

if not (GOLDEN / "manifest.json").exists():  # pragma: no cover - only without fixtures
    pytest.skip(f"golden fixtures missing in {GOLDEN}; {REGENERATE}", allow_module_level=True)

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CASES = {case["name"]: case for case in MANIFEST["cases"]}
HOST = json.loads((GOLDEN / "host_maths.json").read_text())
ERRORS = json.loads((GOLDEN / "errors.json").read_text())

#: Activity tolerance, relative to the cell's peak |activity| (the parity criterion).
ACTIVITY_RTOL = 1e-3
#: Floor of that peak, so all-zero cells need |ours| <= 1e-9.
ACTIVITY_PEAK_FLOOR = 1e-6
#: Pearson correlation accepted as the alternative activity criterion.  It is weak:
#: Pearson r ignores scale and offset, and a single sample off by 5 % of the peak in a
#: sparse 300-sample trace still gives r = 0.9997.  A cell that passes only this way
#: therefore raises a warning, and CALAB_GOLDEN_STRICT=1 turns the alternative off
#: (max-abs criterion only).
ACTIVITY_MIN_PEARSON = 0.999
ACTIVITY_ALLOW_PEARSON = os.environ.get("CALAB_GOLDEN_STRICT", "0").strip() in ("", "0")
#: Baseline/reconvolution tolerance per unit of trace amplitude.  It is absolute (1e-3) for
#: traces of amplitude ~1, and scaled by the case's ``amplitude_scale`` (100) for raw
#: fluorescence: the reference computes in float32, whose rounding scales with magnitude.
#: On F0 ~ 1000 one float32 ulp is already 6e-5, and the FFT-convolution rounding that a
#: faithful port differs by (spec §15: up to 4.4e-5 in activity at amplitude ~1) grows
#: linearly with the signal amplitude and passes through the kernel's gain G ~ 15-25 into
#: the reconvolution, so a fixed 1e-3 would demand more digits than float32 carries there.
#: Measured: the NumPy backend, with identical iteration counts and activity within
#: 4e-5 of peak, still differs by up to 2.8e-3 in reconvolution on ``gcamp6f_fft``.
ABS_TOL = 1e-3
#: Relative slack on iteration counts ("within 10 %"), never below +-1: spec
#: §13 allows +-1 near the threshold for float32-reduction GPU paths.
ITERATION_RTOL = 0.10
#: Multiple of the reference's own 1-ulp perturbation spread that is always tolerated
#: (4 ensemble members sample the spread; the margin covers what they did not visit).
ENSEMBLE_MARGIN = 2.0


# ---------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=None)
def load_case(name: str) -> dict[str, Any]:
    """Arrays and parameters of one deconvolution case (read-only arrays)."""
    with np.load(GOLDEN / CASES[name]["file"], allow_pickle=False) as data:
        out = {key: data[key] for key in data.files}
    for value in out.values():
        value.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def host_arrays() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "host_maths.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@functools.lru_cache(maxsize=None)
def error_arrays() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "errors_inputs.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def calab_api(name: str):
    """Our public function ``name``; a clear failure (not a skip) when it is missing."""
    import calab

    try:
        return getattr(calab, name)
    except (AttributeError, ImportError) as exc:
        pytest.fail(f"calab.{name} is not implemented/importable: {type(exc).__name__}: {exc}")


def accepts_backend(func) -> bool:
    try:
        return "backend" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def case_call(name: str) -> tuple[Any, tuple, dict]:
    """Input and arguments of a case, exactly as they were given to the reference."""
    c = load_case(name)
    traces = np.array(c["traces"])  # fresh writable copy per call
    if bool(c["as_list"]):
        traces = traces.tolist()
    args = (float(c["fs"]), float(c["tau_r"]), float(c["tau_d"]), float(c["lam"]))
    kwargs = dict(max_iters=int(c["max_iters"]), conv_mode=str(c["conv_mode"]), constraint=str(c["constraint"]))
    return traces, args, kwargs


@functools.lru_cache(maxsize=None)
def solve_full(name: str, backend: str):
    """``run_deconvolution_full`` on a case, cached so that each (case, backend) runs once."""
    func = calab_api("run_deconvolution_full")
    traces, args, kwargs = case_call(name)
    before = np.array(traces, copy=True)
    result = func(traces, *args, **kwargs, backend=backend)
    assert np.array_equal(np.asarray(traces), before), "run_deconvolution_full modified its input"
    return result


def as_rows(values: Any) -> np.ndarray:
    """View a 1-D or 2-D per-sample output as float64 rows ``(cells, n)``."""
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def per_cell(values: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(values))


def iteration_cap(max_iters: int) -> int:
    """Effective iteration cap of the reference (spec §7.4): 100 * ceil(max_iters / 100)."""
    return 100 * math.ceil(max_iters / 100)


def allowed_iteration_difference(ref_iters: int, ref_converged: bool, max_iters: int) -> int:
    """Iteration slack: none where the count is fixed by the cap or the input, else 10 % (>= 1)."""
    if ref_iters == 0 or (not ref_converged and ref_iters == iteration_cap(max_iters)):
        return 0
    return max(1, int(ITERATION_RTOL * ref_iters))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


CASE_NAMES = list(CASES)


# ------------------------------------------------------------------ output structure (§9)
def _check_field(field: str, value: Any, ref_type: str, problems: list[str]) -> None:
    if ref_type.startswith("ndarray:"):
        dtype = ref_type.split(":", 1)[1]
        if not isinstance(value, np.ndarray):
            problems.append(f"{field}: expected numpy.ndarray[{dtype}], got {type(value).__module__}.{type(value).__name__}")
        elif str(value.dtype) != dtype:
            problems.append(f"{field}: dtype {value.dtype}, expected {dtype}")
    else:
        # 1-D input gives plain Python scalars; np.float64 would pass isinstance(float) but
        # is not what the reference returns.
        expected = getattr(builtins, ref_type)
        if type(value) is not expected:
            problems.append(f"{field}: expected Python {ref_type}, got {type(value).__module__}.{type(value).__name__}")


@pytest.mark.parametrize("case", CASE_NAMES)
def test_full_result_structure(case: str, backend: str) -> None:
    """Field names, Python types, dtypes and shapes of run_deconvolution_full (spec §9)."""
    ref = load_case(case)
    result = solve_full(case, backend)
    assert type(result).__name__ == "DeconvolutionResult" and isinstance(result, tuple)
    assert list(result._fields) == list(ref["full_fields"])
    problems: list[str] = []
    for field, value, ref_type in zip(ref["full_fields"], result, ref["full_types"]):
        _check_field(str(field), value, str(ref_type), problems)
    input_shape = np.shape(ref["traces"])
    for field in ("activity", "reconvolution"):
        shape = np.shape(getattr(result, field))
        if shape != input_shape:
            problems.append(f"{field}: shape {shape}, expected {input_shape}")
    if len(input_shape) == 2:
        for field in ("baseline", "iterations", "converged"):
            shape = np.shape(getattr(result, field))
            if shape != (input_shape[0],):
                problems.append(f"{field}: shape {shape}, expected {(input_shape[0],)}")
    assert not problems, f"{case} [{backend}]: " + "; ".join(problems)


def check_activity(case: str, backend: str, activity: Any) -> None:
    """Assert the per-cell activity criterion against the reference's activity."""
    golden = load_case(case)
    ref = as_rows(golden["activity"])
    ours = as_rows(activity)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    spread = per_cell(golden["ens_activity_spread"])
    failures, pearson_only = [], []
    for cell, (a, r) in enumerate(zip(ours, ref)):
        if r.size == 0:
            continue
        peak = max(float(np.max(np.abs(r))), ACTIVITY_PEAK_FLOOR)
        err = float(np.max(np.abs(a - r)))
        if err <= max(ACTIVITY_RTOL, ENSEMBLE_MARGIN * float(spread[cell])) * peak:
            continue
        rho = pearson(a, r)
        detail = f"cell {cell}: max|Δ| = {err:.3g} = {err / peak:.3g}·peak (peak {peak:.4g}), Pearson r = {rho:.6f}"
        if ACTIVITY_ALLOW_PEARSON and rho >= ACTIVITY_MIN_PEARSON:
            pearson_only.append(detail)
        else:
            failures.append(detail)
    if pearson_only:
        # Pearson ignores scale and offset, so make every use of the fallback visible.
        warnings.warn(f"{case} [{backend}] activity passes on Pearson r only: " + "; ".join(pearson_only), stacklevel=2)
    assert not failures, f"{case} [{backend}] activity differs from calab 0.3.0: " + "; ".join(failures)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_activity_matches_reference(case: str, backend: str) -> None:
    """Per cell: max |Δactivity| <= 1e-3 · peak |activity| (or Pearson r >= 0.999)."""
    check_activity(case, backend, solve_full(case, backend).activity)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_baseline_and_reconvolution_match_reference(case: str, backend: str) -> None:
    """Baseline and reconvolution within 1e-3 (× amplitude scale for raw fluorescence)."""
    ref = load_case(case)
    result = solve_full(case, backend)
    tol = ABS_TOL * float(ref["amplitude_scale"])
    tol_b = np.maximum(tol, ENSEMBLE_MARGIN * per_cell(ref["ens_baseline_spread"]))
    tol_rc = np.maximum(tol, ENSEMBLE_MARGIN * per_cell(ref["ens_reconvolution_spread"]))
    problems = []
    db = np.abs(per_cell(np.asarray(result.baseline, dtype=np.float64)) - per_cell(ref["baseline"]))
    if db.size and not np.all(db <= tol_b):
        problems.append(f"baseline |Δ| per cell {np.round(db, 8).tolist()} (tol {np.round(tol_b, 8).tolist()})")
    ours_rc, ref_rc = as_rows(result.reconvolution), as_rows(ref["reconvolution"])
    assert ours_rc.shape == ref_rc.shape, f"reconvolution shape {ours_rc.shape} != {ref_rc.shape}"
    if ref_rc.size:
        drc = np.max(np.abs(ours_rc - ref_rc), axis=1)
        if not np.all(drc <= tol_rc):
            problems.append(f"reconvolution max|Δ| per cell {np.round(drc, 8).tolist()} (tol {np.round(tol_rc, 8).tolist()})")
    assert not problems, f"{case} [{backend}]: " + "; ".join(problems)


@pytest.mark.parametrize("case", ["dc5_short", "dc_short_batch"])
def test_a_dc_offset_on_a_trace_shorter_than_the_baseline_window(case: str, backend: str) -> None:
    """0.3.0 removes the rolling baseline before solving and reports it back in ``baseline``:
    a constant offset comes out as the baseline (≈ +5, 0, −3 here), also when the trace
    (200 samples) is shorter than the baseline window (300); the fit stays within 10 %."""
    ref = load_case(case)
    offsets = np.array([5.0]) if case == "dc5_short" else np.array([5.0, 0.0, -3.0])
    assert np.all(np.abs(per_cell(ref["baseline"]) - offsets) < 0.05)  # what 0.3.0 reports
    result = solve_full(case, backend)
    np.testing.assert_allclose(per_cell(np.asarray(result.baseline, dtype=np.float64)), per_cell(ref["baseline"]),
                               rtol=0, atol=ABS_TOL)
    traces = as_rows(case_call(case)[0])
    error = np.linalg.norm(traces - as_rows(result.reconvolution), axis=1) / np.linalg.norm(traces, axis=1)
    assert np.all(error < 0.1), error


@pytest.mark.parametrize("case", CASE_NAMES)
def test_iterations_and_convergence_match_reference(case: str, backend: str) -> None:
    """Converged flags equal; iteration counts within 10 % (exact when cap- or input-determined)."""
    ref = load_case(case)
    result = solve_full(case, backend)
    ours_it = per_cell(result.iterations).astype(np.int64)
    ours_cv = per_cell(result.converged).astype(bool)
    ref_it, ref_cv = per_cell(ref["iterations"]), per_cell(ref["converged"])
    assert ours_it.shape == ref_it.shape
    # The reference's own answers: unperturbed first, then its 1-ulp ensemble members.
    all_it = np.vstack([ref_it[None, :], ref["ens_iterations"]])
    all_cv = np.vstack([ref_cv[None, :], ref["ens_converged"]])
    problems = []
    max_iters = int(ref["max_iters"])
    for cell, (oi, oc) in enumerate(zip(ours_it, ours_cv)):
        candidates = list(zip(all_it[:, cell].tolist(), all_cv[:, cell].tolist()))
        if not any(abs(int(oi) - ri) <= allowed_iteration_difference(ri, rc, max_iters) for ri, rc in candidates):
            ri, rc = candidates[0]
            problems.append(
                f"cell {cell}: iterations {oi} vs reference {ri} (allowed ±{allowed_iteration_difference(ri, rc, max_iters)}; "
                f"reference under 1-ulp input perturbations: {sorted(set(all_it[1:, cell].tolist()))})"
            )
        if bool(oc) not in set(all_cv[:, cell].tolist()):
            problems.append(f"cell {cell}: converged {bool(oc)} vs reference {bool(ref_cv[cell])}")
    assert not problems, f"{case} [{backend}]: " + "; ".join(problems)


def stable_cells(ref: dict[str, np.ndarray]) -> np.ndarray:
    """Cells whose reference iteration count no 1-ulp input perturbation changed."""
    return np.all(ref["ens_iterations"] == per_cell(ref["iterations"])[None, :], axis=0)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_iterations_exact_on_numpy(case: str) -> None:
    """The NumPy backend (f32 arrays, f64 reductions) reproduces iteration counts exactly (spec §15).

    Cells where the reference's own count moves under a 1-ulp input perturbation have no
    well-defined count to reproduce; they are held to the 10 % test only.
    """
    ref = load_case(case)
    stable = stable_cells(ref)
    if not stable.any():
        pytest.skip("every cell's reference iteration count is perturbation-sensitive")
    ours = per_cell(solve_full(case, "numpy").iterations).astype(np.int64)
    expected = per_cell(ref["iterations"])
    assert ours[stable].tolist() == expected[stable].tolist(), (
        f"{case}: numpy iterations {ours.tolist()} vs reference {expected.tolist()} "
        f"(compared on perturbation-stable cells {np.nonzero(stable)[0].tolist()})"
    )


#: run_deconvolution is the same solve as _full; one case per input kind keeps the suite fast.
SIMPLE_API_CASES = [
    name
    for name in ("spec9_clean", "spec9_row", "spec9_batch", "spec9_list", "spec9_int", "spec9_float32", "spec9_banded", "maxiter_0", "short_n1", "raw_batch_float32", "empty_1d", "empty_c0", "empty_10")
    if name in CASES
]


@pytest.mark.parametrize("case", SIMPLE_API_CASES)
def test_run_deconvolution_output(case: str, backend: str) -> None:
    """run_deconvolution returns float64 NumPy activity of the input's shape, matching the reference."""
    ref = load_case(case)
    func = calab_api("run_deconvolution")
    traces, args, kwargs = case_call(case)
    out = func(traces, *args, **kwargs, backend=backend)
    assert isinstance(out, np.ndarray), f"got {type(out)}"
    assert str(out.dtype) == "float64"
    assert out.shape == tuple(ref["simple_shape"].tolist())
    check_activity(case, backend, out)


# ---------------------------------------------------------------------------- host maths
KERNELS = HOST["kernels"]


@pytest.mark.parametrize("entry", KERNELS, ids=[f"{k['tau_rise']:.6g}-{k['tau_decay']}-{k['fs']}" for k in KERNELS])
def test_build_kernel(entry: dict) -> None:
    """build_kernel: float32, same length, values within 1e-7 (spec §3.1)."""
    ref = host_arrays()[entry["key"]]
    ours = calab_api("build_kernel")(entry["tau_rise"], entry["tau_decay"], entry["fs"])
    assert isinstance(ours, np.ndarray) and str(ours.dtype) == entry["dtype"]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("entry", HOST["lipschitz"], ids=[e["key"] for e in HOST["lipschitz"]])
def test_compute_lipschitz(entry: dict) -> None:
    """compute_lipschitz: a Python float within 1e-9 relative (spec §3.3)."""
    kernel = host_arrays()[entry["key"]]
    ours = calab_api("compute_lipschitz")(kernel.copy())
    assert isinstance(ours, float)
    assert ours == pytest.approx(entry["value"], rel=1e-9, abs=0)


@pytest.mark.parametrize("entry", HOST["tau_to_ar2"], ids=[f"{e['tau_rise']}-{e['tau_decay']}-{e['fs']}" for e in HOST["tau_to_ar2"]])
def test_tau_to_ar2(entry: dict) -> None:
    """tau_to_ar2: four Python floats, no validation or clamp (spec §3.4)."""
    ours = calab_api("tau_to_ar2")(entry["tau_rise"], entry["tau_decay"], entry["fs"])
    assert isinstance(ours, tuple) and len(ours) == 4
    assert [type(v).__name__ for v in ours] == entry["types"]
    assert list(ours) == pytest.approx(entry["value"], rel=1e-12, abs=0)


@pytest.mark.parametrize("entry", HOST["upsample"], ids=[f"{e['fs']}-{e['target_fs']}" for e in HOST["upsample"]])
def test_compute_upsample_factor(entry: dict) -> None:
    """compute_upsample_factor: exact, Python int, round half away from zero (spec §3.5)."""
    ours = calab_api("compute_upsample_factor")(entry["fs"], entry["target_fs"])
    assert type(ours) is int
    assert ours == entry["value"]


BANDPASS = HOST["bandpass"]


@pytest.mark.parametrize("entry", BANDPASS, ids=[e["key"] for e in BANDPASS])
def test_bandpass_filter(entry: dict, backend: str) -> None:
    """bandpass_filter: same dtype and shape, values within 2e-6 per unit amplitude (spec §5)."""
    func = calab_api("bandpass_filter")
    kwargs = {"backend": backend} if accepts_backend(func) else {}
    if not kwargs and backend != "numpy":
        pytest.skip("bandpass_filter has no backend= argument; host-only function checked on numpy")
    arrays = host_arrays()
    trace, ref = arrays[f"{entry['key']}_in"], arrays[f"{entry['key']}_out"]
    ours = func(trace.copy(), entry["tau_rise"], entry["tau_decay"], entry["fs"], **kwargs)
    assert isinstance(ours, np.ndarray) and str(ours.dtype) == entry["out_dtype"]
    assert ours.shape == ref.shape
    # FFT rounding in float32 is relative to the signal's magnitude.
    atol = 2e-6 * max(1.0, float(np.nanmax(np.abs(trace))) if trace.size else 1.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol, equal_nan=True)


# -------------------------------------------------------------------------------- errors
def _materialise(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return error_arrays()[value["array"]].copy()
    return value


def _check_error(case: dict, extra_kwargs: dict) -> None:
    func = calab_api(case["func"])
    args = [_materialise(a) for a in case["args"]]
    expected = getattr(builtins, case["exception"])
    with pytest.raises(Exception) as info:
        func(*args, **case["kwargs"], **extra_kwargs)
    exc = info.value
    assert isinstance(exc, expected), (
        f"{case['name']}: raised {type(exc).__name__}({exc}), reference raises "
        f"{case['exception']}({case['message']})"
    )
    message = str(exc).lower()
    missing = [group for group in case["mentions"] if not any(word.lower() in message for word in group)]
    assert not missing, f"{case['name']}: message {str(exc)!r} should mention one of each of {missing}"


DECONV_ERRORS = [c for c in ERRORS if c["func"].startswith("run_deconvolution")]
OTHER_ERRORS = [c for c in ERRORS if not c["func"].startswith("run_deconvolution")]


@pytest.mark.parametrize("case", DECONV_ERRORS, ids=[c["name"] for c in DECONV_ERRORS])
def test_deconvolution_errors(case: dict, backend: str) -> None:
    """Invalid run_deconvolution[_full] calls raise the reference's exception type."""
    _check_error(case, {"backend": backend})


@pytest.mark.parametrize("case", OTHER_ERRORS, ids=[c["name"] for c in OTHER_ERRORS])
def test_host_function_errors(case: dict) -> None:
    """Invalid build_kernel/compute_lipschitz/bandpass_filter/upsample calls."""
    _check_error(case, {})

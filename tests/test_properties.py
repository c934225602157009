"""Property-based tests (hypothesis) over every public function on every usable backend.

The property, for every generated call: the function either raises one of its documented
exception types, or returns finite outputs of the documented shape and dtype; and it never
modifies its inputs.  Generated inputs cover dtypes (real, bool, complex, object, text),
shapes (0-d to 3-d, empty axes), memory layouts, magnitudes from 1e-30 to 1e300,
NaN/inf, and every form a number can take (Python and NumPy scalars, 0-d arrays, None,
strings, bools, complex numbers, arrays).

Adding a public function is one line in ``ENTRY_POINTS`` (its argument strategy, the
documented exception types and an output check), plus those helpers if it needs new ones.

Runs deterministically (``derandomize=True``, no example database) with a bounded number
of examples per function and backend (:func:`profile`); ``CALAB_HYPOTHESIS_SCALE=20``
runs a longer exploration locally.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import calab  # noqa: E402
from calab.backends import BACKEND_NAMES, backend_info  # noqa: E402

#: Examples per test: host functions are cheap; a JAX example may compile a new shape.
#: ``CALAB_HYPOTHESIS_SCALE=20`` multiplies them for a long local exploration.
_SCALE = float(os.environ.get("CALAB_HYPOTHESIS_SCALE", "1"))
EXAMPLES = {None: 100, "numpy": 60, "jax": 25, "cupy": 25}


def profile(backend_name: str | None) -> settings:
    """Deterministic (derandomized, no example database) and bounded: the same examples on
    every run and in CI."""
    return settings(
        max_examples=max(1, int(EXAMPLES.get(backend_name, 10) * _SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


#: Longest kernel generated for solver calls.  The FFT operator's boundary matrix is
#: O(N_k²) memory and O(N_k³) time in calab/fista.py (reported to the engine branch):
#: a 27k-tap kernel needs 5.5 GB however short the trace.
MAX_SOLVER_KERNEL_TAPS = 1024


# --------------------------------------------------------------------------- number forms
#: Values a user might pass where a number is expected but which are not numbers.
NOT_NUMBERS = [None, True, False, "30", b"30", 3 + 0j, np.complex64(1), np.array([1.0, 2.0]),
               np.array(True), [30.0], object()]
NON_FINITE = [float("nan"), float("inf"), float("-inf"), np.float32("nan"), np.array(np.inf)]


def number_forms(value: float) -> st.SearchStrategy:
    """``value`` in each form a user can write it (only forms that keep its value)."""
    forms = [value, np.float64(value), np.array(value)]
    if np.isfinite(np.float32(value)) and float(np.float32(value)) == value:
        forms.append(np.float32(value))
    if float(value).is_integer() and abs(value) < 2**31:
        forms += [int(value), np.int64(int(value)), np.array(int(value))]
    return st.sampled_from(forms)


@dataclass(frozen=True)
class Param:
    """A numeric parameter: ``clean`` draws a valid value in any form; ``any`` is mostly
    valid but sometimes anything a user might try (non-numbers, NaN/inf, extreme values)."""

    valid: st.SearchStrategy
    wild: st.SearchStrategy | None = None

    def clean(self) -> st.SearchStrategy:
        return self.valid.flatmap(number_forms)

    def any(self) -> st.SearchStrategy:
        nonsense = st.one_of(
            st.sampled_from(NOT_NUMBERS + NON_FINITE),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(2**40), max_value=2**40),
        )
        if self.wild is not None:
            nonsense = st.one_of(nonsense, self.wild)
        return st.integers(0, 2).flatmap(lambda roll: nonsense if roll == 0 else self.clean())

    def draw(self, draw: Callable, clean: bool) -> Any:
        return draw(self.clean() if clean else self.any())


def positive(low: float, high: float) -> st.SearchStrategy:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


EXTREME = positive(1e-300, 1e300)
FS = Param(positive(1.0, 60.0), EXTREME)
TAU_RISE = Param(positive(0.001, 0.2), EXTREME)
TAU_DECAY = Param(positive(0.25, 1.0), EXTREME)
LAMBDA = Param(positive(0.0, 1.0), EXTREME)
MAX_ITERS_OK = st.sampled_from([0, 1, 7, 150, np.int64(40), np.array(30)])
MAX_ITERS_BAD = st.sampled_from([-1, 2**32, 2.5, 100.0, None, True, "100", np.array([5])])


# --------------------------------------------------------------------------- arrays
DTYPES_OK = ["float64", "float32", "float16", "int16", "int64", "uint8"]
DTYPES_BAD = ["bool", "complex128", "object", "str"]
SHAPES_OK = [(40,), (2, 40), (3, 9), (1, 64), (8,), (5,), (2, 0), (0,)]
SHAPES_BAD = [(), (2, 2, 5), (0, 12)]
SCALES_OK = [1.0, 1.0, 1e-30, 1e-3, 1e3, 1e20]
SCALES_BAD = [1e34, 1e38, 1e300]


ARRAY_FAULTS = ("dtype", "shape", "scale", "nan")


@st.composite
def arrays(draw, broken: set | frozenset = frozenset(), shapes=None, allow_device: str | None = None) -> Any:
    """A data array of a drawn dtype, shape, scale, layout and container.

    Real dtype, usable shape and magnitude and finite values, except for the faults in
    ``broken`` (a subset of :data:`ARRAY_FAULTS`: bad dtype, 0-d/3-d/no cells, values too
    large for float32 sums, NaN/inf).
    """
    ok_shapes, bad_shapes = (shapes if shapes is not None else (SHAPES_OK, SHAPES_BAD))
    shape = draw(st.sampled_from(bad_shapes if "shape" in broken and bad_shapes else ok_shapes))
    dtype = draw(st.sampled_from(DTYPES_BAD if "dtype" in broken else DTYPES_OK))
    scale = draw(st.sampled_from(SCALES_BAD if "scale" in broken else SCALES_OK))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # Calcium-like: non-negative transients plus noise, around a drawn offset.
    values = np.asarray(np.abs(rng.normal(size=shape)) ** 3 + 0.1 * rng.normal(size=shape))
    values = values + draw(st.sampled_from([0.0, 5.0, -2.0]))
    with np.errstate(over="ignore"):
        values = np.asarray(values * scale)  # stays an array when 0-d
    if values.size and "nan" in broken:
        flat = values.reshape(-1)  # a view: writes go to values
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "str":
            array = values.astype(str)
        elif dtype == "object":
            array = values.astype(object)
        elif dtype == "complex128":
            array = values + 0.5j
        elif dtype == "bool":
            array = values > 0.5
        elif dtype in ("int16", "int64", "uint8"):
            info = np.iinfo(dtype)
            array = np.clip(np.nan_to_num(values, posinf=0, neginf=0), info.min, info.max).astype(dtype)
        else:
            array = values.astype(dtype)
    layout = draw(st.sampled_from(["C", "C", "F", "strided", "list"]))
    if layout == "F" and array.ndim == 2:
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim >= 1 and array.shape[-1] > 1:
        wide = np.repeat(array, 2, axis=-1)
        array = wide[..., ::2]
    elif layout == "list" and array.dtype.kind in "fiu" and array.ndim >= 1 and array.size:
        return array.tolist()
    if allow_device and array.dtype.kind in "fiu" and array.ndim >= 1 and draw(st.integers(0, 2)) == 0:
        from calab.backends import get_backend

        with warnings.catch_warnings():  # huge float64 values become inf in float32: intended
            warnings.simplefilter("ignore", RuntimeWarning)
            return get_backend(allow_device).asarray(np.ascontiguousarray(array))
    return array


# --------------------------------------------------------------------------- output checks
def _host(value: Any) -> np.ndarray:
    from calab._validate import _to_host

    return _to_host(value)


def _library(value: Any) -> str | None:
    from calab.backends import array_library

    return array_library(value)


def _input_shape(traces: Any) -> tuple[int, ...]:
    return tuple(np.shape(traces)) if not hasattr(traces, "shape") else tuple(traces.shape)


def _check_activity(out: Any, traces: Any) -> None:
    shape = _input_shape(traces)
    assert tuple(out.shape) == shape
    if _library(traces) in (None, "numpy"):
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
    else:
        assert _library(out) == _library(traces) and str(out.dtype) == "float32"
    host = _host(out)
    assert np.isfinite(host).all(), "non-finite output for accepted input"
    assert (host >= 0).all()


def check_run_deconvolution(result: Any, args: tuple, kwargs: dict) -> None:
    _check_activity(result, args[0])


def check_run_deconvolution_full(result: Any, args: tuple, kwargs: dict) -> None:
    traces = args[0]
    assert isinstance(result, calab.DeconvolutionResult)
    _check_activity(result.activity, traces)
    assert tuple(result.reconvolution.shape) == _input_shape(traces)
    assert np.isfinite(_host(result.reconvolution)).all()
    if len(_input_shape(traces)) == 1:
        assert type(result.baseline) is float and np.isfinite(result.baseline)
        assert type(result.iterations) is int and result.iterations >= 0
        assert type(result.converged) is bool
    else:
        n_cells = _input_shape(traces)[0]
        baseline, iterations, converged = (_host(v) for v in result[1:2] + result[3:5])
        assert baseline.shape == iterations.shape == converged.shape == (n_cells,)
        # float64 for NumPy input; a device library's default float (float32 in JAX
        # without x64) for device input.
        assert baseline.dtype.kind == "f" and np.isfinite(baseline).all()
        if _library(traces) in (None, "numpy"):
            assert baseline.dtype == np.float64
        assert iterations.dtype.kind == "i" and (iterations >= 0).all()
        assert converged.dtype == bool


def check_bandpass(result: Any, args: tuple, kwargs: dict) -> None:
    trace = args[0]
    shape = _input_shape(trace)
    assert tuple(result.shape) == shape
    host = _host(result)
    if shape[-1] < 8:  # too short to filter: an unchanged copy, as in 0.3.0
        assert np.array_equal(host, np.asarray(_host(trace) if _library(trace) else trace), equal_nan=True)
        return
    assert np.isfinite(host).all()
    if _library(trace) in (None, "numpy") and shape[-1] >= 8:
        assert isinstance(result, np.ndarray) and result.dtype == np.float64


def check_kernel(result: Any, args: tuple, kwargs: dict) -> None:
    assert isinstance(result, np.ndarray) and result.dtype == np.float32 and result.ndim == 1
    assert result.size >= 2 and np.isfinite(result).all() and (result >= 0).all() and result[0] == 0
    assert result.max() in (0.0, 1.0)


def check_lipschitz(result: Any, args: tuple, kwargs: dict) -> None:
    assert type(result) is float and np.isfinite(result) and result >= 1e-10


def check_upsample(result: Any, args: tuple, kwargs: dict) -> None:
    assert type(result) is int and result >= 1


def check_ar2(result: Any, args: tuple, kwargs: dict) -> None:
    assert isinstance(result, tuple) and len(result) == 4
    assert all(type(v) is float and np.isfinite(v) for v in result)
    g1, g2, d, r = result
    taus_and_rate = [float(np.asarray(v)) for v in args]
    if all(v > 0 for v in taus_and_rate):  # negative values are computed as in 0.3.0
        assert 0 <= d <= 1 and 0 <= r <= 1


def check_save_roundtrip(result: Any, args: tuple, kwargs: dict) -> None:
    assert result is None
    traces, _, path = args[:3]
    loaded, meta = calab.load_tuning_data(path)
    expected = np.asarray(traces, dtype=np.float64)
    assert loaded.dtype == np.float64 and loaded.shape == (expected.reshape(-1, expected.shape[-1]).shape)
    np.testing.assert_array_equal(loaded, expected.reshape(loaded.shape))
    json.loads(Path(f"{path}_metadata.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))


def check_simulation(result: Any, args: tuple, kwargs: dict) -> None:
    traces = result.traces
    assert traces.dtype == np.float32 and traces.shape == (result.config.num_cells, result.config.num_timepoints)
    assert np.isfinite(traces).all() and len(result.ground_truth) == result.config.num_cells


# --------------------------------------------------------------------------- argument strategies
# Each returns a strategy of ``(args, kwargs)``.  About half the calls are fully valid (so
# the output property is exercised); the rest break one or more arguments.
@st.composite
def faults(draw, names: tuple[str, ...]) -> frozenset:
    """Which arguments to break: none (half the calls), one of ``names``, or all of them."""
    roll = draw(st.integers(0, 5))
    if roll < 3:
        return frozenset()
    if roll < 5:
        return frozenset({draw(st.sampled_from(names))})
    return frozenset(names)


def _kernel_taps(fs: Any, tau_decay: Any) -> float:
    """Kernel length a valid (fs, tau_decay) pair gives; 0 for anything invalid."""
    try:
        fs, tau_decay = float(np.asarray(fs)), float(np.asarray(tau_decay))
    except (TypeError, ValueError):
        return 0.0
    product = fs * tau_decay
    return 13.815510557964274 * product if np.isfinite(product) and product > 0 else 0.0


BAD_LAMBDAS = st.sampled_from([np.array([0.1, 0.2, 0.3]), np.array([0.1, -1.0]), np.array([0.1, np.nan]), [0.05, "x"]])
GOOD_LAMBDAS = st.sampled_from([np.array([0.1, 0.2]), [0.05, 0.0]])


@st.composite
def deconvolution_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "tau_rise", "tau_decay", "lam", "max_iters", "mode")))
    traces = draw(arrays(broken, allow_device=device))
    lam = LAMBDA.draw(draw, "lam" not in broken)
    if np.ndim(traces) == 2 and np.shape(traces)[0] == 2 and draw(st.booleans()):
        lam = draw(BAD_LAMBDAS if "lam" in broken else GOOD_LAMBDAS)  # one λ per cell
    args = (traces, FS.draw(draw, "fs" not in broken), TAU_RISE.draw(draw, "tau_rise" not in broken),
            TAU_DECAY.draw(draw, "tau_decay" not in broken), lam)
    assume(_kernel_taps(args[1], args[3]) <= MAX_SOLVER_KERNEL_TAPS)
    kwargs = {"max_iters": draw(MAX_ITERS_BAD if "max_iters" in broken else MAX_ITERS_OK)}
    if "mode" in broken:
        kwargs[draw(st.sampled_from(["conv_mode", "constraint"]))] = draw(st.sampled_from(["FFT", "box", 3, None]))
    else:
        kwargs["conv_mode"] = draw(st.sampled_from(["fft", "banded"]))
        kwargs["constraint"] = draw(st.sampled_from(["nonneg", "box01"]))
    return args, kwargs


@st.composite
def bandpass_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "tau_rise", "tau_decay")))
    return (draw(arrays(broken, allow_device=device)), TAU_RISE.draw(draw, "tau_rise" not in broken),
            TAU_DECAY.draw(draw, "tau_decay" not in broken), FS.draw(draw, "fs" not in broken)), {}


@st.composite
def noise_sd_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS))
    return (draw(arrays(broken, allow_device=device)),), {}


def check_noise_sd(result: Any, args: tuple, kwargs: dict) -> None:
    shape = _input_shape(args[0])
    values = np.atleast_1d(np.asarray(result, dtype=np.float64))
    assert values.shape == ((shape[0],) if len(shape) == 2 else (1,))
    assert np.isfinite(values).all() and (values >= 0).all()
    if len(shape) == 1:
        assert isinstance(result, float)


@st.composite
def kernel_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(("fs", "tau_rise", "tau_decay")))
    return (TAU_RISE.draw(draw, "tau_rise" not in broken), TAU_DECAY.draw(draw, "tau_decay" not in broken),
            FS.draw(draw, "fs" not in broken)), {}


@st.composite
def lipschitz_args(draw, device: str | None) -> tuple[tuple, dict]:
    shapes = ([(5,), (166,), (1,)], [(0,), (), (2, 3), (1, 4)])
    return (draw(arrays(draw(faults(ARRAY_FAULTS)), shapes=shapes)),), {}


TARGET_FS = Param(positive(1.0, 3000.0), EXTREME)


@st.composite
def upsample_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(("fs", "target_fs")))
    return (FS.draw(draw, "fs" not in broken), TARGET_FS.draw(draw, "target_fs" not in broken)), {}


ar2_args = kernel_args

_SAVE_DIR = Path(tempfile.mkdtemp(prefix="calab-properties-"))
_JSON_OK = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5), st.text(max_size=3),
                     st.none(), st.sampled_from([np.float32(1.5), np.array([1.0, 2.0]), (1, 2)]))
_JSON_BAD = st.sampled_from([float("nan"), float("inf"), np.array([1.0, np.nan]), 1j, np.float64("-inf")])


@st.composite
def save_args(draw, device: str | None) -> tuple[tuple, dict]:
    # NaN traces are stored as given (as in 0.3.0): not a fault here.
    broken = draw(faults(("dtype", "shape", "fs", "metadata")))
    values = st.one_of(_JSON_OK, _JSON_BAD) if "metadata" in broken else _JSON_OK
    metadata = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "gain", "note"]), values, max_size=2)))
    stem = str(_SAVE_DIR / f"rec{draw(st.integers(0, 10**9))}")
    return (draw(arrays(broken & {"dtype", "shape"})), FS.draw(draw, "fs" not in broken), stem, metadata), {}


@st.composite
def simulate_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(("num_cells", "num_timepoints", "fs_hz", "seed")))
    bad_counts = st.sampled_from([0, -1, 2.0, "2", None, True, 10**12])
    overrides = {
        "num_cells": draw(bad_counts if "num_cells" in broken else st.integers(1, 3)),
        "num_timepoints": draw(bad_counts if "num_timepoints" in broken else st.integers(1, 300)),
    }
    if "fs_hz" in broken or draw(st.booleans()):
        overrides["fs_hz"] = FS.draw(draw, "fs_hz" not in broken)
    if "seed" in broken or draw(st.booleans()):
        overrides["seed"] = draw(st.sampled_from([-1, 2**32, 1.5, "7"]) if "seed" in broken else st.integers(0, 2**32 - 1))
    return (), overrides


_EXPORT_KEYS = ("tau_rise_s", "tau_decay_s", "lambda", "sampling_rate_hz")


@st.composite
def export_file(draw, broken: frozenset) -> str:
    """A CaTune export JSON on disk, valid unless ``"export"`` is in ``broken``."""
    bad = "export" in broken
    parameters = {
        "tau_rise_s": draw(TAU_RISE.valid), "tau_decay_s": draw(TAU_DECAY.valid),
        "lambda": draw(LAMBDA.valid), "sampling_rate_hz": draw(FS.valid),
        "filter_enabled": draw(st.booleans()),
    }
    if bad:
        key = draw(st.sampled_from(_EXPORT_KEYS + ("filter_enabled",)))
        action = draw(st.sampled_from(["drop", "nan", "text", "negative", "null", "huge"]))
        if action == "drop":
            parameters.pop(key)
        else:
            parameters[key] = {"nan": float("nan"), "text": "0.1", "negative": -1.0, "null": None,
                               "huge": 1e300}[action]
    path = _SAVE_DIR / f"export{draw(st.integers(0, 10**9))}.json"
    path.write_text(json.dumps({"schema_version": "1.2.0", "parameters": parameters}))
    return str(path)


@st.composite
def export_params_args(draw, device: str | None) -> tuple[tuple, dict]:
    return (draw(export_file(draw(faults(("export",))))),), {}


@st.composite
def from_export_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("export",)))
    path = draw(export_file(broken))
    parameters = json.loads(Path(path).read_text())["parameters"]
    assume(_kernel_taps(parameters.get("sampling_rate_hz"), parameters.get("tau_decay_s")) <= MAX_SOLVER_KERNEL_TAPS)
    return (draw(arrays(broken & set(ARRAY_FAULTS), allow_device=device)), path), {}


def check_export_params(result: Any, args: tuple, kwargs: dict) -> None:
    assert set(result) == {"tau_rise", "tau_decay", "lambda_", "fs", "filter_enabled"}
    assert type(result["filter_enabled"]) is bool
    for key in ("tau_rise", "tau_decay", "lambda_", "fs"):
        assert isinstance(result[key], (int, float)) and np.isfinite(result[key])
    assert result["tau_rise"] > 0 and result["tau_decay"] > 0 and result["fs"] > 0 and result["lambda_"] >= 0


@st.composite
def caiman_args(draw, device: str | None) -> tuple[tuple, dict]:
    """A CaImAn results file with drawn traces (dtype, shape, NaN) and sampling rate."""
    h5py = pytest.importorskip("h5py")
    broken = draw(faults(("dtype", "shape", "fs")))
    data = np.asarray(draw(arrays(broken & {"dtype", "shape"}, shapes=([(3, 20), (20,), (1, 5)], [(), (2, 2, 3)]))))
    path = _SAVE_DIR / f"caiman{draw(st.integers(0, 10**9))}.hdf5"
    with h5py.File(path, "w") as handle:
        handle["estimates/C"] = data.astype("S8") if data.dtype.kind in "UO" else data  # HDF5 has no objects
        handle["params/data/fr"] = 30.0
    fs = FS.draw(draw, "fs" not in broken) if "fs" in broken or draw(st.booleans()) else None
    return (str(path),), {"fs": fs}


def check_loaded(result: Any, args: tuple, kwargs: dict) -> None:
    traces, metadata = result
    assert isinstance(traces, np.ndarray) and traces.dtype == np.float64 and traces.ndim == 2
    assert traces.flags.c_contiguous
    assert (metadata["num_cells"], metadata["num_timepoints"]) == traces.shape
    rate = metadata["sampling_rate_hz"]
    assert rate is None or (type(rate) is float and np.isfinite(rate) and rate > 0)


# ----- entry points of other branches (InDeCa #9, CaDecon #10, datasets #13).  Their table
# lines below are skipped until the function exists in calab (i.e. until the merge).
BOOL_FLAG = st.one_of(st.booleans(), st.booleans(), st.sampled_from([0, 1, "yes", None]))


@st.composite
def solve_trace_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "tau_rise", "tau_decay", "settings")))
    shapes = ([(40,), (64,), (9,), (1,)], [(), (2, 40), (0,)])
    trace = draw(arrays(broken, shapes=shapes, allow_device=device))
    bad = "settings" in broken
    kwargs = {
        "upsample_factor": draw(st.sampled_from([0, -1, 2.5, True, "2"] if bad else [1, 2, np.int64(3)])),
        "max_iters": draw(MAX_ITERS_BAD if bad else MAX_ITERS_OK),
        "tol": draw(st.sampled_from([-1.0, float("nan"), "1e-4"] if bad else [1e-4, np.float32(1e-3), 0.0])),
        "lambda_": LAMBDA.draw(draw, not bad),
        "hp_enabled": draw(BOOL_FLAG if bad else st.booleans()),
        "lp_enabled": draw(st.booleans()),
    }
    args = (trace, TAU_RISE.draw(draw, "tau_rise" not in broken), TAU_DECAY.draw(draw, "tau_decay" not in broken),
            FS.draw(draw, "fs" not in broken))
    return args, kwargs


def check_solve_trace(result: Any, args: tuple, kwargs: dict) -> None:
    counts = _host(result.s_counts)
    assert counts.shape == _input_shape(args[0]) and counts.dtype == np.float32
    assert np.isfinite(counts).all() and (counts >= 0).all()
    for name in ("alpha", "baseline", "threshold", "pve"):
        assert np.isfinite(getattr(result, name)), name
    assert int(result.iterations) >= 0 and isinstance(bool(result.converged), bool)


@st.composite
def estimate_kernel_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(("dtype", "nan", "lengths", "settings")))
    lengths = draw(st.lists(st.integers(20, 60), min_size=1, max_size=3))
    total = sum(lengths)
    traces = np.asarray(draw(arrays(broken & {"dtype", "nan"}, shapes=([(total,)], [(total,)]))))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    spikes = (rng.random(total) < 0.05).astype(np.float32)
    if "lengths" in broken:
        lengths = lengths + [5]
    n = len(lengths)
    bad = "settings" in broken
    kernel_length = draw(st.sampled_from([0, -3, 2.0, "8"] if bad else [4, 8, np.int64(16)]))
    args = (traces, spikes, np.asarray(lengths), np.ones(n), np.zeros(n), kernel_length)
    kwargs = {"max_iters": draw(st.sampled_from([-1, 2.5] if bad else [1, 20, 200])),
              "smooth_lambda": draw(st.sampled_from([-1.0, float("nan")] if bad else [0.0, 0.1]))}
    return args, kwargs


def check_estimate_kernel(result: Any, args: tuple, kwargs: dict) -> None:
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    assert result.shape == (int(np.asarray(args[5])),) and np.isfinite(result).all()


@st.composite
def fit_biexponential_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "settings")))
    kernel = np.asarray(draw(arrays(broken, shapes=([(40,), (12,), (200,)], [(), (2, 20), (0,)]))))
    if not broken:
        t = np.arange(kernel.size) / 30.0
        kernel = np.exp(-t / 0.4) - np.exp(-t / 0.04) + 0.01 * kernel  # a kernel-like shape
    bad = "settings" in broken
    kwargs = {"refine": draw(BOOL_FLAG if bad else st.booleans()),
              "skip": draw(st.sampled_from([-1, 2.5, 10**6] if bad else [0, 1]))}
    return (kernel, FS.draw(draw, "fs" not in broken)), kwargs


def check_biexp(result: Any, args: tuple, kwargs: dict) -> None:
    if np.size(args[0]) == 0:  # documented: 0.3.0's sentinel for an empty kernel
        assert result.fit_mode == "Empty" and result.residual == np.inf
        return
    for name in ("tau_rise", "tau_decay", "beta", "residual", "tau_rise_fast", "tau_decay_fast", "beta_fast"):
        value = getattr(result, name)
        assert type(value) is float and np.isfinite(value), name
    assert result.tau_rise >= 0 and result.tau_decay >= 0


@st.composite
def solve_traces_args(draw, device: str | None) -> tuple[tuple, dict]:
    """Batched form: a 2-D batch, a 1-D trace, or a ragged list (one row may be broken)."""
    (trace, *scalars), kwargs = draw(solve_trace_args(device))
    form = draw(st.sampled_from(["dense", "list", "single"]))
    if form == "dense" and np.ndim(_host(trace)) == 1 and np.size(_host(trace)):
        host = np.asarray(_host(trace))
        trace = np.stack([host, host[::-1]])
    elif form == "list":
        other = np.linspace(0.0, 1.0, 24)
        trace = [other, trace]
    return (trace, *scalars), kwargs


def check_solve_traces(result: Any, args: tuple, kwargs: dict) -> None:
    rows = result.s_counts if isinstance(result.s_counts, list) else list(np.atleast_2d(result.s_counts))
    for row in rows:
        assert np.isfinite(row).all() and (row >= 0).all() and row.dtype == np.float32
    for name in ("alpha", "baseline", "threshold", "pve"):
        assert np.isfinite(getattr(result, name)).all(), name


@st.composite
def estimate_kernels_args(draw, device: str | None) -> tuple[tuple, dict]:
    """Two subsets: the ``estimate_kernel`` arguments split as lists of traces."""
    (traces, spikes, lengths, alphas, baselines, kernel_length), kwargs = draw(estimate_kernel_args(device))
    if int(np.sum(lengths)) != np.size(traces):
        return ([(list(np.atleast_2d(traces)), list(np.atleast_2d(spikes)), alphas, baselines)], kernel_length), kwargs
    edges = np.concatenate([[0], np.cumsum(lengths)])
    rows = [traces[a:b] for a, b in zip(edges[:-1], edges[1:])]
    trains = [spikes[a:b] for a, b in zip(edges[:-1], edges[1:])]
    subset = (rows, trains, alphas, baselines)
    return ([subset, subset], kernel_length), kwargs


def check_estimate_kernels(result: Any, args: tuple, kwargs: dict) -> None:
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    assert result.shape == (len(args[0]), int(np.asarray(args[1]))) and np.isfinite(result).all()
    assert (result >= 0).all()


@st.composite
def fit_biexponentials_args(draw, device: str | None) -> tuple[tuple, dict]:
    (kernel, fs), kwargs = draw(fit_biexponential_args(device))
    if np.ndim(kernel) == 1 and np.size(kernel):
        kernel = [kernel, np.asarray(kernel)[: max(1, np.size(kernel) // 2)]]
    return (kernel, fs), kwargs


def check_biexps(result: Any, args: tuple, kwargs: dict) -> None:
    kernels = args[0] if isinstance(args[0], list) else list(np.atleast_2d(args[0]))
    for i, kernel in enumerate(kernels):
        check_biexp(result.fit(i), (kernel,), kwargs)


@st.composite
def seed_traces_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs",)))
    traces = draw(arrays(broken, shapes=([(3, 300), (2, 90), (120,)], [(), (2, 2, 5)])))
    return (traces, FS.draw(draw, "fs" not in broken)), {}


def check_seed_traces(result: Any, args: tuple, kwargs: dict) -> None:
    counts = np.atleast_2d(np.asarray(result.s_counts))
    assert counts.dtype == np.float32 and set(np.unique(counts)) <= {0.0, 1.0}
    assert np.isfinite(result.baseline).all() and (result.alpha == 1.0).all()


@st.composite
def run_cadecon_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "config")))
    traces = draw(arrays(broken, shapes=([(4, 300), (2, 200), (300,)], [(), (2, 2, 5), (0, 12)]),
                         allow_device=device))
    overrides = {"max_iterations": draw(st.sampled_from([0, -1, 2.5, "3"] if "config" in broken else [1, 2]))}
    return (traces, FS.draw(draw, "fs" not in broken)), overrides


def check_cadecon(result: Any, args: tuple, kwargs: dict) -> None:
    activity = result.activity
    shape = _input_shape(args[0])
    assert tuple(np.shape(activity)) == (shape if len(shape) == 2 else (1, shape[0])) or tuple(np.shape(activity)) == shape
    assert np.isfinite(_host(activity)).all()
    for name in ("alphas", "baselines", "pves"):
        assert np.isfinite(_host(getattr(result, name))).all(), name
    assert np.isfinite(_host(result.kernel_slow)).all()


@st.composite
def deconvolve_dataset_args(draw, device: str | None) -> tuple[tuple, dict]:
    broken = draw(faults(ARRAY_FAULTS + ("fs", "tau_rise", "tau_decay", "lam")))
    source = draw(arrays(broken))
    output = str(_SAVE_DIR / f"dataset{draw(st.integers(0, 10**9))}.zarr")
    kwargs = {"fs": FS.draw(draw, "fs" not in broken), "tau_r": TAU_RISE.draw(draw, "tau_rise" not in broken),
              "tau_d": TAU_DECAY.draw(draw, "tau_decay" not in broken), "lam": LAMBDA.draw(draw, "lam" not in broken),
              "max_iters": 50}
    assume(_kernel_taps(kwargs["fs"], kwargs["tau_d"]) <= MAX_SOLVER_KERNEL_TAPS)
    return (source, output), kwargs


def check_dataset(result: Any, args: tuple, kwargs: dict) -> None:
    zarr = pytest.importorskip("zarr")
    store = zarr.open(str(result.output), mode="r")
    activity = np.asarray(store["activity"])
    assert np.isfinite(activity).all() and (activity >= 0).all()


@dataclass(frozen=True)
class EntryPoint:
    """One public function under the property: how to call it and what it may do."""

    name: str
    arguments: Callable[[str | None], st.SearchStrategy]  # backend name (None: host) -> (args, kwargs)
    errors: tuple[type[BaseException], ...]  # documented exception types
    check: Callable[[Any, tuple, dict], None]  # output check when it returns
    backend_arg: bool = field(default=False)  # takes backend= (run on every backend)
    #: Calls documented to pass data through unchanged, NaN included (file writers and
    #: readers; band-pass of traces too short to filter).
    passes_through: Callable[[tuple], bool] = field(default=lambda args: False)


VALUE_TYPE = (ValueError, TypeError)

#: Every public function, one line each.  New entry points (after merging other branches):
#: add a line here; see VALIDATE_API.md for the validation helpers they should use.
ENTRY_POINTS = [
    EntryPoint("run_deconvolution", deconvolution_args, VALUE_TYPE + (OverflowError,), check_run_deconvolution, True),
    EntryPoint("run_deconvolution_full", deconvolution_args, VALUE_TYPE + (OverflowError,), check_run_deconvolution_full, True),
    EntryPoint("bandpass_filter", bandpass_args, VALUE_TYPE, check_bandpass, True,
               passes_through=lambda args: 0 < len(np.shape(args[0])) and np.shape(args[0])[-1] < 8),
    EntryPoint("build_kernel", kernel_args, VALUE_TYPE, check_kernel),
    EntryPoint("noise_sd", noise_sd_args, VALUE_TYPE + (OverflowError,), check_noise_sd),
    EntryPoint("compute_lipschitz", lipschitz_args, VALUE_TYPE, check_lipschitz),
    EntryPoint("compute_upsample_factor", upsample_args, VALUE_TYPE, check_upsample),
    EntryPoint("tau_to_ar2", ar2_args, VALUE_TYPE, check_ar2),
    EntryPoint("save_for_tuning", save_args, VALUE_TYPE, check_save_roundtrip, passes_through=lambda args: True),
    EntryPoint("simulate", simulate_args, VALUE_TYPE, check_simulation),
    EntryPoint("load_export_params", export_params_args, VALUE_TYPE + (KeyError,), check_export_params),
    EntryPoint("deconvolve_from_export", from_export_args, VALUE_TYPE + (KeyError,), check_run_deconvolution, True),
    EntryPoint("load_caiman", caiman_args, VALUE_TYPE + (KeyError,), check_loaded, passes_through=lambda args: True),
    EntryPoint("solve_trace", solve_trace_args, VALUE_TYPE + (OverflowError,), check_solve_trace, True),
    EntryPoint("estimate_kernel", estimate_kernel_args, VALUE_TYPE + (OverflowError,), check_estimate_kernel),
    EntryPoint("fit_biexponential", fit_biexponential_args, VALUE_TYPE + (OverflowError,), check_biexp),
    EntryPoint("solve_traces", solve_traces_args, VALUE_TYPE + (OverflowError,), check_solve_traces, True),
    EntryPoint("estimate_kernels", estimate_kernels_args, VALUE_TYPE + (OverflowError,), check_estimate_kernels),
    EntryPoint("fit_biexponentials", fit_biexponentials_args, VALUE_TYPE + (OverflowError,), check_biexps),
    EntryPoint("seed_traces", seed_traces_args, VALUE_TYPE, check_seed_traces),
    EntryPoint("run_cadecon", run_cadecon_args, VALUE_TYPE, check_cadecon, True),
    EntryPoint("calab.datasets:deconvolve_dataset", deconvolve_dataset_args, VALUE_TYPE + (FileExistsError,), check_dataset, True),
]


def _resolve(name: str) -> Any:
    """``calab.<name>``, or ``module:function`` for functions not exported at the top."""
    import importlib

    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return getattr(calab, name)


def _available(name: str) -> bool:
    try:
        _resolve(name)
    except (ImportError, AttributeError):
        return False
    return True


#: optional packages an entry point needs for a successful call (a GPU image may lack them)
OPTIONAL_MODULES = {"calab.datasets:deconvolve_dataset": ("zarr",)}


#: Entry points whose examples take minutes on two cores: every JAX example may compile a
#: new shape, and these run whole fits or loops per example.  They run with ``-m slow``.
SLOW_ENTRY_POINTS = {"run_cadecon", "fit_biexponential", "fit_biexponentials"}


def _cases() -> list:
    cases = []
    for entry in ENTRY_POINTS:
        backends = BACKEND_NAMES if entry.backend_arg else (None,)
        for name in backends:
            marks = []
            if not _available(entry.name):
                marks.append(pytest.mark.skip(reason=f"{entry.name} is not in this build (other branch)"))
            elif any(importlib.util.find_spec(module) is None for module in OPTIONAL_MODULES.get(entry.name, ())):
                marks.append(pytest.mark.skip(reason=f"{entry.name} needs {', '.join(OPTIONAL_MODULES[entry.name])} (calab[loaders])"))
            elif name is not None and not backend_info(name).usable:
                marks.append(pytest.mark.skip(reason=f"backend {name!r} unusable here: {backend_info(name).reason}"))
            if name == "cupy":
                marks.append(pytest.mark.gpu)
            label = entry.name.rpartition(":")[2]
            if name == "jax" or label in SLOW_ENTRY_POINTS:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(entry, name, id=f"{label}-{name or 'host'}", marks=marks))
    return cases


# --------------------------------------------------------------------------- the property
def _snapshot(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, dict, tuple)):
        return copy.deepcopy(value)
    return value


def _same(before: Any, after: Any) -> bool:
    if isinstance(before, np.ndarray):
        if before.dtype.kind in "fc":
            return before.shape == after.shape and np.array_equal(before, after, equal_nan=True)
        return before.shape == after.shape and _same(before.tolist(), after.tolist())
    if isinstance(before, (list, tuple)):
        return len(before) == len(after) and all(_same(a, b) for a, b in zip(before, after))
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_same(before[k], after[k]) for k in before)
    if isinstance(before, float):
        return isinstance(after, float) and (before == after or (np.isnan(before) and np.isnan(after)))
    return True  # immutable scalars, device arrays (immutable in JAX), objects


def _finite_input(args: tuple) -> bool:
    """Whether every array argument holds only finite real numbers (for the NaN-out rule)."""
    for value in args:
        if isinstance(value, tuple) or (
            isinstance(value, list) and any(isinstance(v, (list, tuple, np.ndarray)) for v in value)
        ):
            if not _finite_input(tuple(value)):  # a ragged batch (list of rows) or a subset tuple
                return False
            continue
        if isinstance(value, (np.ndarray, list)) or _library(value) not in (None, "numpy"):
            try:
                host = np.asarray(_host(value) if _library(value) else value, dtype=np.float64)
            except (TypeError, ValueError):
                return False
            if not np.isfinite(host).all():
                return False
    return True


@pytest.mark.parametrize(("entry", "backend_name"), _cases())
def test_documented_error_or_finite_documented_output(entry: EntryPoint, backend_name: str | None) -> None:
    func = _resolve(entry.name)
    device = backend_name if backend_name not in (None, "numpy") else None
    extra = {"backend": backend_name} if backend_name is not None else {}
    if extra:
        assert "backend" in inspect.signature(func).parameters

    outcomes: dict[str, int] = {}

    @profile(backend_name)
    @given(call=entry.arguments(device))
    def run(call: tuple[tuple, dict]) -> None:
        args, kwargs = call
        before = [_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()}
        try:
            result = func(*args, **kwargs, **extra)
        except entry.errors as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            assert str(exc), f"{type(exc).__name__} without a message"
        else:
            outcomes["returned"] = outcomes.get("returned", 0) + 1
            entry.check(result, args, kwargs)
            if not entry.passes_through(args):
                assert _finite_input(args), "returned a result for non-finite input"
        after = list(args), dict(kwargs)
        assert all(_same(b, a) for b, a in zip(before[0], after[0])), "an argument was modified"
        assert all(_same(before[1][k], after[1][k]) for k in before[1]), "an argument was modified"

    run()
    print(f"{entry.name}[{backend_name}]: {outcomes}")
    # Both paths must be exercised, or the property would hold vacuously.
    least = min(3, max(1, sum(outcomes.values()) // 5))
    assert outcomes.get("returned", 0) >= least, outcomes
    assert sum(v for k, v in outcomes.items() if k != "returned") >= least, outcomes


def test_every_public_function_is_covered_or_listed() -> None:
    """New public functions must join ENTRY_POINTS (or be listed here with the reason)."""
    not_functions_of_data = {
        # classes, configs, results, presets: covered through simulate / their own tests
        "DeconvolutionResult", "SimulationConfig", "KernelConfig", "NoiseConfig", "PhotobleachingConfig",
        "SaturationConfig", "PoissonConfig", "MarkovConfig", "RandomWalkDrift", "SinusoidalDrift",
        "DriftModel", "SpikeModel", "SimulationResult", "CellGroundTruth", "presets", "BackendUnavailableError",
        # result/config/control types of other branches (InDeCa, CaDecon, bridge)
        "SolveTraceResult", "SolveTracesResult", "BiexpFitResult", "BiexpFitResults", "KernelSubset",
        "CaDeconResult", "DeconConfig", "CaDeconProgress", "CaDeconControl", "CaDeconWarning",
        "HeadlessBrowser", "BridgeVersionError", "BridgeVersionWarning", "SeedResult",
        "DatasetLockedError", "DatasetMismatchError", "DatasetDamagedError", "DatasetDamageWarning",
        "SuspiciousInputWarning",
        # open a browser page and wait for the user: input checks in tests/test_bridge*.py
        # and tests/test_decon_bridge.py
        "tune", "decon",
        # opens a file or store lazily: errors tested in tests/test_datasets.py
        "open_source",
        # backend selection: no data; tested in tests/test_backends.py
        "use_backend", "available_backends",
        # file-based: errors tested on crafted files in tests/test_io.py and tests/test_loaders.py
        # (load_tuning_data also runs here, in the save_for_tuning round trip)
        "load_tuning_data", "load_minian",
        "load_suite2p", "load_nwb",
    }
    covered = {entry.name.rpartition(":")[2] for entry in ENTRY_POINTS}
    missing = sorted(set(calab.__all__) - covered - not_functions_of_data)
    assert not missing, f"add these public functions to ENTRY_POINTS in {__file__}: {missing}"

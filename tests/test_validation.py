"""Regression tests: every input found to give a silent wrong answer.

Each case is checked as a user makes it (public API, every usable backend where the
function takes ``backend=``), and the validation layer :mod:`calab._validate` is tested on
its own for every form a number can take.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import calab
from calab import _validate
from calab._atomic import atomic_write, atomic_write_many, remove_stale_temporaries

FS, TAU_R, TAU_D = 30.0, 0.04, 0.4


def _trace(n: int = 300, seed: int = 0) -> np.ndarray:
    """A calcium-like trace: a few spikes through the kernel plus noise (float64)."""
    rng = np.random.default_rng(seed)
    spikes = (rng.random(n) < 0.03).astype(float)
    calcium = np.convolve(spikes, calab.build_kernel(TAU_R, TAU_D, FS))[:n]
    return calcium + 0.05 * rng.normal(size=n)


# --------------------------------------------------------------------------- λ in every form
@pytest.mark.parametrize(
    ("lam", "error", "match"),
    [
        (None, TypeError, "lambda must be a number, got None"),
        (np.array(np.nan), ValueError, "lambda must be finite and >= 0, got NaN"),
        (np.array(-1.0), ValueError, "lambda must be finite and >= 0, got -1"),
        (np.array(np.inf), ValueError, "lambda must be finite and >= 0, got inf"),
        (np.float32(np.nan), ValueError, "got NaN"),
        (np.float64(-0.5), ValueError, "got -0.5"),
        ("0.1", TypeError, r"float\('0.1'\)"),
        (True, TypeError, "not a boolean"),
        (0.1 + 0j, TypeError, "real"),
        (np.array([0.1, np.nan]), ValueError, "for cell 1"),
        (np.array([0.1, 0.2, 0.3]), ValueError, r"shape \(2,\)"),
        (np.array([True, False]), TypeError, "boolean"),
    ],
)
def test_lambda_is_checked_in_every_form(lam, error, match, backend):
    traces = np.stack([_trace(seed=1), _trace(seed=2)])
    with pytest.raises(error, match=match):
        calab.run_deconvolution(traces, FS, TAU_R, TAU_D, lam, max_iters=50, backend=backend)


@pytest.mark.parametrize("form", [np.array(0.05), np.float32(0.05), np.float64(0.05), [0.05, 0.05]], ids=repr)
def test_lambda_forms_that_are_numbers_give_the_plain_float_answer(form):
    traces = np.stack([_trace(seed=1), _trace(seed=2)])
    plain = float(np.asarray(form).reshape(-1)[0])  # the Python float this form stands for
    expected = calab.run_deconvolution(traces, FS, TAU_R, TAU_D, plain, max_iters=200, backend="numpy")
    ours = calab.run_deconvolution(traces, FS, TAU_R, TAU_D, form, max_iters=200, backend="numpy")
    np.testing.assert_array_equal(ours, expected)
    assert np.isfinite(ours).all() and ours.max() > 0


# --------------------------------------------------------------------------- huge finite traces
@pytest.mark.parametrize("scale", [1e34, 1e36, 1e38])
def test_finite_traces_too_large_for_float32_sums_are_refused(scale, backend):
    traces = _trace(20000) * scale
    with pytest.raises(ValueError, match="Rescale first") as info:
        calab.run_deconvolution(traces, FS, TAU_R, TAU_D, 0.1, max_iters=50, backend=backend)
    assert "float32" in str(info.value) and "largest usable magnitude" in str(info.value)
    with pytest.raises(ValueError, match="Rescale first"):
        calab.bandpass_filter(traces, TAU_R, TAU_D, FS, backend=backend)


def test_large_but_usable_traces_give_finite_answers_that_scale_exactly(backend):
    """The rescaling the message recommends is exact: activity(c y, c λ) = c activity(y, λ)."""
    traces = _trace(2000)
    scale = 2.0**60  # ~1e18: inside the limit; a power of two so float32 scaling is exact
    base = calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, 0.05, max_iters=300, backend=backend)
    big = calab.run_deconvolution_full(traces * scale, FS, TAU_R, TAU_D, 0.05 * scale, max_iters=300, backend=backend)
    assert np.isfinite(big.activity).all() and np.isfinite(big.reconvolution).all()
    assert big.iterations == base.iterations
    np.testing.assert_allclose(np.asarray(big.activity) / scale, np.asarray(base.activity), rtol=1e-5, atol=1e-9)
    filtered = calab.bandpass_filter(traces * scale, TAU_R, TAU_D, FS, backend=backend)
    assert np.isfinite(np.asarray(filtered)).all()


def test_dynamic_range_limit_is_below_where_the_solver_overflows():
    # Measured on the NumPy backend: NaN first appears at 1e32 for 20000 samples and a
    # 5527-tap kernel (G = 468); the limit must stay well below that.
    kernel = calab.build_kernel(0.02, 0.4, 1000.0)
    gain = float(kernel.astype(np.float64).sum())
    limit = _validate.dynamic_range_limit(20000 + kernel.size, gain)
    assert 1e28 < limit < 1e31


def test_dynamic_range_check_ignores_nan_so_the_position_is_reported():
    traces = np.full((3, 40), 1e37)
    traces[1, 7] = np.nan
    _validate.check_dynamic_range(traces, n_terms=40)  # NaN: left to the finiteness check
    with pytest.raises(ValueError, match="row 1, index 7"):
        calab.run_deconvolution(np.where(np.isnan(traces), np.nan, 1.0), FS, TAU_R, TAU_D, 0.1, backend="numpy")


def test_a_kernel_that_vanishes_within_one_sample_is_refused(backend):
    # fs = 1e-5 Hz with tau_decay = 0.4 s: exp(-dt/tau) underflows, the kernel is all zeros
    # and the solver could only return zeros.
    assert not calab.build_kernel(TAU_R, TAU_D, 1e-5).any()
    with pytest.raises(ValueError, match="decays to zero within one sample"):
        calab.run_deconvolution(_trace(50), 1e-5, TAU_R, TAU_D, 0.1, backend=backend)


# --------------------------------------------------------------------------- dtype policy
BAD_DTYPES = [
    (lambda x: x + 1j, TypeError, "complex"),
    (lambda x: x > 0.1, TypeError, "boolean"),
    (lambda x: x.astype(object), TypeError, "object"),
    (lambda x: x.astype(str), TypeError, "text"),
]


@pytest.mark.parametrize(("convert", "error", "match"), BAD_DTYPES, ids=["complex", "bool", "object", "str"])
def test_non_real_data_is_refused_by_every_array_entry_point(convert, error, match, tmp_path):
    data = convert(_trace(64))
    with pytest.raises(error, match=match):
        calab.run_deconvolution(data, FS, TAU_R, TAU_D, 0.1)
    with pytest.raises(error, match=match):
        calab.run_deconvolution_full(data, FS, TAU_R, TAU_D, 0.1)
    with pytest.raises(error, match=match):
        calab.bandpass_filter(data, TAU_R, TAU_D, FS)
    with pytest.raises(error, match=match):
        calab.compute_lipschitz(data)
    with pytest.raises(error, match=match):
        calab.save_for_tuning(data, FS, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.int64, np.float16, np.float32, np.float64])
def test_real_integer_and_float_dtypes_are_accepted(dtype):
    data = (np.abs(_trace(200)) * 100).astype(dtype)
    out = calab.run_deconvolution(data, FS, TAU_R, TAU_D, 0.1, max_iters=100, backend="numpy")
    assert out.dtype == np.float64 and np.isfinite(out).all()
    expected = calab.run_deconvolution(data.astype(np.float64), FS, TAU_R, TAU_D, 0.1, max_iters=100, backend="numpy")
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- compute_lipschitz
@pytest.mark.parametrize("kernel", [np.ones((2, 3)), np.array(3.0), np.ones((1, 4))], ids=["2d", "0d", "row"])
def test_compute_lipschitz_requires_a_1d_kernel(kernel):
    with pytest.raises(ValueError, match="kernel must be 1-D"):
        calab.compute_lipschitz(kernel)


def test_compute_lipschitz_still_matches_closed_form_for_1d():
    kernel = calab.build_kernel(TAU_R, TAU_D, FS)
    assert calab.compute_lipschitz(kernel) == pytest.approx(float(kernel.astype(np.float64).sum()) ** 2, rel=1e-12)
    assert calab.compute_lipschitz([1.0, -1.0, 1.0, -1.0]) == pytest.approx(16.0)


# --------------------------------------------------------------------------- JSON metadata
@pytest.mark.parametrize(
    "metadata",
    [
        {"v": float("nan")},
        {"v": float("inf")},
        {"v": np.float32("-inf")},
        {"nested": {"deeper": [1.0, np.nan]}},
        {"arr": np.array([1.0, np.inf])},
    ],
    ids=["nan", "inf", "np-inf", "nested", "array"],
)
def test_save_for_tuning_refuses_non_finite_metadata_before_writing(metadata, tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        calab.save_for_tuning(_trace(20), FS, tmp_path / "rec", metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_save_for_tuning_writes_strict_json(tmp_path):
    calab.save_for_tuning(_trace(20), FS, tmp_path / "rec", metadata={"gain": np.float32(2.5), "ok": None})
    text = (tmp_path / "rec_metadata.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert data["gain"] == 2.5 and data["ok"] is None


# --------------------------------------------------------------------------- simulate size
def test_simulate_refuses_huge_requests_before_allocating():
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as info:
            calab.simulate(num_cells=100_000, num_timepoints=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, ValueError)  # also a ValueError (MemoryLimitError)
    message = str(info.value)
    assert "8.0 GiB" in message and "1.1 TiB" in message and "max_memory=" in message
    assert _validate.MEMORY_LIMIT_ENV in message
    assert peak < 50 * 1024**2  # nothing near the request was allocated


def test_simulate_allowance_can_be_raised_or_lowered_explicitly(monkeypatch):
    small = {"num_cells": 2, "num_timepoints": 100, "seed": 1}
    with pytest.raises(MemoryError, match="above the limit of 1.0 MiB"):
        calab.simulate(max_memory="1MiB", **small)
    monkeypatch.setenv(_validate.MEMORY_LIMIT_ENV, "1MiB")
    with pytest.raises(MemoryError):
        calab.simulate(**small)
    result = calab.simulate(max_memory=2 * 1024**3, **small)  # explicit beats the env var
    assert result.traces.shape == (2, 100)
    with pytest.raises(ValueError, match="not a size"):
        calab.simulate(max_memory="lots", **small)


def test_simulate_memory_estimate_covers_the_outputs():
    from calab.simulation.simulate import estimate_memory, resolve_config

    config = resolve_config(None, {"num_cells": 50, "num_timepoints": 2000})
    result = calab.simulate(config)
    held = result.traces.nbytes + result.spikes.nbytes + result.clean_calcium.nbytes
    assert held <= estimate_memory(config) <= held + 512 * 1024**2


# --------------------------------------------------------------------------- strings and bools
@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: calab.run_deconvolution(_trace(50), "30", TAU_R, TAU_D, 0.1), TypeError),
        (lambda: calab.run_deconvolution(_trace(50), True, TAU_R, TAU_D, 0.1), TypeError),
        (lambda: calab.run_deconvolution(_trace(50), FS, "0.04", TAU_D, 0.1), TypeError),
        (lambda: calab.run_deconvolution(_trace(50), FS, TAU_R, TAU_D, 0.1, max_iters=True), TypeError),
        (lambda: calab.run_deconvolution(_trace(50), None, TAU_R, TAU_D, 0.1), TypeError),
        (lambda: calab.run_deconvolution(_trace(50), np.array([30.0, 30.0]), TAU_R, TAU_D, 0.1), TypeError),
        (lambda: calab.bandpass_filter(_trace(50), TAU_R, TAU_D, "30"), TypeError),
        (lambda: calab.bandpass_filter(_trace(50), TAU_R, TAU_D, True), TypeError),
        (lambda: calab.build_kernel(TAU_R, TAU_D, True), TypeError),
        (lambda: calab.build_kernel("0.04", TAU_D, FS), TypeError),
        (lambda: calab.compute_upsample_factor(True, 300), TypeError),
        (lambda: calab.compute_upsample_factor("30", 300), TypeError),
        (lambda: calab.tau_to_ar2(TAU_R, TAU_D, "30"), TypeError),
        (lambda: calab.tau_to_ar2(True, TAU_D, FS), TypeError),
        (lambda: calab.tau_to_ar2(0.0, TAU_D, FS), ValueError),
        (lambda: calab.tau_to_ar2(-1e-5, TAU_D, FS), ValueError),
        (lambda: calab.tau_to_ar2(TAU_R, float("nan"), FS), ValueError),
    ],
)
def test_strings_bools_and_nonsense_are_not_numbers(call, error):
    with pytest.raises(error):
        call()


def test_numbers_in_any_real_form_are_accepted():
    expected = calab.run_deconvolution(_trace(80), FS, TAU_R, TAU_D, 0.1, max_iters=100, backend="numpy")
    for fs in (30, np.int64(30), np.float32(30.0), np.array(30.0), np.array(30)):
        out = calab.run_deconvolution(_trace(80), fs, TAU_R, TAU_D, 0.1, max_iters=np.array(100), backend="numpy")
        np.testing.assert_array_equal(out, expected)
    assert calab.tau_to_ar2(np.float32(0.02), 0.4, np.array(30)) == calab.tau_to_ar2(float(np.float32(0.02)), 0.4, 30.0)


def test_inputs_are_not_modified():
    traces = np.stack([_trace(seed=3), _trace(seed=4)])
    frozen = traces.copy()
    lam = np.array([0.05, 0.1])
    calab.run_deconvolution_full(traces, FS, TAU_R, TAU_D, lam, max_iters=50, backend="numpy")
    calab.bandpass_filter(traces, TAU_R, TAU_D, FS)
    np.testing.assert_array_equal(traces, frozen)
    np.testing.assert_array_equal(lam, [0.05, 0.1])


# --------------------------------------------------------------------------- the validation layer
SCALAR_FORMS_OK = [3, 3.0, np.int32(3), np.uint8(3), np.float16(3), np.float64(3), np.array(3.0), np.array(3)]
SCALAR_FORMS_TYPE = [None, True, np.bool_(False), "3", b"3", 3 + 0j, np.complex64(3), np.array([3.0]),
                     np.array(True), object(), [3.0]]


@pytest.mark.parametrize("value", SCALAR_FORMS_OK, ids=repr)
def test_scalar_forms_accepted(value):
    assert _validate.check_positive_scalar(value, "fs") == 3.0
    assert _validate.check_real_scalar(value, "x", minimum=3, maximum=3) == 3.0


@pytest.mark.parametrize("value", SCALAR_FORMS_TYPE, ids=repr)
def test_scalar_forms_rejected_with_type_error(value):
    with pytest.raises(TypeError, match="fs"):
        _validate.check_positive_scalar(value, "fs")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.array(np.nan), np.float32(np.inf), 0.0, -1])
def test_scalar_values_rejected_with_value_error(value):
    with pytest.raises(ValueError, match="fs"):
        _validate.check_positive_scalar(value, "fs")


def test_optional_scalars_and_integers():
    assert _validate.check_positive_scalar(None, "fs", allow_none=True) is None
    assert _validate.check_integer(np.array(7), "n") == 7
    for bad in (7.0, True, "7", None, np.array([7])):
        with pytest.raises(TypeError):
            _validate.check_integer(bad, "n")
    with pytest.raises(OverflowError):
        _validate.check_iterations(-1)
    with pytest.raises(ValueError):
        _validate.check_iterations(2**32)
    assert _validate.check_bool(np.bool_(True), "flag") is True
    with pytest.raises(TypeError):
        _validate.check_bool(1, "flag")


def test_per_cell_values():
    np.testing.assert_array_equal(_validate.check_per_cell(0.5, 3, "tau"), [0.5, 0.5, 0.5])
    values = np.array([0.1, 0.2])
    out = _validate.check_per_cell(values, 2, "tau", minimum=0, strict_minimum=True)
    assert out is not values
    with pytest.raises(ValueError, match="for cell 1"):
        _validate.check_per_cell([0.1, 0.0], 2, "tau", minimum=0, strict_minimum=True)
    with pytest.raises(ValueError, match="for cell 0"):
        _validate.check_per_cell([np.nan, 1.0], 2, "tau")
    with pytest.raises(TypeError):
        _validate.check_per_cell(["a", "b"], 2, "tau")


def test_ragged_and_text_arrays():
    with pytest.raises(ValueError, match="same number of timepoints"):
        _validate.check_real_array([[1.0, 2.0], [3.0]])
    with pytest.raises(TypeError, match="numeric array"):
        _validate.check_real_array("1 2 3")


def test_json_values():
    assert _validate.to_json_value({"a": np.int64(2), "b": (1.5, None), "c": np.array([[1, 2]])}) == {
        "a": 2, "b": [1.5, None], "c": [[1, 2]]}
    with pytest.raises(ValueError, match=r"metadata\['b'\]\[1\]"):
        _validate.to_json_value({"b": [0.0, math.nan]})
    with pytest.raises(TypeError):
        _validate.to_json_value({"b": 1j})


# --------------------------------------------------------------------------- atomic writer leftovers
def _killed_writer(destination: Path) -> None:
    """Start a writer that is killed (os._exit) half-way through an atomic write."""
    code = (
        "import os\n"
        "from calab._atomic import atomic_write\n"
        f"with atomic_write({str(destination)!r}) as h:\n"
        "    h.write(b'partial'); h.flush(); os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.skipif(os.name != "posix", reason="stale-file cleanup is POSIX only")
def test_temporary_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    destination = tmp_path / "rec.npy"
    _killed_writer(destination)
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".rec.npy.calab-") and not destination.exists()
    with atomic_write(destination) as handle:
        handle.write(b"complete")
    assert [p.name for p in tmp_path.iterdir()] == ["rec.npy"]
    assert destination.read_bytes() == b"complete"


@pytest.mark.skipif(os.name != "posix", reason="stale-file cleanup is POSIX only")
def test_cleanup_leaves_files_that_are_not_provably_ours_and_stale(tmp_path):
    from calab._atomic import _host_tag

    destination = tmp_path / "rec.npy"
    host = _host_tag()
    alive = tmp_path / f".rec.npy.calab-{host}-{os.getpid()}.abc.tmp"  # a live writer (us)
    parent = tmp_path / f".rec.npy.calab-{host}-{os.getppid()}.abc.tmp"  # another live process
    other_host = tmp_path / ".rec.npy.calab-otherhost-999999999.abc.tmp"
    old_style = tmp_path / ".rec.npy.abcdefgh.tmp"  # pre-0.4 name: no pid, cannot prove stale
    other_file = tmp_path / ".other.npy.calab-{host}-999999999.abc.tmp".replace("{host}", host)
    link_target = tmp_path / "keep.txt"
    link = tmp_path / f".rec.npy.calab-{host}-999999998.lnk.tmp"
    for path in (alive, parent, other_host, old_style, other_file, link_target):
        path.write_bytes(b"x")
    link.symlink_to(link_target)
    dead = tmp_path / f".rec.npy.calab-{host}-999999997.abc.tmp"
    dead.write_bytes(b"x")
    removed = remove_stale_temporaries(destination)
    assert removed == [dead]
    for path in (alive, parent, other_host, old_style, other_file, link_target):
        assert path.exists()
    assert link.is_symlink()


@pytest.mark.skipif(os.name != "posix", reason="stale-file cleanup is POSIX only")
def test_save_for_tuning_cleans_both_files_leftovers(tmp_path):
    stem = tmp_path / "rec"
    for name in ("rec.npy", "rec_metadata.json"):
        _killed_writer(tmp_path / name)
    assert len(list(tmp_path.iterdir())) == 2
    calab.save_for_tuning(_trace(20), FS, stem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.npy", "rec_metadata.json"]


def test_atomic_write_many_still_all_or_nothing(tmp_path):
    def fail(handle):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_many([(tmp_path / "a", "wb", lambda h: h.write(b"a")), (tmp_path / "b", "wb", fail)])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- python -m calab._cli
def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "calab._cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_python_m_calab_cli_runs_the_command_line_as_in_0_3_0(tmp_path):
    version = _run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"calab {calab.__version__}"
    missing = _run_cli(cwd=tmp_path)
    assert missing.returncode == 2 and "the following arguments are required: command" in missing.stderr
    assert missing.stderr.startswith("usage: calab")
    np.save(tmp_path / "t.npy", np.ones((2, 5)))
    info = _run_cli("info", str(tmp_path / "t.npy"), cwd=tmp_path)
    assert info.returncode == 0 and "Shape: (2, 5)" in info.stdout


def test_lazy_sources_are_checked_without_reading_them(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["ok"] = np.ones((3, 50), dtype=np.float32)
        handle["flags"] = np.ones((3, 50), dtype=bool)
        handle["cube"] = np.ones((2, 2, 2))
        handle["huge"] = np.full((3, 50), 1e37)
    with h5py.File(tmp_path / "data.h5", "r") as handle:
        assert isinstance(_validate.check_real_array(handle["ok"], lazy=True), h5py.Dataset)
        with pytest.raises(TypeError, match="boolean"):
            _validate.check_real_array(handle["flags"], lazy=True)
        with pytest.raises(ValueError, match="1-D .* or 2-D"):
            _validate.check_real_array(handle["cube"], lazy=True)
        with pytest.raises(ValueError, match="Rescale first"):
            _validate.check_dynamic_range(handle["huge"], n_terms=50)
        out = calab.run_deconvolution(handle["ok"], FS, TAU_R, TAU_D, 0.1, max_iters=50, backend="numpy")
        assert out.shape == (3, 50) and np.isfinite(out).all()


# ----- InDeCa and CaDecon entry points share the layer (merged after #15)
@pytest.mark.parametrize(
    "call",
    [
        lambda data: calab.solve_trace(data, 0.1, 0.6, 30.0),
        lambda data: calab.solve_traces(np.stack([data, data]), 0.1, 0.6, 30.0),
        lambda data: calab.solve_traces([data, data[:20]], 0.1, 0.6, 30.0),
        lambda data: calab.seed_traces(data, 30.0),
        lambda data: calab.fit_biexponential(data, 30.0),
        lambda data: calab.run_cadecon(np.stack([data] * 3), 30.0, max_iterations=1),
    ],
    ids=["solve_trace", "solve_traces", "solve_traces-ragged", "seed_traces", "fit_biexponential", "run_cadecon"],
)
def test_indeca_and_cadecon_refuse_complex_and_out_of_range_data(call):
    data = np.abs(np.sin(np.arange(60) / 3.0))
    with pytest.raises(TypeError, match="complex"):
        call(data + 0.5j)  # 0.3.0 dropped the imaginary part
    with pytest.raises(TypeError, match="bool"):
        call(data > 0.5)
    with pytest.raises(ValueError, match="float32"):
        call(data * 1e39)  # would become inf in the float32 solver


def test_indeca_flags_and_counts_have_strict_types():
    trace = np.abs(np.sin(np.arange(60) / 3.0))
    with pytest.raises(TypeError, match="hp_enabled must be True or False"):
        calab.solve_trace(trace, 0.1, 0.6, 30.0, hp_enabled="yes")
    with pytest.raises(TypeError, match="max_iters must be an integer"):
        calab.solve_trace(trace, 0.1, 0.6, 30.0, max_iters=2.5)
    with pytest.raises(TypeError, match="tol"):
        calab.solve_trace(trace, 0.1, 0.6, 30.0, tol="1e-4")
    with pytest.raises(TypeError, match="kernel_length must be a number"):
        calab.estimate_kernel(trace, (trace > 0.9).astype(float), np.array([60]), np.ones(1), np.zeros(1), "8")
    with pytest.raises(TypeError, match="refine must be True or False"):
        calab.fit_biexponential(trace, 30.0, refine=None)
    with pytest.raises(TypeError, match="skip must be an integer"):
        calab.fit_biexponential(trace, 30.0, skip=2.5)

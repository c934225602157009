"""Settings that multiply work, degenerate data and argument types at the InDeCa/CaDecon entry points.

Every case here gave a hang, a raw ``MemoryError``, an internal error or a silently wrong
answer before: settings are checked against a memory estimate (or a bound) before any
work, constant traces give no activity, tiny values keep their events, and arguments of
the wrong type raise a clear ``TypeError``.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

import calab
from calab import _validate
from calab._validate import FlatTraceWarning, MemoryLimitError
from calab.cadecon import CaDeconWarning

TAU_R, TAU_D = 0.05, 0.5
#: A run that is quick on two cores: given taus, no refinement rounds.
QUICK = dict(tau_rise=TAU_R, tau_decay=TAU_D, refine=False, progress=False, backend="numpy")


@pytest.fixture(scope="module")
def population():
    sim = calab.simulate(calab.presets.gcamp6f(num_cells=6, num_timepoints=900, seed=3))
    return np.asarray(sim.traces, dtype=np.float64), float(sim.config.fs_hz)


# --------------------------------------------------------------------------- settings that multiply work
@pytest.mark.timeout(120)  # it ran for minutes before it was checked
def test_run_cadecon_refuses_an_upsampled_rate_above_10_khz_before_any_work(population):
    traces, fs = population
    with pytest.raises(ValueError, match=r"upsample_target=1000000 .*above 10000 Hz.*at most 333"):
        calab.run_cadecon(traces, fs, upsample_target=10**6, progress=False)
    calab.run_cadecon(traces[:2], fs, upsample_target=fs, **QUICK)  # a factor of 1 is always fine


@pytest.mark.timeout(120)
def test_solve_trace_refuses_an_upsampled_rate_above_10_khz(population):
    traces, fs = population
    with pytest.raises(ValueError, match=r"upsample_factor=1000000 at fs = 30 Hz means a solve at 30000000 Hz"):
        calab.solve_trace(traces[0, :60], TAU_R, TAU_D, fs, upsample_factor=10**6)
    assert calab.solve_trace(traces[0, :60], TAU_R, TAU_D, fs, upsample_factor=333).s_counts.shape == (60,)


def test_run_cadecon_subset_count_is_checked_against_memory(population):
    traces, fs = population
    with pytest.raises(MemoryLimitError, match=r"num_subsets=100000000 subsets.*CALAB_MEMORY_LIMIT"):
        calab.run_cadecon(traces, fs, num_subsets=10**8, progress=False)


def test_run_cadecon_refinement_memory_is_checked_once_the_kernel_length_is_known(population, monkeypatch):
    traces, fs = population
    # The up-front estimate of this small run is ~3 MiB; the refinement's fits need ~20 MiB.
    monkeypatch.setenv("CALAB_MEMORY_LIMIT", "10MiB")
    with pytest.raises(MemoryLimitError, match=r"refinement iterations .*kernel fits"):
        calab.run_cadecon(traces, fs, **{**QUICK, "refine": True})


def test_run_cadecon_fs_in_the_wrong_units_is_refused_before_any_work(population):
    traces, _ = population
    with pytest.raises(ValueError, match=r"fs = 1e\+12 Hz.*above the 1048576-sample limit; check the units of fs"):
        calab.run_cadecon(traces, 1e12, progress=False)


def test_run_cadecon_fs_below_one_frame_per_decay_is_a_clear_error(population):
    traces, _ = population  # was "range() arg 3 must not be zero" inside the bispectrum
    for fs in (1e-3, 0.1):
        with pytest.raises(ValueError, match=r"run_cadecon needs fs >= 0.2 Hz"):
            calab.run_cadecon(traces, fs, progress=False)


def test_solve_traces_memory_estimate_is_checked_before_the_solve(population, monkeypatch):
    traces, fs = population
    estimate = calab.indeca.solve.estimate_memory(traces.size, traces.shape[1], 10)
    assert estimate["upsampled working arrays"] == 96 * traces.size * 10  # smaller than one block
    monkeypatch.setenv("CALAB_MEMORY_LIMIT", "1MiB")
    with pytest.raises(MemoryLimitError, match=r"solve_traces on 6 traces .*upsample_factor=10.*smaller upsample_factor"):
        calab.solve_traces(traces, TAU_R, TAU_D, fs, upsample_factor=10)


def test_estimate_kernel_keeps_the_documented_bound_and_checks_memory():
    trace, spikes = np.ones(60), np.zeros(60)
    spikes[5] = 1
    args = (trace, spikes, np.array([60]), np.ones(1), np.zeros(1))
    with pytest.raises(MemoryLimitError, match=r"kernel_length=1048576.*1048576 x 1048576 Gram matrices.*5 \* tau_decay"):
        calab.estimate_kernel(*args, 2**20)  # the documented maximum: an 8 TiB matrix
    with pytest.raises(ValueError, match=r"kernel_length must be in 1..=1048576"):
        calab.estimate_kernel(*args, 2**20 + 1)
    assert calab.estimate_kernel(*args, 10).shape == (10,)


def test_fit_biexponential_on_a_very_long_kernel_is_checked_against_memory():
    kernel = np.exp(-np.arange(200_000) / 1e4)  # needed over 10 GiB
    with pytest.raises(MemoryLimitError, match=r"200000-sample kernel"):
        calab.fit_biexponential(kernel, 30.0)


def test_memory_message_names_the_largest_part_and_how_to_raise_the_allowance():
    with pytest.raises(MemoryLimitError) as caught:
        _validate.check_memory({"small": 1.0, "the big table": 3 * 1024**3 - 1}, "f(x=1)", limit="1GiB",
                               advice="a smaller x")
    message = str(caught.value)
    assert "f(x=1) needs about 3.0 GiB of memory (mostly the big table: 3.0 GiB)" in message
    assert "(a smaller x)" in message and "CALAB_MEMORY_LIMIT=3GiB" in message
    _validate.check_memory({"a": 1.0, "b": 2.0}, "f()", limit=3)  # at the limit: accepted
    assert _validate.format_bytes(2.0**70) == "1.1e+09 TiB"


# --------------------------------------------------------------------------- constant traces
def test_a_constant_trace_gives_no_activity_and_a_warning():
    for level in (3.0, -5.0, 1000.0):  # 1054 counts for 3.0 before (band-pass round-off)
        with pytest.warns(FlatTraceWarning, match=r"trace 0 has no variation"):
            result = calab.solve_trace(np.full(600, level), 0.1, 0.6, 30.0, upsample_factor=3, hp_enabled=True,
                                       lp_enabled=True, noise_constrained=True)
        assert not result.s_counts.any() and result.alpha == 0 and result.pve == 0


def test_flat_rows_are_named_and_do_not_change_the_other_rows(population):
    traces, fs = population
    settings = dict(upsample_factor=3, hp_enabled=True, lp_enabled=True, noise_constrained=True)
    batch = traces.copy()
    batch[2] = 3.0
    batch[4] = -5.0 + 1e-12 * np.sin(np.arange(batch.shape[1]))  # below float32 resolution
    with pytest.warns(FlatTraceWarning, match=r"traces 2 and 4 have no variation"):
        result = calab.solve_traces(batch, TAU_R, TAU_D, fs, **settings)
    assert not result.s_counts[2].any() and not result.s_counts[4].any()
    alone = calab.solve_traces(traces[[0, 1, 3, 5]], TAU_R, TAU_D, fs, **settings)
    np.testing.assert_array_equal(result.s_counts[[0, 1, 3, 5]], alone.s_counts)


@pytest.mark.parametrize("settings", [dict(upsample_factor=3, hp_enabled=True, lp_enabled=True, noise_constrained=True),
                                      dict(upsample_factor=1)], ids=["filtered-u3", "plain-u1"])
def test_a_level_far_above_the_variation_costs_no_precision(population, settings):
    """The root cause of the constant-trace spikes: the level was carried into float32."""
    traces, fs = population
    plain = calab.solve_traces(traces, TAU_R, TAU_D, fs, **settings)
    for offset in (1e5, 1e6):  # before: counts off by 7-18 %, alphas by up to 80 %
        shifted = calab.solve_traces(traces + offset, TAU_R, TAU_D, fs, **settings)
        np.testing.assert_array_equal(shifted.s_counts, plain.s_counts)
        np.testing.assert_allclose(shifted.alpha, plain.alpha, rtol=1e-6)


def test_run_cadecon_constant_cells_get_no_activity_and_are_named(population):
    traces, fs = population
    batch = traces.copy()
    batch[1] = -5.0  # up to 3 counts a frame before
    batch[3] = 3.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calab.run_cadecon(batch, fs, activity="counts", **QUICK)
    named = [str(w.message) for w in caught if issubclass(w.category, CaDeconWarning) and "no variation" in str(w.message)]
    assert len(named) == 1 and named[0].startswith("cells 1 and 3 have no variation")
    assert not any(issubclass(w.category, FlatTraceWarning) for w in caught)  # no warning about subset rows
    assert named[0] in result.metadata["warnings"]
    assert not result.activity[1].any() and not result.activity[3].any() and result.activity[0].any()
    assert not result.metadata["continuous_activity"][[1, 3]].any()


# --------------------------------------------------------------------------- tiny values
def test_solve_traces_on_tiny_values_gives_the_events_of_the_same_traces_at_unit_scale(population):
    traces, fs = population
    settings = dict(upsample_factor=3, hp_enabled=True, lp_enabled=True, noise_constrained=True)
    plain = calab.solve_traces(traces, TAU_R, TAU_D, fs, **settings)
    scale = 2.0**-100  # about 8e-31: exact, so the answer must be bit for bit the same
    tiny = calab.solve_traces(traces * scale, TAU_R, TAU_D, fs, **settings)
    assert plain.s_counts.any()
    np.testing.assert_array_equal(tiny.s_counts, plain.s_counts)
    np.testing.assert_array_equal(tiny.alpha / scale, plain.alpha)
    np.testing.assert_array_equal(tiny.baseline / scale, plain.baseline)
    np.testing.assert_array_equal(tiny.filtered_trace.astype(np.float64) / scale, plain.filtered_trace)
    single = calab.solve_trace(traces[0] * 1e-30, TAU_R, TAU_D, fs)  # all zero before
    reference = calab.solve_trace(traces[0], TAU_R, TAU_D, fs)
    assert single.s_counts.sum() == pytest.approx(reference.s_counts.sum(), rel=0.05)
    assert single.alpha / 1e-30 == pytest.approx(reference.alpha, rel=1e-3)


def test_run_cadecon_on_tiny_values_gives_the_same_events(population):
    traces, fs = population
    plain = calab.run_cadecon(traces, fs, counts=True, **QUICK)
    scale = 2.0**-100
    tiny = calab.run_cadecon(traces * scale, fs, counts=True, **QUICK)
    np.testing.assert_array_equal(tiny.metadata["counts"], plain.metadata["counts"])
    np.testing.assert_array_equal(tiny.alphas / scale, plain.alphas)  # per-event amplitudes scale
    np.testing.assert_array_equal(tiny.activity.astype(np.float64) / scale, plain.activity)
    assert tiny.activity.dtype == np.float32 and not tiny.metadata["warnings"]
    # without counts the scalars describe the continuous activity: alpha is a ratio of amplitudes
    plain, tiny = calab.run_cadecon(traces, fs, **QUICK), calab.run_cadecon(traces * scale, fs, **QUICK)
    assert tiny.metadata["alphas_source"] == "continuous" and plain.alphas.min() > 0
    np.testing.assert_array_equal(tiny.alphas, plain.alphas)
    np.testing.assert_array_equal(tiny.baselines / scale, plain.baselines)
    np.testing.assert_array_equal(tiny.pves, plain.pves)


@pytest.mark.parametrize("call", [
    lambda x, fs: calab.solve_trace(x[0], TAU_R, TAU_D, fs),
    lambda x, fs: calab.solve_traces(x, TAU_R, TAU_D, fs),
    lambda x, fs: calab.run_cadecon(x, fs, **QUICK),
    lambda x, fs: calab.estimate_kernel(x[0], (x[0] > np.median(x[0])).astype(float), np.array([x.shape[1]]),
                                        np.ones(1), np.zeros(1), 20),
], ids=["solve_trace", "solve_traces", "run_cadecon", "estimate_kernel"])
def test_values_below_the_float32_range_raise_with_the_exact_fix(population, call):
    traces, fs = population  # 1e-300 gave all zeros with only a "no events" warning
    with pytest.raises(ValueError, match=r"varies by at most .* below 2e-31 .*multiply .* by 2\*\*\d+ \(exact"):
        call(traces * 1e-300, fs)


# --------------------------------------------------------------------------- argument types
def test_progress_must_be_a_flag_or_a_callable(population):
    traces, fs = population
    with pytest.raises(TypeError, match=r"progress must be True, False, None or a callable.*str 'yes'"):
        calab.run_cadecon(traces, fs, progress="yes")
    with pytest.raises(TypeError, match=r"progress must be"):
        calab.run_deconvolution(traces, fs, TAU_R, TAU_D, 0.1, progress="yes")
    events = []
    calab.run_cadecon(traces[:3], fs, **{**QUICK, "progress": events.append})
    assert events and events[-1].phase == "done"


def test_control_must_be_a_cadecon_control(population):
    traces, fs = population
    with pytest.raises(TypeError, match=r"control must be a calab.CaDeconControl \(or None\), got str 'stop'"):
        calab.run_cadecon(traces, fs, control="stop", progress=False)


def test_fit_biexponential_warm_must_be_an_earlier_fit():
    kernel = np.exp(-np.arange(60) / 15.0) - np.exp(-np.arange(60) / 1.5)
    with pytest.raises(TypeError, match=r"warm must be a BiexpFitResult .*got str 'x'"):
        calab.fit_biexponential(kernel, 30.0, warm="x")
    with pytest.raises(TypeError, match=r"warm\[0\] must be a BiexpFitResult"):
        calab.fit_biexponentials([kernel], 30.0, warm=[3.0])
    first = calab.fit_biexponential(kernel, 30.0, refine=False)
    again = calab.fit_biexponential(kernel, 30.0, refine=False, warm=first)
    assert again.tau_decay == pytest.approx(first.tau_decay, rel=1e-6)


@pytest.mark.parametrize(("alphas", "baselines", "name"), [
    ([np.nan], [0.0], "alphas"), ([1.0], [np.inf], "baselines"), ([np.inf], [0.0], "alphas"),
])
def test_estimate_kernel_refuses_non_finite_amplitudes_and_baselines(alphas, baselines, name):
    trace, spikes = np.ones(60), np.zeros(60)
    spikes[5] = 1
    with pytest.raises(ValueError, match=rf"{name} contains a non-finite value"):
        calab.estimate_kernel(trace, spikes, np.array([60]), np.array(alphas), np.array(baselines), 10)
    with pytest.raises(ValueError, match=rf"{name} contains a non-finite value"):
        calab.estimate_kernels([calab.KernelSubset([trace], [spikes], alphas, baselines)], 10)


# --------------------------------------------------------------------------- decisions on arguable cases
def test_true_is_not_a_count_anywhere(population):
    traces, fs = population
    with pytest.raises(TypeError, match=r"upsample_factor must be an integer >= 1, got bool True"):
        calab.solve_trace(traces[0], TAU_R, TAU_D, fs, upsample_factor=True)
    for field in ("max_iterations", "num_subsets", "upsample_target", "seed", "trace_max_iters", "target_coverage"):
        with pytest.raises(ValidationError, match=rf"{field} must be a number, got True"):
            calab.DeconConfig(**{field: True})
        with pytest.raises(ValidationError, match=field):
            calab.run_cadecon(traces, fs, progress=False, **{field: True})
    assert calab.DeconConfig(max_iterations=3, hp_filter_enabled=True).max_iterations == 3


def test_a_run_stopped_before_it_started_says_it_has_no_results(population):
    traces, fs = population
    control = calab.CaDeconControl()
    control.stop()
    with pytest.warns(CaDeconWarning, match=r"stopped before any cell was solved"):
        result = calab.run_cadecon(traces, fs, control=control, progress=False)
    assert np.isnan(result.alphas).all() and np.isnan(result.pves).all()  # NaN: not solved, not "zero"
    assert result.metadata["stopped"] and not result.metadata["finalized"]
    assert result.metadata["cells_with_results"] == [] and not result.activity.any()


def test_solve_traces_on_an_empty_batch_keeps_the_shape_and_dtypes():
    result = calab.solve_traces(np.zeros((0, 100)), TAU_R, TAU_D, 30.0)
    assert result.s_counts.shape == (0, 100) and result.s_counts.dtype == np.float32
    assert result.filtered_trace.shape == (0, 100) and result.filtered_trace.dtype == np.float32
    assert result.alpha.shape == (0,) and result.iterations.dtype == np.int64 and result.converged.dtype == bool
    ragged = calab.solve_traces([], TAU_R, TAU_D, 30.0)
    assert ragged.s_counts == [] and ragged.alpha.shape == (0,)


@pytest.mark.parametrize(("change", "match"), [
    ({"tau_rise_s": -0.05}, r"tau_rise must be > 0 s, got -0.05"),  # (NaN never gets past the server's JSON parser)
    ({"lambda": -0.5}, r"lambda_ must be >= 0, got -0.5"),
    ({"tau_rise_s": 0.8}, r"tau_rise \(0.8 s\) must be smaller than tau_decay \(0.5 s\)"),
    ({"sampling_rate_hz": "abc"}, r"fs must be a number, got str 'abc'"),
    ({"filter_enabled": "yes"}, r"filter_enabled must be True or False"),
])
def test_tune_checks_what_the_page_exported_before_returning_it(monkeypatch, change, match):
    from _bridge_client import catune_export, hosted_catune_session

    from calab.bridge import apps

    export = catune_export()
    export["parameters"].update(change)
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: threading.Thread(
        target=hosted_catune_session, args=(url, export), daemon=True).start() or True)
    with pytest.raises(ValueError, match=rf"the CaTune page exported unusable parameters \({match}"):
        calab.tune(np.abs(np.random.default_rng(0).normal(size=(3, 200))), 30.0, timeout=20,
                   app_url="https://example.org/CaTune/")


def test_catune_export_check_keeps_missing_keys_as_none():
    params = {"tau_rise": 0.05, "tau_decay": None, "lambda_": None, "fs": 30.0, "filter_enabled": False}
    assert _validate.check_catune_export(params) is params
    with pytest.raises(ValueError, match=r"unusable parameters \(tau_decay must be a finite number, got NaN"):
        _validate.check_catune_export({**params, "tau_decay": float("nan")})


@pytest.mark.parametrize(("value", "error"), [(2.5, TypeError), (0, ValueError), (True, TypeError), ("8", TypeError)])
def test_dataset_chunk_cells_must_be_a_positive_integer(tmp_path, value, error):
    pytest.importorskip("zarr")
    from calab.datasets import deconvolve_dataset

    source = np.abs(np.random.default_rng(0).normal(size=(4, 120)))
    with pytest.raises(error, match="chunk_cells"):  # 2.5 was truncated to 2
        deconvolve_dataset(source, tmp_path / "out.zarr", fs=30.0, tau_r=TAU_R, tau_d=TAU_D, lam=0.1, chunk_cells=value)
    assert not (tmp_path / "out.zarr").exists()

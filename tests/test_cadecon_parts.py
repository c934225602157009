"""The host-side parts of the CaDecon loop, against independent truth (spec values, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest

from calab.cadecon.config import BRIDGE_FIELDS, NATIVE_DEFAULTS, DeconConfig
from calab.cadecon.initialization import autocovariance_taus, noise_sigma
from calab.cadecon.progress import CaDeconControl, StopRequested
from calab.cadecon.result import CaDeconResult, biexp_waveform
from calab.cadecon.shape import (
    ConvergenceTracker,
    kernel_shape_rmse,
    select_final_taus,
    shape_to_tau,
    tau_to_shape,
)
from calab.cadecon.subsets import place_subsets, subset_size


# --------------------------------------------------------------------------- config
def test_config_documented_fields_and_defaults():
    config = DeconConfig()
    assert config.autorun is False
    for name in BRIDGE_FIELDS[1:]:
        assert getattr(config, name) is None
    assert config.bridge_dict() == {"autorun": False}
    config = DeconConfig(num_subsets=3, seed=7, patience=2)
    assert config.bridge_dict() == {"autorun": False, "num_subsets": 3, "seed": 7}  # native keys stay home
    resolved = config.resolved()
    assert resolved.num_subsets == 3 and resolved.patience == 2
    assert resolved.upsample_target == NATIVE_DEFAULTS["upsample_target"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("upsample_target", 0),
        ("max_iterations", 0),
        ("max_iterations", 201),
        ("convergence_tol", 0.0),
        ("convergence_tol", 1.0),
        ("num_subsets", 0),
        ("target_coverage", 1.5),
        ("target_coverage", 0.0),
        ("aspect_ratio", -1.0),
        ("patience", 0),
        ("initialization", "magic"),
        ("activity", "spikes"),
        ("counts", "maybe"),
        ("lambda_", -1.0),
        ("convergence_tol", math.nan),
    ],
)
def test_config_bad_values_name_the_field(field, value):
    with pytest.raises(pydantic.ValidationError) as info:
        DeconConfig(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_config_unknown_field_and_starting_pair():
    with pytest.raises(pydantic.ValidationError, match="max_iteration"):
        DeconConfig(max_iteration=3)
    with pytest.raises(pydantic.ValidationError, match="tau_decay"):
        DeconConfig(tau_rise=0.1)
    with pytest.raises(pydantic.ValidationError, match="tau_decay"):
        DeconConfig(tau_rise=0.5, tau_decay=0.2)
    config = DeconConfig(tau_rise=0.1, tau_decay=0.5)
    config.tau_rise = 0.9  # assignment breaks the pair; resolving re-checks it
    with pytest.raises(pydantic.ValidationError):
        config.resolved()


# --------------------------------------------------------------------------- subsets
def test_subsets_match_the_app_example():
    # spec indeca.md §6.2: N = 40, T = 3600, K = 4, coverage 0.25, aspect 1, seed 42
    rects = place_subsets(40, 3600, 4, 0.25, 1.0, 42)
    assert [tuple(r) for r in rects] == [
        (1800, 2700, 20, 30), (900, 1800, 30, 40), (2700, 3600, 0, 10), (900, 1800, 20, 30)
    ]
    assert subset_size(40, 3600, 4, 0.25, 1.0) == (10, 900)


@pytest.mark.parametrize("args", [(7, 100, 20, 1.0, 0.125, 3), (1, 50, 3, 0.25, 8.0, 0), (300, 9000, 8, 0.25, 1.0, 123456789)])
def test_subsets_stay_inside_and_are_deterministic(args):
    n_cells, n_frames = args[0], args[1]
    rects = place_subsets(*args)
    assert len(rects) == args[2]
    assert rects == place_subsets(*args)
    for r in rects:
        assert 0 <= r.t_start < r.t_stop <= n_frames and 0 <= r.cell_start < r.cell_stop <= n_cells
        assert r.n_frames == rects[0].n_frames and r.n_cells == rects[0].n_cells


# --------------------------------------------------------------------------- shapes
def test_tau_to_shape_closed_form_and_spec_values():
    t_peak, fwhm = tau_to_shape(0.1, 0.6)
    assert t_peak == pytest.approx(0.1 * 0.6 / 0.5 * math.log(6), rel=1e-12)
    assert (t_peak, fwhm) == pytest.approx((0.21501, 0.69380), abs=1e-5)  # spec §7.5
    assert tau_to_shape(0.4, 1.8) == pytest.approx((0.77353, 2.29109), abs=1e-5)
    # half maximum really is crossed at the two ends of the FWHM
    t = np.linspace(0, 3, 300001)
    h = np.exp(-t / 0.6) - np.exp(-t / 0.1)
    above = t[h >= h.max() / 2]
    assert above[-1] - above[0] == pytest.approx(fwhm, abs=2e-5)


def test_shape_round_trip_matches_spec_interpolation_error():
    assert shape_to_tau(*tau_to_shape(0.1, 0.6)) == pytest.approx((0.100002, 0.599979), abs=2e-6)
    assert shape_to_tau(*tau_to_shape(0.2, 5.0)) == pytest.approx((0.200005, 4.99964), abs=2e-5)
    assert shape_to_tau(0.3, 0.2) is None  # FWHM shorter than the peak time: no kernel


def test_kernel_shape_rmse_spec_value_and_degenerate():
    assert kernel_shape_rmse((0.1, 0.6), (0.11, 0.57), 30.0) == pytest.approx(0.0077, abs=5e-5)
    assert kernel_shape_rmse((0.1, 0.6), (0.1, 0.6), 30.0) == 0.0
    assert kernel_shape_rmse((0.6, 0.1), (0.1, 0.6), 30.0) is None


def test_convergence_rule_patience_min_iterations_and_streak_start():
    tracker = ConvergenceTracker(0.005, patience=3, min_iterations=2, fs=30.0, previous=(0.2, 1.0))
    # it1 jumps from the seed; it2-3 stable; it4 jumps; it5-7 stable
    sequence = [(0.1, 0.6), (0.1, 0.6), (0.1002, 0.6), (0.2, 1.5), (0.2, 1.5), (0.2, 1.5), (0.2, 1.5)]
    for iteration, taus in enumerate(sequence, start=1):
        tracker.update(iteration, taus)
        if iteration == 3:
            assert tracker.streak == 2 and not tracker.converged
        if iteration == 4:
            assert tracker.streak == 0  # a jump resets the streak
    assert tracker.converged_at == 5  # first iteration of the stable streak 5, 6, 7
    early = ConvergenceTracker(0.005, patience=1, min_iterations=2, fs=30.0, previous=(0.1, 0.6))
    early.update(1, (0.1, 0.6))
    assert not early.converged  # identical, but before min_iterations
    early.update(2, (0.1, 0.6))
    assert early.converged_at == 2
    degenerate = ConvergenceTracker(0.005, 1, 0, 30.0, (0.1, 0.6))
    assert degenerate.update(1, (0.5, 0.4)) is None and degenerate.previous == (0.1, 0.6)


def test_final_selection_medians_shapes():
    trail = [(0.3, 2.0), (0.1, 0.6), (0.1, 0.6), (0.12, 0.58)]
    got = select_final_taus(trail, window=3, current=(0.9, 9.0))
    shapes = np.array([tau_to_shape(*t) for t in trail[-3:]])
    expected = shape_to_tau(float(np.median(shapes[:, 0])), float(np.median(shapes[:, 1])))
    assert got == pytest.approx(expected)
    assert got == pytest.approx((0.1, 0.6), rel=1e-3)
    assert select_final_taus([], 5, (0.2, 1.0)) == (0.2, 1.0)


# --------------------------------------------------------------------------- initialisation
def _ar2_population(tau_rise, tau_decay, fs, n_cells=40, n_frames=6000, noise=0.3, seed=0):
    """AR(2) calcium driven by Poisson spikes plus white noise: the model the fit assumes."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    d, r = math.exp(-1 / (fs * tau_decay)), math.exp(-1 / (fs * tau_rise))
    spikes = rng.poisson(0.5 / fs * 4, size=(n_cells, n_frames)).astype(float)
    calcium = lfilter([0, 1], [1, -(d + r), d * r], spikes, axis=1)
    return 5 + calcium + noise * rng.standard_normal((n_cells, n_frames))


@pytest.mark.parametrize(("tau_rise", "tau_decay", "fs"), [(0.1, 0.6, 30.0), (0.05, 1.5, 30.0), (0.04, 0.25, 60.0)])
def test_autocovariance_recovers_ar2_taus(tau_rise, tau_decay, fs):
    estimate = autocovariance_taus(_ar2_population(tau_rise, tau_decay, fs), fs)
    assert estimate.tau_decay == pytest.approx(tau_decay, rel=0.15)
    assert estimate.rise_resolved and estimate.tau_rise == pytest.approx(tau_rise, rel=0.35)
    assert estimate.n_used >= 30


def test_autocovariance_without_signal_gives_nan():
    rng = np.random.default_rng(1)
    estimate = autocovariance_taus(rng.standard_normal((20, 3000)), 30.0)
    assert math.isnan(estimate.tau_decay) or estimate.n_used <= 2
    flat = autocovariance_taus(np.ones((3, 500)), 30.0)
    assert math.isnan(flat.tau_decay) and flat.n_used == 0


def test_noise_sigma_of_white_noise():
    rng = np.random.default_rng(2)
    sigma = noise_sigma(3.0 * rng.standard_normal((4, 20000)) + np.linspace(0, 50, 20000))
    assert sigma == pytest.approx(np.full(4, 3.0), rel=0.03)


# --------------------------------------------------------------------------- result, control
def test_result_fields_and_kernel_waveform():
    assert CaDeconResult._fields == (
        "activity", "alphas", "baselines", "pves", "kernel_slow", "kernel_fast", "fs", "metadata"
    )
    wave = biexp_waveform(0.1, 0.6, 2.0, 30.0)
    t = np.arange(int(5 * 0.6 * 30)) / 30
    np.testing.assert_allclose(wave, 2.0 * (np.exp(-t / 0.6) - np.exp(-t / 0.1)), rtol=1e-6)
    assert wave.dtype == np.float32
    assert biexp_waveform(None, 0.6, 1.0, 30.0).size == 0


def test_control_pause_resume_stop_across_threads():
    import threading
    import time

    control = CaDeconControl()
    control.checkpoint()  # running: returns at once
    control.pause()
    assert control.paused
    released = []

    def worker():
        control.checkpoint()
        released.append(time.monotonic())

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.3)
    assert not released  # held while paused
    control.resume()
    thread.join(2)
    assert released
    control.stop(finalize=False)
    with pytest.raises(StopRequested):
        control.checkpoint()
    assert control.stopped and not control.finalize_on_stop


def test_autocovariance_start_uses_a_sixth_of_the_decay_when_the_rise_is_unresolved():
    from calab.cadecon.initialization import AutocovarianceEstimate

    empty = np.zeros(0)
    unresolved = AutocovarianceEstimate(float("nan"), 0.6, False, empty, empty, empty, 5)
    assert unresolved.starting_taus() == pytest.approx((0.1, 0.6))
    resolved = AutocovarianceEstimate(0.05, 0.6, True, empty, empty, empty, 5)
    assert resolved.starting_taus() == pytest.approx((0.05, 0.6))
    # a resolved rise is kept inside [5 ms, half the decay]
    assert AutocovarianceEstimate(0.001, 0.6, True, empty, empty, empty, 5).starting_taus()[0] == 0.005
    assert AutocovarianceEstimate(0.5, 0.6, True, empty, empty, empty, 5).starting_taus()[0] == pytest.approx(0.3)

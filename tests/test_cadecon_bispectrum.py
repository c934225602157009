"""The bispectral kernel estimate (calab/cadecon/bispectrum.py) and the default CaDecon path built on it.

Truth comes from two independent generators: a hand-made reversible process (Poisson spikes
through a bi-exponential at the frame rate, Gaussian noise; nothing from calab), and
calab.simulate's bursty Markov populations with frame integration.  Sizes are small for CI;
tools/eval_cadecon.py measures the 10 % criterion at 100 cells x 5 min (docs/cadecon.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import calab
from calab.cadecon import CaDeconWarning, run_cadecon
from calab.cadecon.bispectrum import bispectral_taus
from calab.cadecon.shape import tau_to_shape


def peak_time(tau_rise: float, tau_decay: float) -> float:
    return tau_to_shape(tau_rise, tau_decay)[0]


def poisson_population(tau_rise, tau_decay, fs, cells=40, seconds=240.0, rate_hz=1.0, noise=0.3, seed=0):
    """Poisson spikes (a reversible process) through ``exp(-t/τd) - exp(-t/τr)`` sampled at ``fs``."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * fs)
    t = np.arange(int(8 * tau_decay * fs)) / fs
    kernel = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    kernel /= kernel.max()
    spikes = rng.poisson(rate_hz / fs, size=(cells, frames)).astype(float)
    clean = np.stack([np.convolve(row, kernel)[:frames] for row in spikes])
    return clean + noise * rng.standard_normal(clean.shape)


@pytest.fixture(scope="module")
def gcamp6f_population():
    sim = calab.simulate(calab.presets.gcamp6f(num_cells=40, num_timepoints=3600, seed=3))
    return np.asarray(sim.traces, dtype=np.float64)


@pytest.mark.slow
def test_recovers_a_poisson_population_built_without_calab():
    traces = poisson_population(0.05, 0.4, 30.0)
    found = bispectral_taus(traces, 30.0)
    assert found.reason == "" and found.rise_resolved
    assert found.tau_decay == pytest.approx(0.4, rel=0.1)
    assert peak_time(found.tau_rise, found.tau_decay) == pytest.approx(peak_time(0.05, 0.4), rel=0.1)


@pytest.mark.slow
def test_recovers_a_simulated_bursty_population(gcamp6f_population):
    found = bispectral_taus(gcamp6f_population, 30.0)
    assert found.tau_decay == pytest.approx(0.6, rel=0.1)
    assert peak_time(found.tau_rise, found.tau_decay) == pytest.approx(peak_time(0.1, 0.6), rel=0.1)
    assert found.n_cells_used == 40 and found.decimation == 1 and found.segment_frames == 1024


@pytest.mark.slow
def test_the_rise_comes_from_the_phase_not_the_spectrum():
    """Two populations with the same decay and different rises are told apart."""
    fast = bispectral_taus(poisson_population(0.02, 0.4, 30.0, seed=1), 30.0)
    slow = bispectral_taus(poisson_population(0.12, 0.4, 30.0, seed=1), 30.0)
    assert fast.tau_rise == pytest.approx(0.02, rel=0.35)
    assert slow.tau_rise == pytest.approx(0.12, rel=0.2)


@pytest.mark.slow
def test_time_reversed_traces_carry_no_causal_kernel(gcamp6f_population):
    """Reversal conjugates the bispectrum: no causal kernel explains it, so no estimate."""
    found = bispectral_taus(gcamp6f_population[:, ::-1], 30.0)
    assert math.isnan(found.tau_rise) and found.reason


@pytest.mark.slow
def test_the_estimate_is_deterministic(gcamp6f_population):
    assert bispectral_taus(gcamp6f_population, 30.0) == bispectral_taus(gcamp6f_population, 30.0)


@pytest.mark.slow
def test_per_cell_offset_and_scale_do_not_matter(gcamp6f_population):
    rng = np.random.default_rng(0)
    scaled = gcamp6f_population * rng.uniform(0.1, 10, (40, 1)) + rng.uniform(-100, 100, (40, 1))
    a, b = bispectral_taus(gcamp6f_population, 30.0), bispectral_taus(scaled, 30.0)
    assert b.tau_rise == pytest.approx(a.tau_rise, rel=1e-3) and b.tau_decay == pytest.approx(a.tau_decay, rel=1e-3)


@pytest.mark.slow
def test_ragged_recordings_are_segmented_separately(gcamp6f_population):
    dense = bispectral_taus(gcamp6f_population, 30.0)
    ragged = bispectral_taus([row for row in gcamp6f_population], 30.0)
    assert ragged.tau_rise == pytest.approx(dense.tau_rise, rel=1e-6)
    shorter = bispectral_taus([row[: 2000 + 10 * i] for i, row in enumerate(gcamp6f_population)], 30.0)
    assert shorter.reason == "" and shorter.tau_decay == pytest.approx(0.6, rel=0.2)


@pytest.mark.slow
def test_high_frame_rates_are_averaged_down_first():
    traces = poisson_population(0.03, 0.3, 90.0, cells=30, seconds=150.0, noise=0.3, seed=2)
    found = bispectral_taus(traces, 90.0)
    assert found.decimation == 3
    assert found.tau_decay == pytest.approx(0.3, rel=0.1)
    assert peak_time(found.tau_rise, found.tau_decay) == pytest.approx(peak_time(0.03, 0.3), rel=0.1)


@pytest.mark.parametrize("make", [
    lambda rng: rng.standard_normal((40, 3600)) + 5.0,
    lambda rng: np.cumsum(0.1 * rng.standard_normal((40, 3600)), axis=1) + rng.standard_normal((40, 3600)),
], ids=["white noise", "noise and random-walk drift"])
@pytest.mark.slow
def test_gaussian_data_give_no_estimate(make):
    found = bispectral_taus(make(np.random.default_rng(4)), 30.0)
    assert math.isnan(found.tau_rise) and math.isnan(found.tau_decay)
    assert found.explained < 0.1 and "no third-order signal" in found.reason


def test_too_little_data_gives_no_estimate():
    found = bispectral_taus(np.random.default_rng(0).standard_normal((2, 100)), 30.0)
    assert math.isnan(found.tau_rise) and "segments" in found.reason
    assert found.as_dict()["tau_rise"] is None  # JSON-ready for the result's metadata


@pytest.mark.slow
def test_numpy_and_jax_agree(gcamp6f_population):
    pytest.importorskip("jax")
    from calab.backends import get_backend

    a = bispectral_taus(gcamp6f_population, 30.0, backend=get_backend("numpy"))
    b = bispectral_taus(gcamp6f_population, 30.0, backend=get_backend("jax"))
    assert b.tau_rise == pytest.approx(a.tau_rise, rel=0.02) and b.tau_decay == pytest.approx(a.tau_decay, rel=0.02)


# ---------------------------------------------------------------- the default CaDecon path
@pytest.mark.slow
def test_run_cadecon_default_uses_the_bispectral_kernel_without_refinement(gcamp6f_population):
    result = run_cadecon(gcamp6f_population, 30.0, progress=False, backend="numpy")
    meta = result.metadata
    assert meta["initialization"]["method"] == "bispectrum" and meta["initialization"]["refined"] is False
    assert meta["num_iterations"] == 0 and meta["history"] == []
    # the kernel is final without refinement rounds: not a failure to converge
    assert meta["converged"] is True and meta["converged_at_iteration"] == 0
    found = meta["initialization"]["bispectrum"]
    assert (meta["tau_rise"], meta["tau_decay"]) == (found["tau_rise"], found["tau_decay"])
    assert meta["tau_decay"] == pytest.approx(0.6, rel=0.1)
    assert peak_time(meta["tau_rise"], meta["tau_decay"]) == pytest.approx(peak_time(0.1, 0.6), rel=0.1)
    # the kernel waveform is peak-normalised at the reported taus
    assert result.kernel_slow.max() == pytest.approx(1.0, abs=0.01)
    assert result.activity.shape == gcamp6f_population.shape and result.activity.dtype == np.float32


@pytest.mark.slow
def test_refine_runs_the_loop_from_the_bispectral_start(gcamp6f_population):
    result = run_cadecon(gcamp6f_population, 30.0, progress=False, backend="numpy", refine=True,
                         max_iterations=2, num_subsets=4)
    meta = result.metadata
    assert meta["initialization"]["method"] == "bispectrum" and meta["initialization"]["refined"] is True
    assert 1 <= meta["num_iterations"] <= 2
    # patience 3 cannot be met in 2 rounds: the kernel was still moving when they ran out
    assert meta["converged"] is False and meta["converged_at_iteration"] is None
    assert (meta["start_tau_rise"], meta["start_tau_decay"]) == (
        meta["initialization"]["bispectrum"]["tau_rise"], meta["initialization"]["bispectrum"]["tau_decay"])


@pytest.mark.slow
def test_no_third_order_signal_falls_back_to_the_refined_autocovariance_start():
    rng = np.random.default_rng(5)
    traces = poisson_population(0.05, 0.5, 30.0, cells=12, seconds=120.0, noise=0.3, seed=5)
    traces[:, :] = traces[:, ::-1]  # time-reversed: real kernel-shaped autocovariance, wrong phase
    with pytest.warns(CaDeconWarning, match="bispectral kernel estimate was not usable"):
        result = run_cadecon(traces + 0.01 * rng.standard_normal(traces.shape), 30.0, progress=False,
                             backend="numpy", max_iterations=2, num_subsets=2)
    meta = result.metadata
    assert meta["initialization"]["method"] == "autocovariance" and meta["initialization"]["refined"] is True
    assert meta["initialization"]["bispectrum"]["reason"]
    assert meta["num_iterations"] >= 1


@pytest.mark.slow
def test_the_jackknife_spread_is_small_when_the_rise_is_resolved(gcamp6f_population):
    found = bispectral_taus(gcamp6f_population, 30.0)
    assert 0 < found.peak_time_se < 0.05


@pytest.mark.slow
def test_an_unresolvable_rise_is_flagged_and_warned_about():
    """A 2 ms rise at 30 Hz (a sixteenth of a frame): no data here can measure it."""
    traces = poisson_population(0.002, 0.4, 30.0, cells=20, seconds=120.0, seed=0)
    found = bispectral_taus(traces, 30.0)
    assert not found.rise_resolved or found.peak_time_se > 0.15
    with pytest.warns(CaDeconWarning, match="rise time is (poorly|not) resolved"):
        result = run_cadecon(traces, 30.0, progress=False, backend="numpy")
    assert result.metadata["tau_decay"] == pytest.approx(0.4, rel=0.1)


def _one_neuron(preset: str, fs: float, speed: float, seed: int, minutes: float = 4.0):
    base = getattr(calab.presets, preset)()
    true = (base.kernel.tau_rise_s / speed, base.kernel.tau_decay_s / speed)
    config = getattr(calab.presets, preset)(num_cells=1, num_timepoints=int(minutes * 60 * fs), fs_hz=fs, seed=seed,
                                            kernel={"tau_rise_s": true[0], "tau_decay_s": true[1]})
    return np.asarray(calab.simulate(config).traces, dtype=np.float64), true


def test_one_neurons_four_minutes_give_a_kernel_with_an_uncertainty():
    """A single gcamp6f neuron at 30 Hz: a dozen 34-s segments carry too noisy a phase, so the
    segments are shortened until enough of them fit, and the jackknife runs over runs of segments."""
    traces, true = _one_neuron("gcamp6f", 30.0, 1.0, seed=2)
    found = bispectral_taus(traces, 30.0)
    assert found.reason == "" and found.rise_source == "bispectrum"
    assert found.segment_frames < 1024 and found.n_segments >= 48
    assert found.tau_decay == pytest.approx(true[1], rel=0.15)
    assert peak_time(found.tau_rise, found.tau_decay) == pytest.approx(peak_time(*true), rel=0.15)
    assert 0 < found.peak_time_se < 0.5


def test_populations_keep_the_long_segments(gcamp6f_population):
    assert bispectral_taus(gcamp6f_population, 30.0).segment_frames == 1024


def test_an_unresolved_rise_becomes_half_a_frame_not_the_search_floor():
    """jGCaMP8f twice as fast (rise 25 ms) at 60 Hz, one neuron: analysed at 30 Hz the rise is
    0.75 of a frame and this seed's fit ends at the 1 ms floor; the estimate reports half an
    analysis frame instead, which keeps the peak time within 30 % (the floor: -90 %)."""
    traces, true = _one_neuron("jgcamp8f", 60.0, 2.0, seed=2)
    found = bispectral_taus(traces, 60.0)
    assert not found.rise_resolved and found.fitted_tau_rise < 1.1e-3
    assert found.rise_source == "half a frame" and found.decimation == 2
    assert found.tau_rise == pytest.approx(min(0.5 * 2 / 60.0, found.tau_decay / 6))
    assert peak_time(found.tau_rise, found.tau_decay) == pytest.approx(peak_time(*true), rel=0.3)
    assert found.tau_decay == pytest.approx(true[1], rel=0.15)

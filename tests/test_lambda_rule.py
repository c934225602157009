"""The README's rule of thumb, λ = each cell's noise SD (``calab.noise_sd``), checked on
simulated populations against their true spikes: it is within a few hundredths of the best
multiple of the noise tried, and far better than a λ five times larger."""

from __future__ import annotations

import numpy as np
import pytest

import calab
from calab.demo import score_bin_width, spike_correlation

MULTIPLES = (0.1, 0.3, 1.0, 2.0, 5.0)


def _scores(preset: str, cells: int, frames: int, seed: int) -> dict[float, float]:
    config = getattr(calab.presets, preset)(num_cells=cells, num_timepoints=frames, seed=seed)
    simulation = calab.simulate(config)
    traces = np.asarray(simulation.traces, dtype=np.float64)
    spikes = np.stack([np.asarray(cell.spikes, dtype=np.float64) for cell in simulation.ground_truth])
    tau_rise, tau_decay, fs = config.kernel.tau_rise_s, config.kernel.tau_decay_s, config.fs_hz
    noise = calab.noise_sd(traces)
    scores = {}
    for multiple in MULTIPLES:
        activity = calab.run_deconvolution(traces, fs, tau_rise, tau_decay, multiple * noise, backend="numpy")
        scores[multiple] = float(np.nanmedian(spike_correlation(activity, spikes, score_bin_width(fs))))
    return scores


def test_noise_sd_measures_white_noise():
    rng = np.random.default_rng(0)
    noise = 2.5 * rng.standard_normal((4, 20000))
    slow = np.cumsum(rng.standard_normal((4, 20000)), axis=1) * 0.01  # drift does not count as noise
    assert calab.noise_sd(noise + slow) == pytest.approx(np.full(4, 2.5), rel=0.03)
    assert isinstance(calab.noise_sd(noise[0]), float)


def test_lambda_rule_on_gcamp6f():
    scores = _scores("gcamp6f", cells=16, frames=2400, seed=3)
    assert scores[1.0] >= max(scores.values()) - 0.03, scores
    assert scores[1.0] > scores[5.0] + 0.1, scores


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gcamp6s", "jgcamp8f", "ogb1"])
def test_lambda_rule_on_other_indicators(preset):
    scores = _scores(preset, cells=20, frames=4000, seed=3)
    assert scores[1.0] >= max(scores.values()) - 0.03, scores
    assert scores[1.0] > scores[5.0] + 0.1, scores

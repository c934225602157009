"""run_cadecon's finalisation: the continuous solution alone by default, the InDeCa counts on request.

The per-cell scalars of the default path are checked against their definition (least squares
of the solver's working trace on the kernel's response to the activity), computed here with
independent tools (a direct convolution with ``build_kernel``, ``np.polyfit``), and against
a closed-form case with known amplitude and offset.
"""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

import calab
from calab.cadecon import CaDeconControl, CaDeconWarning, DeconConfig, run_cadecon
from calab.cadecon.loop import _fit_scalars
from calab.kernel import build_kernel

FS, TAU_R, TAU_D = 30.0, 0.1, 0.6
GIVEN = dict(tau_rise=TAU_R, tau_decay=TAU_D, refine=False, progress=False, backend="numpy")


@pytest.fixture(scope="module")
def population():
    sim = calab.simulate(calab.presets.gcamp6f(num_cells=6, num_timepoints=900, seed=3))
    return np.asarray(sim.traces, dtype=np.float64)


@pytest.fixture(scope="module")
def default_result(population):
    return run_cadecon(population, FS, **GIVEN)


def _response(activity: np.ndarray) -> np.ndarray:
    """``K activity`` by direct convolution with the peak-normalised kernel (h[0] = 0)."""
    kernel = build_kernel(TAU_R, TAU_D, FS).astype(np.float64)
    return np.stack([np.convolve(row, kernel)[: row.size] for row in np.asarray(activity, dtype=np.float64)])


def test_fit_scalars_recover_a_known_amplitude_offset_and_pve():
    rng = np.random.default_rng(0)
    activity = (rng.random((3, 1200)) < 0.02).astype(np.float32) * rng.uniform(0.5, 2.0, (3, 1200)).astype(np.float32)
    response = _response(activity)
    drift = np.linspace(0.0, 40.0, 1200)[None, :] + 100.0  # what the solver's rolling baseline removed
    alpha, offset = np.array([2.5, 0.7, 1.0]), np.array([0.3, -1.2, 0.0])
    noise = np.zeros((3, 1200))
    noise[2] = 0.2 * rng.standard_normal(1200)
    traces = alpha[:, None] * response + offset[:, None] + drift + noise
    alphas, baselines, pves = _fit_scalars(traces, activity, response + drift, (TAU_R, TAU_D), FS)
    np.testing.assert_allclose(alphas[:2], alpha[:2], rtol=1e-5)
    np.testing.assert_allclose(baselines[:2], offset[:2], atol=1e-5)
    np.testing.assert_allclose(pves[:2], 1.0, atol=1e-9)
    # the noisy cell: the straight-line fit of the interior, and the signal's share of its variance
    pad = int(np.ceil(2 * TAU_D * FS))
    signal, total = response[2, pad:-pad], (response[2] + noise[2])[pad:-pad]
    slope, intercept = np.polyfit(signal, total, 1)
    expected = 1 - np.sum((total - slope * signal - intercept) ** 2) / np.sum((total - total.mean()) ** 2)
    assert alphas[2] == pytest.approx(slope, rel=1e-5) and baselines[2] == pytest.approx(intercept, abs=1e-5)
    assert pves[2] == pytest.approx(expected, rel=1e-5) and 0.5 < pves[2] < 0.99
    assert slope == pytest.approx(1.0, abs=0.05)


def test_fit_scalars_without_activity_are_zero_amplitude_and_mean_offset():
    traces = np.random.default_rng(1).standard_normal((2, 400)) + 5.0
    zeros = np.zeros((2, 400), dtype=np.float32)
    alphas, baselines, pves = _fit_scalars(traces, zeros, np.zeros((2, 400)), (TAU_R, TAU_D), FS)
    pad = int(np.ceil(2 * TAU_D * FS))
    np.testing.assert_array_equal(alphas, 0.0)
    np.testing.assert_allclose(baselines, traces[:, pad:-pad].mean(axis=1))
    np.testing.assert_array_equal(pves, 0.0)


def test_default_scalars_are_the_least_squares_fit_of_the_continuous_activity(population, default_result):
    result = default_result
    meta = result.metadata
    assert meta["activity_kind"] == "continuous" and meta["counts"] is None
    assert meta["alphas_source"] == "continuous" and meta["finalized"]
    assert result.alphas.dtype == result.baselines.dtype == result.pves.dtype == np.float64
    # independently: the same continuous solve's working trace, the response by direct convolution
    lam = meta["continuous_lambda_per_noise"] * calab.cadecon.initialization.noise_sigma(population)
    full = calab.run_deconvolution_full(population, FS, TAU_R, TAU_D, lam, conv_mode="banded", progress=False)
    np.testing.assert_array_equal(result.activity, full.activity.astype(np.float32))
    response = _response(result.activity)
    work = population - (full.reconvolution - response)
    pad = int(np.ceil(2 * TAU_D * FS))
    for cell in range(population.shape[0]):
        c, w = response[cell, pad:-pad], work[cell, pad:-pad]
        slope, intercept = np.polyfit(c, w, 1)
        pve = 1 - np.sum((w - slope * c - intercept) ** 2) / np.sum((w - w.mean()) ** 2)
        assert result.alphas[cell] == pytest.approx(slope, rel=1e-3)
        assert result.baselines[cell] == pytest.approx(intercept, abs=1e-3 * np.std(w))
        assert result.pves[cell] == pytest.approx(pve, abs=1e-4)
    assert np.all(result.alphas > 0.9) and np.all(result.pves > 0.5)


def test_counts_on_request_leave_the_default_activity_unchanged(population, default_result):
    with_counts = run_cadecon(population, FS, counts=True, **GIVEN)
    as_counts = run_cadecon(population, FS, activity="counts", **GIVEN)
    np.testing.assert_array_equal(with_counts.activity, default_result.activity)
    counts = with_counts.metadata["counts"]
    assert counts.shape == population.shape and counts.dtype == np.float32
    assert np.all(counts == np.round(counts)) and counts.any()
    assert with_counts.metadata["alphas_source"] == as_counts.metadata["alphas_source"] == "counts"
    # the scalars then describe the counts, exactly as with activity="counts" (0.3.0's meaning)
    np.testing.assert_array_equal(as_counts.activity, counts)
    np.testing.assert_array_equal(with_counts.alphas, as_counts.alphas)
    np.testing.assert_array_equal(with_counts.pves, as_counts.pves)
    np.testing.assert_array_equal(as_counts.metadata["continuous_activity"], default_result.activity)


def test_counts_false_contradicts_counts_activity():
    with pytest.raises(pydantic.ValidationError, match="counts"):
        DeconConfig(activity="counts", counts=False)
    assert DeconConfig(counts=False).resolved().solve_counts is False
    assert DeconConfig(activity="counts").resolved().solve_counts is True


def test_continuous_finalisation_reports_progress_and_honours_a_stop(population):
    events = []
    run_cadecon(population, FS, **{**GIVEN, "progress": events.append})
    finals = [e.phase_progress for e in events if e.phase == "finalization"]
    assert finals[0] == 0.0 and finals[-1] == 1.0 and finals == sorted(finals)
    control = CaDeconControl()

    def stop_early(event):
        if event.phase == "finalization":
            control.stop(finalize=False)

    with pytest.warns(CaDeconWarning, match="stopped before any cell was solved"):
        stopped = run_cadecon(population, FS, **{**GIVEN, "progress": stop_early}, control=control)
    assert stopped.metadata["stopped"] and not stopped.metadata["finalized"]
    assert stopped.metadata["alphas_source"] == "subsets"

"""Closed-form checks of the host kernel maths and the band-pass gain."""

from __future__ import annotations

import math

import numpy as np
import pytest

import calab
from calab.filters import bandpass_gain, rolling_rank
from calab.kernel import (
    ar2_coefficients,
    ar2_impulse_peak,
    ar2_lipschitz,
    baseline_window,
    format_number,
    round_half_away,
)


@pytest.mark.parametrize(
    ("tau_rise", "tau_decay", "fs", "length", "total", "argmax"),
    [  # spec numerics.md §3.1, measured on calab 0.3.0
        (0.02, 0.4, 30, 166, 13.9047451, 2),
        (0.04, 0.4, 30, 166, 15.4127089, 3),
        (0.015, 0.15, 100, 208, 19.312931, 4),
        (0.05, 1.0, 20, 277, 23.3341745, 3),
        (0.001, 2.0, 100, 2764, 200.509319, 1),
    ],
)
def test_build_kernel_matches_the_double_exponential(tau_rise, tau_decay, fs, length, total, argmax):
    kernel = calab.build_kernel(tau_rise, tau_decay, fs)
    assert kernel.dtype == np.float32 and kernel.shape == (length,)
    t = np.arange(length) / fs
    shape = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    np.testing.assert_allclose(kernel, shape / shape.max(), rtol=1e-6, atol=1e-7)
    assert kernel[0] == 0.0 and kernel.max() == 1.0 and int(np.argmax(kernel)) == argmax
    assert math.isclose(kernel.astype(np.float64).sum(), total, rel_tol=1e-7)


def test_build_kernel_near_equal_time_constants_use_half_the_decay():
    np.testing.assert_array_equal(
        calab.build_kernel(0.4 * (1 - 1e-7), 0.4, 30), calab.build_kernel(0.2, 0.4, 30)
    )
    np.testing.assert_array_equal(calab.build_kernel(0.001, 0.002, 30), np.array([0, 1], np.float32))


def test_lipschitz_is_the_peak_of_the_power_spectrum():
    kernel = calab.build_kernel(0.02, 0.4, 30)
    spectrum = np.abs(np.fft.rfft(kernel.astype(np.float64), 1 << 16)) ** 2
    assert math.isclose(calab.compute_lipschitz(kernel), spectrum.max(), rel_tol=1e-9)
    assert math.isclose(calab.compute_lipschitz(kernel), 193.34193666, rel_tol=1e-9)
    assert calab.compute_lipschitz([3.0]) == 9.0
    assert math.isclose(calab.compute_lipschitz([1, -1, 1, -1]), 16.0, rel_tol=1e-12)


@pytest.mark.parametrize("bad", [[], [1.0, np.nan]])
def test_lipschitz_rejects_empty_and_non_finite_kernels(bad):
    with pytest.raises(ValueError, match="kernel"):
        calab.compute_lipschitz(bad)


def test_tau_to_ar2_matches_the_reference_values():
    assert calab.tau_to_ar2(0.02, 0.4, 30) == pytest.approx(
        (1.1089200174668852, -0.17377394345044514, 0.9200444146293233, 0.18887560283756186), abs=0, rel=1e-15
    )


def test_banded_operator_constants_match_the_spec_table():
    for (tau_rise, tau_decay, fs), peak, lipschitz in [
        ((0.02, 0.4, 30), 1.10892001747, 193.342357843),
        ((0.04, 0.4, 30), 1.43520698207, 237.552140586),
        ((0.015, 0.15, 100), 1.64999196437, 372.990122067),
    ]:
        g1, g2 = ar2_coefficients(tau_rise, tau_decay, fs)
        got_peak = ar2_impulse_peak(g1, g2, tau_decay, fs)
        assert got_peak == pytest.approx(peak, rel=1e-10)
        assert ar2_lipschitz(g1, g2, got_peak) == pytest.approx(lipschitz, rel=1e-10)
        d, r = math.exp(-1 / (fs * tau_decay)), math.exp(-1 / (fs * tau_rise))
        # real positive roots: the maximum is the squared DC gain of the normalised IIR
        assert ar2_lipschitz(g1, g2, got_peak) == pytest.approx(1 / ((1 - d) * (1 - r) * got_peak) ** 2, rel=1e-12)


@pytest.mark.parametrize(
    ("fs", "target", "factor"), [(30, 300, 10), (30, 100, 3), (30, 15, 1), (30, 45, 2), (20, 50, 3), (30, 75, 3)]
)
def test_upsample_factor_rounds_half_away_from_zero(fs, target, factor):
    assert calab.compute_upsample_factor(fs, target) == factor


@pytest.mark.parametrize(("fs", "target", "word"), [(0, 30, "fs"), (30, -1, "target_fs"), (30, np.inf, "target_fs"), (1e-9, 1e9, "upsample")])
def test_upsample_factor_rejects_bad_rates(fs, target, word):
    with pytest.raises(ValueError, match=word):
        calab.compute_upsample_factor(fs, target)


def test_helpers_round_and_format_like_the_reference():
    assert [round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5)] == [1, 2, 3, -1]
    assert [format_number(v) for v in (30.0, -0.02, float("nan"), float("inf"), 1e-7, 30000000.0)] == [
        "30", "-0.02", "NaN", "inf", "0.0000001", "30000000",
    ]
    assert [baseline_window(*args) for args in [(0.4, 30), (0.15, 100), (1.0, 20), (0.4, 100), (0.01, 1)]] == [
        300, 375, 500, 1000, 5,
    ]
    assert rolling_rank(300) == 60 and rolling_rank(5) == 1


def test_bandpass_gain_shape_follows_the_cutoffs():
    gain = bandpass_gain(1000, 0.02, 0.4, 30.0)
    assert gain.dtype == np.float32 and gain.shape == (501,)
    assert gain[0] == 0.0  # DC removed by the high-pass
    assert gain[1] == pytest.approx(0.8019, abs=1e-4)
    assert np.all(gain[2:250] == 1.0)  # pass band up to fs/4 (the clamped low-pass taper starts there)
    assert gain[-1] == pytest.approx(0.5, abs=1e-6)  # Nyquist clamp quirk of the reference
    assert bandpass_gain(7, 0.02, 0.4, 30.0) is None
    assert bandpass_gain(1000, 0.02, 0.4, 0.04) is None  # cutoffs cross: filter skipped


def test_ar2_impulse_response_reproduces_the_banded_recursion():
    from calab.backends import get_backend
    from calab.kernel import ar2_impulse_response

    g1, g2 = ar2_coefficients(0.1, 0.6, 30.0)
    gain = 1.0 / ar2_impulse_peak(g1, g2, 0.6, 30.0)
    coefficients = (np.float32(g1), np.float32(g2), np.float32(gain))
    response = ar2_impulse_response(*(float(c) for c in coefficients), max_length=5000)
    assert response[0] == 0.0 and response.max() == pytest.approx(1.0, abs=1e-6)
    assert 300 < response.size < 1000  # cut once it decayed below 1e-9 of its peak
    activity = np.random.default_rng(0).random((2, 3000)).astype(np.float32)
    recursion = get_backend("numpy").ar2_forward(activity, *coefficients)
    convolution = np.array([np.convolve(row, response.astype(np.float64))[:3000] for row in activity])
    np.testing.assert_allclose(convolution, recursion, rtol=0, atol=2e-5 * np.abs(recursion).max())
    assert ar2_impulse_response(*(float(c) for c in coefficients), max_length=7).size == 7

"""Unit checks of the InDeCa helpers against closed forms and the spec's worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

import calab
from calab.indeca._chain import candidate_values
from calab.indeca.filtering import filter_gain, probe_signal
from calab.indeca.resample import average_downsample, binary_to_counts, counts_to_binary, upsample_traces
from calab.indeca.threshold import least_squares


def test_upsample_linear_and_held_tail():
    x = np.array([[0.0, 1.0, 3.0]], dtype=np.float32)
    out = upsample_traces(np, x, 4)
    np.testing.assert_allclose(out[0], [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3, 3, 3])
    assert out.dtype == np.float32


def test_counts_binary_round_trip_spec_rules():
    counts = np.array([[0.0, 2.0, 0.0, 3.0, -1.0, 12.0]])
    binary = counts_to_binary(counts, 4, 24)
    # m = min(round(c), u) ones starting at i*u - floor(m/2)
    expected = np.zeros(24)
    expected[3:5] = 1  # i=1, m=2: start 4-1
    expected[11:14] = 1  # i=3, m=3: start 12-1
    expected[18:22] = 1  # i=5, m=4 (capped): start 20-2
    np.testing.assert_array_equal(binary[0], expected)
    # centred bins of width u (first narrower, last h samples uncounted)
    back = binary_to_counts(np, binary, 4)[0]
    cumulative = np.concatenate([[0], np.cumsum(expected)])
    manual = [cumulative[min(i * 4 + 2, 24)] - cumulative[max(0, i * 4 - 2)] for i in range(6)]
    np.testing.assert_array_equal(back, manual)
    assert counts_to_binary(np.array([[0.4, 0.6]]), 1, 2).tolist() == [[0.0, 1.0]]


def test_average_downsample_block_means():
    x = np.arange(10, dtype=np.float32)[None, :]
    np.testing.assert_allclose(average_downsample(np, x, 3)[0], [1, 4, 7])


def test_filter_cutoffs_from_spec_example():
    # τr = 0.1, τd = 0.6, fs_up = 300: f_hp = 0.01658 Hz, f_lp = 6.366 Hz
    n = 300 * 600  # 0.001667 Hz bins
    gain = filter_gain(n, 0.1, 0.6, 300.0, True, True).astype(np.float64)
    freq = np.arange(gain.size) * 300.0 / n
    f_hp, f_lp = 1 / (2 * math.pi * 0.6 * 16), 4 / (2 * math.pi * 0.1)
    assert f_hp == pytest.approx(0.01658, abs=1e-5) and f_lp == pytest.approx(6.366, abs=1e-3)
    assert np.all(gain[freq < 0.5 * f_hp] == 0)
    assert np.allclose(gain[(freq >= 1.5 * f_hp) & (freq < 0.5 * f_lp)], 1.0)
    assert np.all(gain[freq >= 1.5 * f_lp] == 0)
    assert filter_gain(n, 0.1, 0.6, 300.0, False, False) is None
    assert filter_gain(7, 0.1, 0.6, 300.0, True, True) is None


def test_probe_lcg_first_values():
    state = 0x9E3779B97F4A7C15
    expected = []
    for _ in range(3000):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        expected.append((state >> 33) / 2.0**31 - 1.0)
    np.testing.assert_array_equal(probe_signal(3000), np.asarray(expected, dtype=np.float32))


def test_chain_dedup_keeps_relative_to_last_kept():
    values = np.array([[5e-11, 1e-9, 1.05e-9, 1.1e-9, 1.15e-9, 1.2e-9, 0.5]], dtype=np.float32)
    kept, count = candidate_values(values)
    # 5e-11 is no candidate; among the 1e-9 cluster an entry is dropped when it lies within
    # 1e-10 of the last *kept* one (not of its neighbour): compare with the rule in Python
    chain = []
    for v in sorted(float(x) for x in values[0] if x > 1e-10):
        if not chain or not abs(v - chain[-1]) < 1e-10:
            chain.append(v)
    assert count[0] == len(chain)
    np.testing.assert_array_equal(kept[0, : count[0]], np.asarray(chain))


def test_least_squares_rules():
    # exact line y = 2c + 1 over N = 4 samples
    c = np.array([0.0, 1.0, 2.0, 3.0])
    y = 2 * c + 1
    a, b = least_squares(c.sum(), y.sum(), (c * c).sum(), (c * y).sum(), 4)
    assert a == pytest.approx(2.0) and b == pytest.approx(1.0)
    a, b = least_squares(c.sum(), (-y).sum(), (c * c).sum(), (c * -y).sum(), 4)  # negative slope -> (0, mean)
    assert a == 0.0 and b == pytest.approx(-y.mean())
    a, b = least_squares(0.0, 8.0, 0.0, 0.0, 4)  # flat model -> (0, mean)
    assert a == 0.0 and b == 2.0


def test_zero_trace_edge_case():
    result = calab.solve_trace(np.zeros(5), 0.1, 0.6, 30.0)
    assert result.alpha == 0.0 and result.pve == 0.0 and not result.s_counts.any()


def test_warm_counts_list_with_none_and_wrong_length_ignored():
    rng = np.random.default_rng(0)
    traces = [rng.normal(size=200), rng.normal(size=150)]
    cold = calab.solve_traces(traces, 0.1, 0.6, 30.0)
    warm = calab.solve_traces(traces, 0.1, 0.6, 30.0, warm_counts=[None, np.ones(7)])
    for a, b in zip(cold.s_counts, warm.s_counts):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cold.iterations, warm.iterations)


def test_seed_traces_closed_form():
    x = np.zeros(400, dtype=np.float32)
    x[100:105] = [2, 6, 10, 6, 2]  # peak at 102, onset where x <= 10 % of the peak: 99
    x[110] = 9.0  # within round(5 fs) = 150 samples of the bigger peak: dropped
    x[300:303] = [4, 8, 4]  # second peak at 301, onset 299
    x += np.tile(np.array([0.0, 0.01], dtype=np.float32), 200)  # non-zero MAD
    result = calab.seed_traces(x[None, :], 30.0)
    assert np.flatnonzero(result.s_counts[0]).tolist() == [99, 299]
    assert result.alpha.tolist() == [1.0]


def test_memory_bounded_row_blocks_do_not_change_results(monkeypatch):
    import calab.indeca.solve as solve_module

    rng = np.random.default_rng(1)
    traces = rng.normal(size=(5, 300)) + np.cumsum(rng.random((5, 300)) < 0.05, axis=1) * 0.1
    kwargs = dict(tau_rise=0.1, tau_decay=0.6, fs=30.0, upsample_factor=4, hp_enabled=True, lp_enabled=True)
    whole = calab.solve_traces(traces, **kwargs, backend="numpy")
    monkeypatch.setattr(solve_module, "BLOCK_BUDGET", 300 * 4 * solve_module.BYTES_PER_SAMPLE * 2)  # 2 rows/block
    assert len(solve_module._row_blocks(calab.backends.get_backend("numpy"), 5, 1200)) == 3
    chunked = calab.solve_traces(traces, **kwargs, backend="numpy")
    np.testing.assert_array_equal(whole.s_counts, chunked.s_counts)
    np.testing.assert_array_equal(whole.alpha, chunked.alpha)
    np.testing.assert_array_equal(whole.filtered_trace, chunked.filtered_trace)


def test_private_keep_up_returns_the_binary_train_behind_the_counts():
    """The study hook (tools/cadecon_update_study.py) returns the train the counts come from."""
    from calab.backends import get_backend
    from calab.indeca.solve import _solve_block

    sim = calab.simulate(calab.presets.gcamp6f(num_cells=3, num_timepoints=600, seed=3))
    raw = np.asarray(sim.traces, dtype=np.float64)
    params = dict(tau_rise=0.1, tau_decay=0.6, fs=30.0, factor=3, max_iters=200, tol=1e-4, lambda_=0.0,
                  hp=True, lp=True, noise_constrained=True)
    plain = _solve_block(get_backend("numpy"), raw, None, params)
    kept = _solve_block(get_backend("numpy"), raw, None, {**params, "keep_up": True})
    assert "s_binary" not in plain
    assert kept["s_binary"].shape == kept["work_up"].shape == (3, 1800)
    assert kept["s_binary"].sum() > 0
    np.testing.assert_array_equal(binary_to_counts(np, kept["s_binary"], 3), kept["s_counts"])
    np.testing.assert_array_equal(plain["s_counts"], kept["s_counts"])


def test_compiled_threshold_evaluation_matches_its_definition():
    # The compiled candidate evaluation (16 candidates per SIMD vector) against the
    # definition written out with NumPy: spike train, the float32 AR(2) recursion of the
    # row kernels, float64 sums in sample order, the least-squares fit and the closed-form
    # SSE (over the interior, or over the noise grid).
    from calab.backends.cpu import _kernels
    from calab.indeca._compiled import _fit, threshold_sse

    if threshold_sse is None or not _kernels.HAVE_NUMBA:
        pytest.skip("needs Numba")
    rng = np.random.default_rng(7)
    rows, n, lo, hi, stride = 2, 400, 30, 370, 4
    xhat = (rng.random((rows, n)) ** 6).astype(np.float32)
    target = rng.standard_normal((rows, n)).astype(np.float32)
    thetas = np.sort(rng.random((rows, 21)), axis=1).astype(np.float32)
    thetas[0, 3] = np.inf  # an absent candidate
    g1, g2, gain = np.float32(1.8), np.float32(-0.81), np.float32(0.1)

    def sequential(values):
        return float(np.add.accumulate(values)[-1]) if values.size else 0.0

    for noise_mode in (False, True):
        alpha, base, sse = (np.zeros(thetas.shape) for _ in range(3))
        threshold_sse(xhat, target, thetas, g1, g2, gain, lo, hi, lo, stride, noise_mode, alpha, base, sse)
        for b in range(rows):
            y = target[b].astype(np.float64)
            for j, theta in enumerate(thetas[b]):
                if not np.isfinite(theta):
                    assert (alpha[b, j], base[b, j], sse[b, j]) == (0.0, 0.0, np.inf)
                    continue
                model = np.empty((1, n), np.float32)
                _kernels.ar2_forward((xhat[b : b + 1] >= theta).astype(np.float32), g1, g2, gain, model)
                c = model[0].astype(np.float64)
                sums = [sequential(v) for v in (c[lo:hi], c[lo:hi] ** 2, c[lo:hi] * y[lo:hi])]
                a, c0 = _fit(sums[0], sums[1], sums[2], sequential(y[lo:hi]), hi - lo)
                grid = np.arange(lo, n - lo, stride) if noise_mode else np.arange(lo, hi)
                s = [sequential(v) for v in (c[grid], c[grid] ** 2, c[grid] * y[grid], y[grid], y[grid] ** 2)]
                expected = s[4] - 2 * a * s[2] - 2 * c0 * s[3] + a * a * s[1] + 2 * a * c0 * s[0] + c0 * c0 * grid.size
                assert alpha[b, j] == a and base[b, j] == c0
                assert sse[b, j] == pytest.approx(max(expected, 0.0), rel=1e-12, abs=1e-12)


def test_refinement_keeps_the_unmoved_component_bit_for_bit():
    """The golden-section step reuses the component whose taus do not move; what it hands
    to the fit must equal a fresh evaluation at the trial taus, bit for bit."""
    from calab.indeca import biexp

    rng = np.random.default_rng(5)
    times = np.arange(240) / 100.0
    h = rng.standard_normal((8, times.size))
    taus = np.array([[0.02, 0.4, 0.0, 0.0], [0.05, 0.9, 0.004, 0.03], [0.01, 0.2, 0.003, 0.02],
                     [0.03, 0.6, 0.0, 0.0], [0.04, 0.5, 0.005, 0.04], [0.02, 0.3, 0.002, 0.01],
                     [0.06, 1.2, 0.0, 0.0], [0.01, 0.25, 0.004, 0.05]])
    for phase in (np.array([0, 1, 2, 1, 3, 0, 1, 2]), np.full(8, 1), np.full(8, 2)):
        fixed = biexp._decays(times, taus)
        slow = biexp._MovingComponent(h, taus, fixed, phase, (0, 1))
        fast = biexp._MovingComponent(h, taus, fixed, phase, (2, 3))
        for _ in range(2):  # the second bracket point reuses the gathered kept rows
            trial = taus.copy()
            points = taus[np.arange(8), phase] * rng.uniform(0.7, 1.3, 8)
            trial[np.arange(8), phase] = points
            moving = np.exp(-times / points[:, None])
            fresh = biexp._decays(times, trial)
            everyone = np.arange(8)
            for got, want in zip(slow.of(everyone, trial, moving),
                                 biexp._component(h, trial, fresh[0], fresh[1], (0, 1))):
                assert np.array_equal(got, want)
            rows = np.flatnonzero(trial[:, 2] > 0)
            for got, want in zip(fast.of(rows, trial, moving),
                                 biexp._component(h[rows], trial[rows], fresh[2][rows], fresh[3][rows], (2, 3))):
                assert np.array_equal(got, want)

"""The segmented AR(2) recursions (calab.engine.segments) and their CPU kernels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from calab.backends import get_backend
from calab.backends.cpu import _kernels
from calab.engine import AR2, Problem, StoppingRule, solve_block
from calab.engine.fista import plan_for_problem
from calab.engine.segments import (
    from_segments,
    segment_plan,
    segmented_adjoint_of_difference,
    segmented_forward,
    to_segments,
)

OPERATOR = AR2.from_taus(0.1, 0.6, 300.0)  # InDeCa's operator at u = 10, 30 Hz
G1, G2, GAIN = OPERATOR.coefficients32


def _sequential_forward(batch):
    """The recursion in the reference's float32 order (compiled, or a loop over time)."""
    out = np.empty_like(batch)
    if _kernels.HAVE_NUMBA:
        _kernels.ar2_forward(np.ascontiguousarray(batch), G1, G2, GAIN, out)
        return out
    out[:, 0] = 0.0
    a = np.zeros(batch.shape[0], dtype=np.float32)
    b = np.zeros_like(a)
    for t in range(1, batch.shape[1]):
        a, b = (G1 * a + G2 * b) + batch[:, t - 1] * GAIN, a
        out[:, t] = a
    return out


def _truth_forward(batch):
    return lfilter([0.0, float(GAIN)], [1.0, -float(G1), -float(G2)], batch.astype(np.float64), axis=-1)


def _truth_adjoint(residual):
    full = lfilter([0.0, float(GAIN)], [1.0, -float(G1), -float(G2)], residual.astype(np.float64)[:, ::-1], axis=-1)
    return full[:, ::-1]


def _data(rows, n, seed=0):
    rng = np.random.default_rng(seed)
    spikes = ((rng.random((rows, n)) < 0.02) * rng.random((rows, n))).astype(np.float32)
    noise = rng.standard_normal((rows, n)).astype(np.float32)
    return spikes, noise


def test_short_rows_keep_the_sequential_recursion():
    assert segment_plan(G1, G2, GAIN, 100, 128) is None
    assert segment_plan(G1, G2, GAIN, 128 * 64, 1) is None
    plan = segment_plan(G1, G2, GAIN, 128 * 64 + 1, 128)
    assert plan.length == 65 and plan.padded == 128 * 65


@pytest.mark.parametrize("n", [16 * 64, 9001])
def test_layout_round_trip(n):
    spikes, _ = _data(2, n)
    plan = segment_plan(G1, G2, GAIN, n, 16)
    moved = to_segments(np, spikes, plan)
    assert moved.shape == (2, plan.padded)
    # element t·S + g is sample g·M + t
    assert moved[1, 3 * 16 + 2] == spikes[1, 2 * plan.length + 3]
    np.testing.assert_array_equal(from_segments(np, moved, plan), spikes)


@pytest.mark.parametrize("n", [16 * 64, 9001])
def test_generic_operator_matches_the_recursion(n):
    spikes, noise = _data(3, n)
    plan = segment_plan(G1, G2, GAIN, n, 16)
    forward = segmented_forward(np, to_segments(np, spikes, plan), plan)
    got = from_segments(np, forward, plan)
    truth = _truth_forward(spikes)
    sequential = _sequential_forward(spikes)
    scale = np.abs(truth).max()
    # the rounding is of the same order as the sequential recursion's own
    assert np.abs(got - truth).max() <= 4 * max(np.abs(sequential - truth).max(), 1e-6 * scale)
    # segment 0 is the sequential recursion itself, bit for bit
    np.testing.assert_array_equal(got[:, : plan.length], sequential[:, : plan.length])
    # padding comes out as zero
    assert not np.any(forward.reshape(3, plan.length, 16).transpose(0, 2, 1).reshape(3, -1)[:, n:])

    adjoint = segmented_adjoint_of_difference(
        np, to_segments(np, sequential, plan), to_segments(np, noise, plan), plan
    )
    got_adjoint = from_segments(np, adjoint, plan)
    # output t is a_{t+1}: the residual's first sample never reaches the output
    expected = _truth_adjoint(sequential.astype(np.float64) - noise)
    backend = get_backend("numpy")
    sequential_adjoint = backend.ar2_adjoint_of_difference(sequential, noise, G1, G2, GAIN)
    sequential_error = np.abs(sequential_adjoint - expected).max()
    assert np.abs(got_adjoint - expected).max() <= 4 * max(sequential_error, 1e-6 * np.abs(expected).max())
    assert np.all(got_adjoint[:, -1] == 0.0)


def test_adjoint_is_the_transpose():
    n = 16 * 70 + 5
    spikes, noise = _data(2, n, seed=3)
    plan = segment_plan(G1, G2, GAIN, n, 16)
    s, r = to_segments(np, spikes, plan), to_segments(np, noise, plan)
    forward = segmented_forward(np, s, plan).astype(np.float64)
    adjoint = segmented_adjoint_of_difference(np, r, np.zeros_like(r), plan).astype(np.float64)
    lhs = np.sum(forward * r, axis=1)
    rhs = np.sum(s.astype(np.float64) * adjoint, axis=1)
    bound = 1e-5 * np.linalg.norm(forward, axis=1) * np.linalg.norm(r, axis=1)
    assert np.all(np.abs(lhs - rhs) <= bound)


@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="Numba kernels")
@pytest.mark.parametrize("n", [128 * 64 + 1, 90000])
def test_compiled_kernels_equal_the_generic_version(n):
    backend = get_backend("numpy")
    assert backend.ar2_segment_lanes == _kernels.SEGMENT_LANES
    spikes, noise = _data(3, n, seed=5)
    plan = segment_plan(G1, G2, GAIN, n, backend.ar2_segment_lanes)
    s, d = to_segments(np, spikes, plan), to_segments(np, noise, plan)
    generic = segmented_forward(np, s, plan)
    compiled = backend.ar2_segment_forward(s, plan)
    np.testing.assert_array_equal(compiled, generic)
    np.testing.assert_array_equal(
        backend.ar2_segment_adjoint_of_difference(compiled, d, plan),
        segmented_adjoint_of_difference(np, compiled, d, plan),
    )


def _problem(reference_rounding):
    return Problem(OPERATOR, StoppingRule.indeca(100, 1e-4), constraint="box01", reference_rounding=reference_rounding)


def test_only_problems_that_allow_it_are_segmented():
    backend = get_backend("numpy")
    assert plan_for_problem(backend, _problem(True), 90000).segments is None
    expected = backend.ar2_segment_lanes > 1
    assert (plan_for_problem(backend, _problem(False), 90000).segments is not None) == expected
    assert plan_for_problem(backend, _problem(False), 900).segments is None  # too short
    assert _problem(True).key != _problem(False).key


def _traces(rows, n, seed=0):
    spikes, noise = _data(rows, n, seed)
    spikes = (spikes > 0.9).astype(np.float32)
    return (_sequential_forward(spikes) + 0.05 * noise).astype(np.float32)


def test_segmented_solve_matches_the_sequential_one():
    traces = _traces(3, 128 * 80 + 7)
    sequential = solve_block(_problem(True), traces, lam=0.0, backend="numpy", reconvolution=False)
    segmented = solve_block(_problem(False), traces, lam=0.0, backend="numpy", reconvolution=False)
    a, b = np.asarray(sequential.activity), np.asarray(segmented.activity)
    assert a.shape == b.shape == traces.shape
    assert np.abs(a - b).max() < 1e-3
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99999


def test_segmented_solve_is_batch_invariant():
    traces = _traces(4, 128 * 80 + 7, seed=2)
    batch = solve_block(_problem(False), traces, lam=0.0, backend="numpy", reconvolution=False)
    alone = solve_block(_problem(False), traces[2:3], lam=0.0, backend="numpy", reconvolution=False)
    np.testing.assert_array_equal(np.asarray(alone.activity)[0], np.asarray(batch.activity)[2])
    assert alone.iterations[0] == batch.iterations[2]


# ----------------------------------------------------------------- sequential group kernels
@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="Numba kernels")
def test_row_groups_are_balanced_and_bounded():
    for rows in range(0, 45):
        groups = _kernels.row_groups(rows)
        assert sum(stop - first for first, stop in groups) == rows
        assert all(stop - first <= _kernels.GROUP_MAX for first, stop in groups)
        sizes = [stop - first for first, stop in groups]
        assert not sizes or max(sizes) - min(sizes) <= 1


@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="Numba kernels")
def test_sequential_kernels_do_not_depend_on_the_group():
    """Every row gets the same arithmetic whatever group size it runs in."""
    spikes, noise = _data(23, 700, seed=7)
    forward = _sequential_forward(spikes)
    adjoint = np.empty_like(spikes)
    _kernels.ar2_adjoint_residual(forward, noise, G1, G2, GAIN, adjoint)
    for rows in (1, 3, 4, 7, 10, 11, 20):
        part_forward = _sequential_forward(spikes[:rows].copy())
        part_adjoint = np.empty_like(part_forward)
        _kernels.ar2_adjoint_residual(forward[:rows].copy(), noise[:rows].copy(), G1, G2, GAIN, part_adjoint)
        np.testing.assert_array_equal(part_forward, forward[:rows])
        np.testing.assert_array_equal(part_adjoint, adjoint[:rows])
    # the recursion itself, row 0 alone, written out
    expected = np.zeros(700, dtype=np.float32)
    a = b = np.float32(0.0)
    for t in range(1, 700):
        v = (G1 * a + G2 * b) + spikes[0, t - 1] * GAIN
        expected[t] = v
        a, b = v, a
    np.testing.assert_array_equal(forward[0], expected)


@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="Numba kernels")
@pytest.mark.parametrize("box", [True, False])
def test_fused_proximal_pass_equals_the_two_passes(box):
    rng = np.random.default_rng(11)
    rows, n = 7, 5003
    x = rng.random((rows, n)).astype(np.float32)
    y = rng.random((rows, n)).astype(np.float32)
    gradient = rng.standard_normal((rows, n)).astype(np.float32)
    threshold = rng.random(rows).astype(np.float32) * np.float32(0.1)
    momentum = rng.random(rows).astype(np.float32)
    step = np.float32(0.37)
    x1, y1, x2, y2 = (np.empty_like(x) for _ in range(4))
    sums1 = [np.empty(rows) for _ in range(3)]
    sums2 = [np.empty(rows) for _ in range(3)]
    _kernels.proximal_pass(x, y, gradient, step, threshold, momentum, box, x1, y1)
    _kernels.accumulate(x, y, x1, *sums1)
    _kernels.proximal_accumulate(x, y, gradient, step, threshold, momentum, box, x2, y2, *sums2)
    np.testing.assert_array_equal(x2, x1)  # the float32 part keeps its exact order
    np.testing.assert_array_equal(y2, y1)
    for a, b in zip(sums1, sums2):
        np.testing.assert_allclose(b, a, rtol=1e-12)

"""InDeCa's scale rounds as a pipeline over the CPU's cores (calab.backends.cpu).

The pipeline changes only when and beside which other cells a cell's round runs; each
cell's numbers must stay bit for bit those of the one-batch-per-round schedule.
"""

from __future__ import annotations

import numpy as np
import pytest

import calab
from calab.backends.cpu import NumpyBackend, _kernels
from calab.indeca import solve as solve_module

pytestmark = pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="the pipeline runs the compiled lane kernels")


def _traces(cells: int, frames: int, seed: int) -> np.ndarray:
    return np.asarray(calab.simulate(num_cells=cells, num_timepoints=frames, fs_hz=30.0, seed=seed).traces,
                      dtype=np.float64)


def _solve(traces, *, pipeline: bool, monkeypatch, **settings):
    with monkeypatch.context() as patch:
        if not pipeline:
            patch.setattr(NumpyBackend, "scale_round_pipeline", lambda self, n_cells: None)
        return calab.solve_traces(traces, 0.1, 0.6, 30.0, backend="numpy", **settings)


def _assert_identical(first, second) -> None:
    for name, value in first._asdict().items():
        other = getattr(second, name)
        if isinstance(value, list):
            assert all(np.array_equal(a, b) for a, b in zip(value, other)), name
        else:
            assert np.array_equal(np.asarray(value), np.asarray(other)), name


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(NumpyBackend, "__init__", _with_workers(NumpyBackend.__init__, 2))


def _with_workers(init, workers):
    def patched(self):
        init(self)
        self.workers = workers
        self._pool = None

    return patched


@pytest.mark.parametrize("settings", [
    dict(upsample_factor=4, hp_enabled=True, lp_enabled=True, noise_constrained=True),
    dict(upsample_factor=2, noise_constrained=False),
])
def test_pipelined_rounds_equal_one_batch_per_round(settings, monkeypatch, two_workers):
    traces = _traces(11, 900, seed=4)
    groups = []
    original = NumpyBackend._run_scale_rounds

    def spy(self, scale_round, n_cells, max_rounds):
        def counted(cells, first):
            groups.append((cells.copy(), first.copy()))
            return scale_round(cells, first)

        return original(self, counted, n_cells, max_rounds)

    monkeypatch.setattr(NumpyBackend, "_run_scale_rounds", spy)
    piped = _solve(traces, pipeline=True, monkeypatch=monkeypatch, **settings)
    assert groups, "the pipeline did not run"
    assert max(len(cells) for cells, _ in groups) <= 8
    # a cell's rounds run in sequence: its first round is its first group
    seen: set[int] = set()
    for cells, first in groups:
        for cell, is_first in zip(cells.tolist(), first.tolist()):
            assert is_first == (cell not in seen)
            seen.add(cell)
    assert seen == set(range(11))
    _assert_identical(piped, _solve(traces, pipeline=False, monkeypatch=monkeypatch, **settings))


def test_pipelined_rounds_keep_a_warm_start_to_the_first_round(monkeypatch, two_workers):
    traces = _traces(10, 600, seed=7)
    settings = dict(upsample_factor=3, noise_constrained=True)
    first = _solve(traces, pipeline=False, monkeypatch=monkeypatch, **settings)
    warm = np.asarray(first.s_counts)
    warm[::2] = 0.0
    piped = _solve(traces, pipeline=True, monkeypatch=monkeypatch, warm_counts=warm, **settings)
    _assert_identical(piped, _solve(traces, pipeline=False, monkeypatch=monkeypatch, warm_counts=warm, **settings))


def test_a_failing_round_stops_the_pipeline_with_its_error(monkeypatch, two_workers):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("threshold search failed")
        return original(*args, **kwargs)

    original = solve_module.search_thresholds
    monkeypatch.setattr(solve_module, "search_thresholds", failing)
    with pytest.raises(RuntimeError, match="threshold search failed"):
        calab.solve_traces(_traces(12, 300, seed=1), 0.1, 0.6, 30.0, upsample_factor=2, backend="numpy")


def test_the_pipeline_is_only_for_more_cells_than_a_lane_block(two_workers):
    backend = NumpyBackend()
    assert backend.scale_round_pipeline(8) is None
    assert backend.scale_round_pipeline(9) is not None
    backend.workers = 1
    assert backend.scale_round_pipeline(100) is None


def test_pipelined_rounds_stop_at_the_round_cap(monkeypatch, two_workers):
    traces = _traces(10, 600, seed=9)
    monkeypatch.setattr(solve_module, "MAX_SCALE_ROUNDS", 1)
    settings = dict(upsample_factor=2, noise_constrained=True)
    _assert_identical(_solve(traces, pipeline=True, monkeypatch=monkeypatch, **settings),
                      _solve(traces, pipeline=False, monkeypatch=monkeypatch, **settings))
    monkeypatch.setattr(solve_module, "MAX_SCALE_ROUNDS", 2)
    _assert_identical(_solve(traces, pipeline=True, monkeypatch=monkeypatch, **settings),
                      _solve(traces, pipeline=False, monkeypatch=monkeypatch, **settings))


def test_after_a_failure_no_worker_takes_another_group(two_workers):
    backend = NumpyBackend()
    started = []

    def scale_round(cells, first):
        started.append(len(cells))
        if len(started) == 2:
            raise KeyboardInterrupt
        return np.zeros(cells.size, dtype=bool)  # nobody finishes: rounds would go on

    with pytest.raises(KeyboardInterrupt):
        backend._run_scale_rounds(scale_round, 40, 10)
    assert len(started) <= backend.workers + 1


def test_memory_bounded_blocks_of_pipelined_rounds_run_one_at_a_time(monkeypatch, two_workers):
    traces = _traces(25, 300, seed=2)
    settings = dict(upsample_factor=2, noise_constrained=True)
    whole = _solve(traces, pipeline=True, monkeypatch=monkeypatch, **settings)
    monkeypatch.setattr(solve_module, "BLOCK_BUDGET", 300 * 2 * solve_module.BYTES_PER_SAMPLE * 10)  # 10 rows/block
    assert len(solve_module._row_blocks(NumpyBackend(), 25, 600)) == 3
    running, most = [0], [0]
    original = NumpyBackend._run_scale_rounds

    def counting(self, scale_round, n_cells, max_rounds):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return original(self, scale_round, n_cells, max_rounds)
        finally:
            running[0] -= 1

    monkeypatch.setattr(NumpyBackend, "_run_scale_rounds", counting)
    _assert_identical(whole, _solve(traces, pipeline=True, monkeypatch=monkeypatch, **settings))
    assert most[0] == 1

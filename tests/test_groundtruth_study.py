"""The development-set study tool's activity shift (tools/groundtruth_study.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "groundtruth_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("groundtruth_study", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_half_a_frame_earlier_splits_an_event_over_its_frame_and_the_one_before(study):
    activity = np.zeros(8)
    activity[3] = 2.0
    moved = study.moved_earlier(activity, 30.0, 0.5 / 30.0)
    np.testing.assert_allclose(moved, [0, 0, 1.0, 1.0, 0, 0, 0, 0], atol=1e-12)


def test_moving_keeps_the_total_and_whole_frames_move_exactly(study):
    rng = np.random.default_rng(3)
    activity = np.zeros(200)
    activity[20:180] = rng.exponential(size=160)
    for frames in (0.25, 1.0, 1.5):
        moved = study.moved_earlier(activity, 100.0, frames / 100.0)
        assert moved.sum() == pytest.approx(activity.sum())
        assert np.all(moved >= -1e-12)
    np.testing.assert_allclose(study.moved_earlier(activity, 100.0, 0.02), np.r_[activity[2:], 0, 0], atol=1e-12)


def test_slowing_down_keeps_the_frame_clock(study):
    trace = np.arange(23, dtype=float)  # 23 frames at 150 Hz -> factor 5, 4 frames, 3 dropped
    for sampling, expected in (("mean", [2.0, 7.0, 12.0, 17.0]), ("start", [0.0, 5.0, 10.0, 15.0]),
                               ("mid", [2.0, 7.0, 12.0, 17.0]), ("end", [4.0, 9.0, 14.0, 19.0])):
        slowed, fs = study.slowed_down(trace, 150.0, 30.0, sampling)
        assert fs == pytest.approx(30.0)
        np.testing.assert_array_equal(slowed, expected)
    slowed, fs = study.slowed_down(trace, 158.0, 60.0, "mean")  # factor round(2.63) = 3
    assert fs == pytest.approx(158.0 / 3) and slowed.size == 7


def test_slowing_down_refuses_an_unknown_sampling(study):
    with pytest.raises(ValueError, match="sampling must be one of"):
        study.slowed_down(np.zeros(10), 100.0, 50.0, "middle")


def test_the_rates_figure_is_drawn(study, tmp_path):
    pytest.importorskip("matplotlib")
    summary = {(method, target, sampling, dataset): (0.5 + 0.001 * target, 0.0, target)
               for method in ("run_cadecon", "OASIS AR(2)") for target in (7.5, 15.0, 30.0)
               for sampling in ("mean", "start") for dataset in ("DS10", "DS12")}
    path = tmp_path / "rates.png"
    study.plot_rates(summary, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

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

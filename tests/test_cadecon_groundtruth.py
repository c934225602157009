"""run_cadecon on real recordings with simultaneous electrophysiology (the development set).

The recordings live outside the repository, in ``../shared/groundtruth`` relative to the
repository root (public CASCADE ground-truth datasets as ``.npz``); every test here skips
when that folder is absent.  Scoring follows the set's scorer: Pearson correlation of the
inferred activity with the true spike counts in 40 ms bins, frame ``k`` covering
``[t0 + k/fs, t0 + (k+1)/fs)``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import calab

GROUNDTRUTH = Path(__file__).resolve().parents[1].parent / "shared" / "groundtruth"
BIN_S = 0.04

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (GROUNDTRUTH / "DS10.npz").is_file(), reason="../shared/groundtruth is not present"),
]


def _first_recording(name: str, minutes: float) -> tuple[np.ndarray, float, float, np.ndarray]:
    data = np.load(GROUNDTRUTH / f"{name}.npz")
    record = json.loads(str(data["index"]))["recordings"][0]
    frames = int(minutes * 60 * record["fs"])
    trace = data[record["key"] + "_trace"].astype(np.float64)[:frames]
    return trace, float(record["fs"]), float(record["t0"]), data[record["key"] + "_spikes"]


def _r25_by_lag(activity: np.ndarray, fs: float, t0: float, spikes: np.ndarray) -> dict[int, float]:
    n_bins = int(activity.size / fs / BIN_S)
    truth = np.histogram(spikes, bins=t0 + BIN_S * np.arange(n_bins + 1))[0].astype(float)
    cumulative = np.concatenate([[0.0], np.cumsum(activity)])
    inferred = np.diff(np.interp(BIN_S * np.arange(n_bins + 1), np.arange(activity.size + 1) / fs, cumulative))
    out = {}
    for lag in range(-3, 4):
        a = inferred[lag:] if lag >= 0 else inferred[:lag]
        b = truth[: n_bins - lag] if lag >= 0 else truth[-lag:]
        out[lag] = float(np.corrcoef(a, b)[0, 1])
    return out


def test_one_mouse_v1_gcamp6f_neuron_at_160_hz_on_time():
    """One neuron's two minutes, learned from that neuron alone: the events are not late or early
    (the best whole-bin shift is 0) and the no-lag correlation is that of the development table."""
    trace, fs, t0, spikes = _first_recording("DS10", 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", calab.CaDeconWarning)
        result = calab.run_cadecon(trace, fs, progress=False, backend="numpy")
    assert result.metadata["initialization"]["method"] == "bispectrum"
    scores = _r25_by_lag(np.asarray(result.activity, dtype=np.float64).ravel(), fs, t0, spikes)
    assert max(scores, key=scores.get) == 0
    assert scores[0] > 0.5

"""Figures and notebook displays of results: what is drawn is the data given, the cells
chosen are the active ones, the kernel panel marks the right peak time, and matplotlib is
only imported when a figure is drawn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import calab
from calab.cadecon.result import CaDeconResult, biexp_waveform
from calab.cadecon.shape import peak_normaliser, tau_to_shape

pytest.importorskip("matplotlib")

FS = 30.0
TAUS = (0.08, 0.5)


def _population(cells: int = 6, frames: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cells 0, 2 and 4 fire; 1, 3 and 5 are noise only."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(5 * TAUS[1] * FS)) / FS
    kernel = np.exp(-t / TAUS[1]) - np.exp(-t / TAUS[0])
    spikes = np.zeros((cells, frames))
    spikes[::2] = rng.poisson(0.05, size=(len(range(0, cells, 2)), frames))
    clean = np.stack([np.convolve(row, kernel)[:frames] for row in spikes])
    return clean + 0.05 * rng.standard_normal(clean.shape), spikes


def _cadecon_result(traces: np.ndarray, start: tuple[float, float] = (0.05, 0.8)) -> CaDeconResult:
    """A result as run_cadecon assembles it, at a known kernel (no loop needed)."""
    lam = calab.noise_sd(traces)
    activity = calab.run_deconvolution(traces, FS, *TAUS, lam, backend="numpy").astype(np.float32)
    beta = peak_normaliser(*TAUS)
    meta = {"tau_rise": TAUS[0], "tau_decay": TAUS[1], "beta": beta, "start_tau_rise": start[0],
            "start_tau_decay": start[1], "initialization": {"method": "autocovariance", "refined": True},
            "num_iterations": 3, "converged": True, "converged_at_iteration": 1, "activity_kind": "continuous",
            "continuous_lambda_per_noise": 1.0, "warnings": ["example warning"], "backend": "numpy",
            "elapsed_s": 1.5}
    n = traces.shape[0]
    return CaDeconResult(activity, np.ones(n), np.zeros(n), np.full(n, 0.9), biexp_waveform(*TAUS, beta, FS),
                         np.zeros(0, np.float32), FS, meta)


def test_importing_calab_and_deconvolving_never_imports_matplotlib():
    code = ("import sys, numpy as np, calab; r = calab.run_deconvolution_full(np.ones((2, 50)), 30., 0.1, 0.6, 0.1);"
            " r._repr_html_(); assert 'matplotlib' not in sys.modules, 'imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_a_missing_matplotlib_names_the_extra(monkeypatch):
    traces, _ = _population()
    full = calab.run_deconvolution_full(traces, FS, *TAUS, 0.05, backend="numpy")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "calab\[plot\]"'):
        full.plot(traces, FS)


def test_most_active_cells_are_the_ones_that_fire():
    traces, _ = _population(cells=8)
    activity = calab.run_deconvolution(traces, FS, *TAUS, calab.noise_sd(traces), backend="numpy")
    from calab.plot import most_active_cells

    chosen = most_active_cells(traces, activity, count=4)
    assert sorted(chosen.tolist()) == [0, 2, 4, 6]


def test_deconvolution_figure_draws_the_given_trace_fit_and_activity():
    traces, _ = _population()
    full = calab.run_deconvolution_full(traces, FS, *TAUS, calab.noise_sd(traces), backend="numpy")
    figure = full.plot(traces, FS, cells=[2, 0])
    axes = figure.axes
    assert len(axes) == 4  # trace + activity for each cell
    for panel, cell in ((0, 2), (2, 0)):
        trace_line, fit_line = axes[panel].get_lines()
        np.testing.assert_array_equal(trace_line.get_ydata(), traces[cell])
        np.testing.assert_array_equal(fit_line.get_ydata(), full.reconvolution[cell])
        np.testing.assert_allclose(trace_line.get_xdata(), np.arange(traces.shape[1]) / FS)
        np.testing.assert_array_equal(axes[panel + 1].get_lines()[0].get_ydata(), full.activity[cell])
    assert axes[0].get_ylabel() == "cell 2"


def test_long_recordings_open_on_a_window_and_window_is_honoured():
    traces, _ = _population(cells=2, frames=int(300 * FS))
    full = calab.run_deconvolution_full(traces, FS, *TAUS, 0.05, backend="numpy")
    shown = full.plot(traces, FS, cells=[0]).axes[0].get_lines()[0].get_xdata()
    assert shown[-1] - shown[0] == pytest.approx(120.0, abs=0.1)  # two minutes of a five-minute recording
    shown = full.plot(traces, FS, cells=[0], window=(10, 20)).axes[0].get_lines()[0].get_xdata()
    assert (shown[0], shown[-1]) == pytest.approx((10.0, 20.0), abs=1 / FS + 1e-9)
    with pytest.raises(ValueError, match="out of range"):
        full.plot(traces, FS, cells=[5])


def test_cadecon_figure_marks_the_peak_and_compares_with_the_start(tmp_path):
    traces, _ = _population()
    result = _cadecon_result(traces)
    figure = result.plot(traces, cells=[0], given_taus=(0.1, 0.6))
    kernel_axes = figure.axes[0]
    labels = [line.get_label() for line in kernel_axes.get_lines()]
    assert any(label.startswith("learned: rise 80 ms, decay 500 ms") for label in labels)
    assert any(label.startswith("starting: rise 50 ms, decay 800 ms") for label in labels)
    assert any(label.startswith("given: rise 100 ms") for label in labels)
    peak = tau_to_shape(*TAUS)[0]
    marker = [line for line in kernel_axes.get_lines() if line.get_linestyle() == "-."][0]
    assert marker.get_xdata()[0] == pytest.approx(peak)
    learned = kernel_axes.get_lines()[0]
    x, y = learned.get_xdata(), learned.get_ydata()
    assert x[np.argmax(y)] == pytest.approx(peak, abs=x[1] - x[0])
    # the fit is the continuous solution at the learned kernel, reconvolved
    fit_line = figure.axes[1].get_lines()[1]
    expected = calab.run_deconvolution_full(traces[:1], FS, *TAUS, calab.noise_sd(traces[:1]), backend="numpy")
    np.testing.assert_allclose(fit_line.get_ydata(), expected.reconvolution[0], rtol=1e-6, atol=1e-9)
    # saved atomically, never over an existing file without overwrite
    path = tmp_path / "cadecon.png"
    result.plot(traces, cells=[0], path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        result.plot(traces, cells=[0], path=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cadecon.png"]


def test_notebook_displays_summarise_the_result():
    traces, _ = _population()
    result = _cadecon_result(traces)
    html = result._repr_html_()
    for text in ("tau_rise 0.0800 s, tau_decay 0.5000 s", "result.metadata[&#x27;tau_rise&#x27;]",
                 "6 x 900 frames at 30 Hz", "1.5 s on numpy", "example warning", "converged at round 1"):
        assert text in html, text
    full = calab.run_deconvolution_full(traces, FS, *TAUS, 0.05, max_iters=100, backend="numpy")
    html = full._repr_html_()
    converged = int(np.sum(full.converged))
    assert f"{converged} of 6 cells" in html and "6 x 900 frames" in html
    if converged < 6:
        assert "raise max_iters" in html

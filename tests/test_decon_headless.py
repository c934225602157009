"""decon(headless=True, autorun=True) in real headless Chromium, and no process left behind.

A module of its own: HeadlessBrowser starts Playwright's sync driver, which cannot run
while another module's page fixture holds one in the same thread.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_bridge_browser import _chromium_available
from test_bridge_headless import _descendants, _wait_gone, needs_proc

import calab
from calab.bridge.headless import HeadlessBrowser

pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _chromium_available(), reason="no Chromium that Playwright can launch"),
]

FS = 30.0
SETTINGS = dict(seed=7, max_iterations=3, num_subsets=2, upsample_target=30)


def small_recording() -> np.ndarray:
    sim = calab.simulate(num_cells=6, num_timepoints=900, fs_hz=FS, seed=21)
    return np.asarray(sim.traces, dtype=np.float64)


@needs_proc
@pytest.mark.slow
def test_autorun_headless_returns_run_cadecons_result(capsys):
    traces = small_recording()
    expected = calab.run_cadecon(traces, FS, progress=False, **SETTINGS)
    baseline = _descendants()
    seen = []
    original = HeadlessBrowser.navigate

    def spy(self, url):
        seen.append(_descendants() - baseline)
        return original(self, url)

    HeadlessBrowser.navigate = spy
    try:
        result = calab.decon(traces, FS, headless=True, autorun=True, timeout=120, **SETTINGS)
    finally:
        HeadlessBrowser.navigate = original
    assert isinstance(result, calab.CaDeconResult)
    # Same settings and seed: the page's run is run_cadecon's, exactly.
    assert result.metadata["tau_rise"] == expected.metadata["tau_rise"]
    assert result.metadata["tau_decay"] == expected.metadata["tau_decay"]
    assert np.array_equal(result.activity, expected.activity)
    assert np.array_equal(result.alphas, expected.alphas)
    assert result.metadata["num_iterations"] == expected.metadata["num_iterations"]
    # decon(autorun=True) showed the page's progress on one terminal line (as 0.3.0).
    out = capsys.readouterr().out
    assert "CaDecon page: http://127.0.0.1:" in out and "iter " in out and "τd=" in out
    # The temporary browser is gone: no driver, no Chromium.
    assert len(seen[0]) >= 2
    assert _wait_gone(seen[0]) == set()


@needs_proc
def test_a_page_that_fails_leaves_no_process_behind(monkeypatch):
    """The page cannot load its script: decon times out with None and Chromium is gone."""
    from calab.bridge import server

    baseline = _descendants()
    real = server._STATIC_TYPES.copy()
    monkeypatch.setitem(server._STATIC_TYPES, ".js", "text/plain")  # module scripts refused
    assert calab.decon(np.ones((2, 50)), FS, headless=True, autorun=True, timeout=4) is None
    assert real != server._STATIC_TYPES
    assert _wait_gone(_descendants() - baseline) == set()


@pytest.mark.slow
def test_one_headless_browser_serves_several_decon_calls():
    """Batch use (as documented): one HeadlessBrowser, datasets of different shapes."""
    quick = dict(SETTINGS, max_iterations=1)
    with HeadlessBrowser() as hb:
        first = calab.decon(small_recording(), FS, headless=hb, autorun=True, timeout=120, **quick)
        second = calab.decon(small_recording()[:4, :600], FS, headless=hb, autorun=True, timeout=120, **quick)
        assert hb.is_alive  # the caller owns its lifetime
    assert first.activity.shape == (6, 900) and second.activity.shape == (4, 600)
    for result in (first, second):  # each run honoured max_iterations=1 (0 when the bispectral kernel needs none)
        assert result.metadata["num_iterations"] == len(result.metadata["history"]) <= 1
        assert result.metadata["config"]["max_iterations"] == 1 and result.metadata["tau_decay"] is not None

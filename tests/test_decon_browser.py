"""The built-in CaDecon page in a real headless Chromium: a manual run and heartbeat loss.

decon() runs in a thread (as a user's script would block on it); the test drives the page
as a user: Start, Pause, Resume, Stop, Export to Python.  Small recordings (CI: 2 cores).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_bridge_browser import _chromium_available, chromium, page  # noqa: F401 - fixtures

import calab
from calab.bridge import apps

pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _chromium_available(), reason="no Chromium that Playwright can launch"),
]

FS = 30.0
#: regenerate docs/images/cadecon-page.png with CALAB_UPDATE_SCREENSHOTS=1
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "cadecon-page.png"


def small_recording(n_cells=8, n_frames=1200, seed=31) -> np.ndarray:
    sim = calab.simulate(num_cells=n_cells, num_timepoints=n_frames, fs_hz=FS, seed=seed)
    return np.asarray(sim.traces, dtype=np.float64)


def decon_in_thread(monkeypatch, traces, **kwargs):
    """calab.decon in a thread, the page opened by the test; returns (url, thread, holder)."""
    urls: queue.Queue = queue.Queue()
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: urls.put(url))
    holder: dict = {}

    def run():
        try:
            holder["result"] = calab.decon(traces, FS, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            holder["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return urls.get(timeout=15), thread, holder


def server_state(page):
    return page.evaluate("""async () => {
        const p = new URLSearchParams(location.search);
        const r = await fetch("/calab/v1/cadecon/state", {headers: {"X-Bridge-Secret": p.get("bridge_secret")}});
        return r.json();
    }""")


@pytest.mark.slow
def test_manual_start_pause_resume_stop_export(page, monkeypatch):
    traces = small_recording()
    url, thread, holder = decon_in_thread(monkeypatch, traces, timeout=240, seed=3, num_subsets=2,
                                          upsample_target=30)
    page.goto(url)
    page.locator("#start").wait_for(state="visible")
    assert page.locator("#info").inner_text().startswith("8 cells · 1200 tp · 30 Hz")
    # The raster shows the subsets of the settings on the page; K and seed come from decon().
    assert page.locator("#k-box").input_value() == "2" and page.locator("#seed-box").input_value() == "3"
    page.wait_for_function("() => document.querySelector('#coverage-readout').textContent.includes('% total')")
    # A long run (tolerance far below what the kernel reaches) so that it can be stopped by hand.
    # The bispectral start is not refined unless asked ("Auto"); this run asks for refinement.
    assert page.locator("#refine").input_value() == "auto"
    page.locator("#refine").select_option("always")
    page.locator("#max-iter").fill("30")
    page.locator("#tol").fill("0.001")
    page.locator("#patience").fill("10")
    page.locator("#start").click()
    page.locator("#pause").wait_for(state="visible")
    page.wait_for_function("() => !document.querySelector('#pause').disabled")
    assert page.locator("#k-box").is_disabled()  # run-affecting controls locked while active
    page.locator("#pause").click()
    page.wait_for_function("() => document.querySelector('#progress-status').textContent === 'Paused'", timeout=60_000)
    paused = server_state(page)
    assert paused["status"] == "paused" and paused["progress"]["status"] == "paused"
    page.wait_for_timeout(800)
    assert server_state(page)["progress"] == paused["progress"]  # nothing moves while paused
    assert page.locator("#resume").is_visible()
    page.locator("#resume").click()
    # Let one iteration finish so the charts have something, then stop by hand.
    page.wait_for_function("() => document.querySelector('#chart-rmse canvas') !== null", timeout=120_000)
    page.locator("#stop").click()
    page.wait_for_function("() => document.querySelector('#progress-status').textContent === 'Complete'",
                           timeout=120_000)
    assert page.locator("#result-badge").inner_text().startswith("Stopped at iteration")
    assert page.locator("#result-summary").inner_text().startswith("rise: ")
    page.wait_for_function("() => document.querySelector('#chart-trace canvas') !== null", timeout=60_000)
    # The results ZIP, then Export to Python.
    with page.expect_download() as download:
        page.locator("#download").click()
    assert download.value.suggested_filename == "cadecon_cadecon_results.zip"
    if os.environ.get("CALAB_UPDATE_SCREENSHOTS"):
        page.set_viewport_size({"width": 1500, "height": 950})
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOT))
    page.locator("#export-python").click()
    thread.join(60)
    assert "error" not in holder, holder.get("error")
    result = holder["result"]
    page.wait_for_function("() => document.querySelector('#export-python').textContent === 'Exported'")
    assert page.locator("#export-python").is_disabled()
    # A manual Stop ends the iterations and finalises every cell with the best kernel so far.
    meta = result.metadata
    assert meta["stopped"] is True and meta["finalized"] is True and meta["converged"] is False
    assert 1 <= meta["num_iterations"] < 30
    assert result.activity.shape == traces.shape and np.isfinite(result.alphas).all()
    assert meta["tau_decay"] > meta["tau_rise"] > 0
    assert meta["config"]["max_iterations"] == 30 and meta["config"]["patience"] == 10
    assert meta["config"]["refine"] is True and meta["initialization"]["refined"] is True
    assert page.problems == []


@pytest.mark.slow
def test_heartbeat_loss_ends_decon_with_none(page, monkeypatch, capsys):
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 3.5)
    before = {t.ident for t in threading.enumerate()}
    url, thread, holder = decon_in_thread(monkeypatch, small_recording(n_cells=4, n_frames=600), timeout=90,
                                          max_iterations=50, convergence_tol=0.0001, upsample_target=30)
    page.goto(url)
    page.locator("#start").click()
    page.wait_for_function("() => !document.querySelector('#pause').disabled")
    page.wait_for_timeout(3500)  # at least one heartbeat (every 3 s)
    page.goto("about:blank")  # the user closes the tab mid-run
    began = time.monotonic()
    thread.join(60)
    assert holder == {"result": None} and time.monotonic() - began < 30
    assert "Browser disconnected (heartbeat timeout)." in capsys.readouterr().out
    # The server-side run ended with the session.
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name == "calab-cadecon-run"]

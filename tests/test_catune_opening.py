"""The CaTune page opens at the data's own kernel: the time constants run_cadecon would
learn, λ = the noise SD, the filter as run_cadecon sets it; the sliders move from there.
Truth: simulated GCaMP6f cells (rise 0.1 s, decay 0.6 s, known noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import calab
from calab.bridge.catune import opening_parameters
from calab.cadecon import starting_kernel

FS = 30.0


@pytest.fixture(scope="module")
def population():
    simulation = calab.simulate(calab.presets.gcamp6f(num_cells=20, num_timepoints=2400, seed=8))
    return np.asarray(simulation.traces, dtype=np.float64)


def test_opening_parameters_are_the_data_kernel_and_a_noise_scaled_lambda(population):
    opening = opening_parameters(population, FS)
    (tau_rise, tau_decay), info = starting_kernel(population, FS, quiet=True)
    assert (opening["tau_rise"], opening["tau_decay"]) == (tau_rise, tau_decay)  # what run_cadecon learns
    assert opening["method"] == info["method"] == "bispectrum" and opening["cells"] == 20
    assert opening["tau_decay"] == pytest.approx(0.6, rel=0.15) and opening["tau_rise"] == pytest.approx(0.1, rel=0.3)
    assert opening["lambda"] == pytest.approx(float(np.median(calab.noise_sd(population))))
    assert opening["filter_enabled"] is True  # run_cadecon's defaults filter (high- and low-pass)


def test_data_without_a_kernel_leave_the_defaults():
    noise = np.random.default_rng(0).standard_normal((4, 600))
    assert "error" in opening_parameters(noise, FS)


sync_api = pytest.importorskip("playwright.sync_api")


@pytest.mark.browser
def test_the_page_opens_at_the_data_kernel_and_moves_from_there(population, monkeypatch, tmp_path):
    from test_bridge_browser import ALL_DONE, _chromium_available, tune_in_thread

    if not _chromium_available():
        pytest.skip("no Chromium that Playwright can launch")
    from calab.bridge.headless import chromium_launch_options
    from calab.cadecon.shape import tau_to_shape

    opening = opening_parameters(population, FS)
    url, thread, holder = tune_in_thread(monkeypatch, population, timeout=180)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch_options(pw))
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        page.wait_for_function(ALL_DONE, timeout=120_000)
        state = page.evaluate("(() => { const s = window.__catune; return {peak: s.peakMs, fwhm: s.fwhmMs, "
                              "lambda: s.lambda, filter: s.filter, exact: s.exactTaus}; })()")
        peak, width = tau_to_shape(opening["tau_rise"], opening["tau_decay"])
        assert state["peak"] == pytest.approx(1000 * peak, rel=1e-6)
        assert state["fwhm"] == pytest.approx(1000 * width, rel=1e-6)
        assert state["lambda"] == pytest.approx(opening["lambda"]) and state["filter"] is True
        assert page.locator("#filter-toggle").is_checked()
        assert float(page.locator("#lambda-range").input_value()) == pytest.approx(opening["lambda"], rel=0.01)
        assert "Opened at the kernel learned from 20 cells" in page.locator("#opening-note").inner_text()
        page.screenshot(path=str(tmp_path / "opening.png"))
        # the sliders move from there: a new peak time gives new taus
        page.locator("#peak-box").fill(f"{1000 * peak * 0.7:.1f}")
        page.locator("#peak-box").dispatch_event("change")
        page.wait_for_function(ALL_DONE, timeout=120_000)
        page.locator("#export-python").click()
        thread.join(60)
        browser.close()
    assert problems == [] and "error" not in holder
    params = holder["params"]
    moved_peak = params["tau_rise"] * params["tau_decay"] / (params["tau_decay"] - params["tau_rise"]) * \
        math.log(params["tau_decay"] / params["tau_rise"])
    assert moved_peak == pytest.approx(0.7 * peak, rel=0.01)
    assert params["lambda_"] == pytest.approx(opening["lambda"]) and params["filter_enabled"] is True

"""The built-in CaTune page and HeadlessBrowser in a real headless Chromium.

Skipped cleanly without Playwright (the pip package) or a Chromium it can drive (CI
installs Debian's ``chromium``; see ``.ci/run``).  Kept few and quick: CI has 2 cores.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import calab
from calab.bridge import apps
from calab.bridge.headless import HeadlessBrowser, chromium_launch_options

sync_api = pytest.importorskip("playwright.sync_api")


def _chromium_available() -> bool:
    try:
        with sync_api.sync_playwright() as pw:
            options = chromium_launch_options(pw)
            path = options.get("executable_path") or pw.chromium.executable_path
            return bool(path) and os.path.exists(path)
    except Exception:  # noqa: BLE001 - no driver, unsupported platform
        return False


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _chromium_available(), reason="no Chromium that Playwright can launch"),
]


def recording(n_cells=6, seconds=90, fs=30.0, seed=1):
    """Noisy double-exponential transients (tau 0.1 s / 0.6 s) on a baseline."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(int(5 * fs)) / fs
    kernel = np.exp(-t / 0.6) - np.exp(-t / 0.1)
    spikes = (rng.random((n_cells, n)) < 0.02) * rng.uniform(0.5, 2.0, (n_cells, n))
    calcium = np.array([np.convolve(row, kernel)[:n] for row in spikes])
    return calcium * rng.uniform(0.5, 3, (n_cells, 1)) + 0.15 * rng.normal(size=(n_cells, n)) + 1.0


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch_options(pw))
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1300, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: page.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    yield page
    context.close()


def tune_in_thread(monkeypatch, traces, **kwargs):
    """Start calab.tune in a thread; return (url, thread, result holder)."""
    urls: queue.Queue = queue.Queue()
    monkeypatch.setattr(apps.webbrowser, "open", lambda url: urls.put(url))
    holder: dict = {}

    def run():
        try:
            holder["params"] = calab.tune(traces, 30.0, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            holder["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return urls.get(timeout=15), thread, holder


ALL_DONE = "() => { const s = window.__catune; return s && s.cards.size > 0 && " \
           "[...s.cards.values()].every(c => c.badge.classList.contains('done')); }"


def test_tune_round_trip_in_chromium(page, monkeypatch, tmp_path):
    traces = recording()
    url, thread, holder = tune_in_thread(monkeypatch, traces, timeout=120)
    page.goto(url)
    page.wait_for_function(ALL_DONE, timeout=60_000)
    assert page.locator(".card").count() == 5  # Top Active, 5 cells by default
    # Top Active = highest variance first, 1-based labels
    first = int(page.locator(".card").first.get_attribute("data-cell"))
    assert first == int(np.argmax(traces.var(axis=1)))
    assert page.locator("#info").inner_text() == "6 cells · 2700 tp · 30 Hz · 1.5 min"
    before = page.evaluate("window.__catune.cards.values().next().value.result.cell.deconv")
    solves = page.evaluate("window.__catune.stats.solves")

    # Move a slider: every card goes stale, re-solves on the server, and settles again.
    page.locator("#lambda-range").fill("0.4")
    assert page.locator(".badge.done").count() == 0
    page.wait_for_function(ALL_DONE, timeout=60_000)
    after = page.evaluate("window.__catune.cards.values().next().value.result.cell.deconv")
    assert page.evaluate("window.__catune.stats.solves") >= solves + 2  # quick pass, then the full solve
    assert sum(after) < sum(before)  # more sparsity, less activity

    # Panning inside the solved padding is drawn from the last solve; far away re-solves.
    solves = page.evaluate("window.__catune.stats.solves")
    over = page.locator(".card .u-over").first.bounding_box()
    page.mouse.move(over["x"] + over["width"] * 0.6, over["y"] + 50)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.4, over["y"] + 50, steps=4)
    page.mouse.up()
    card = "window.__catune.cards.values().next().value"
    assert page.evaluate("window.__catune.stats.cacheHits") == 1
    assert page.evaluate("window.__catune.stats.solves") == solves
    assert page.evaluate(f"{card}.window[0]") > page.evaluate(f"{card}.result.index[0]")
    minimap = page.locator(".card canvas.minimap").first.bounding_box()
    page.mouse.click(minimap["x"] + minimap["width"] * 0.9, minimap["y"] + 10)
    page.wait_for_function(ALL_DONE, timeout=60_000)
    assert page.evaluate("window.__catune.stats.solves") > solves
    start, stop = page.evaluate(f"{card}.window")
    assert stop - start == 600 and start > 1800  # still 20 s, now near the end of the 90 s

    # Pin: the current fit and activity stay on the charts, dashed, after the next change.
    page.locator("#pin").click()
    assert page.locator("#pin").inner_text() == "Unpin"
    page.locator("#lambda-range").fill("0.2")
    page.wait_for_function(ALL_DONE, timeout=60_000)
    page.locator("#lambda-range").fill("0.4")
    page.wait_for_function(ALL_DONE, timeout=60_000)
    pinned = page.evaluate("""() => { const c = window.__catune.cards.values().next().value;
        return [c.plot.series[6].show, c.plot.data[4].length, c.plot.data[7].filter(v => v !== null).length]; }""")
    assert pinned[0] is True and pinned[2] == pinned[1]
    page.locator("#pin").click()

    # Noise filter: the server returns the band-passed working trace too.
    page.locator("#filter-toggle").check()
    page.wait_for_function(ALL_DONE, timeout=60_000)
    assert page.evaluate("window.__catune.cards.values().next().value.result.cell.filtered") is not None

    page.locator("#export-python").click()
    thread.join(30)
    assert "error" not in holder, holder.get("error")
    params = holder["params"]
    assert set(params) == {"tau_rise", "tau_decay", "lambda_", "fs", "filter_enabled"}
    assert params["lambda_"] == 0.4 and params["fs"] == 30 and params["filter_enabled"] is True
    # The kernel sliders were not moved: the page exports the kernel it opened at, the one
    # learned from the data (the opening view is tested in test_catune_opening.py).
    from calab.bridge.catune import opening_parameters

    opening = opening_parameters(traces, 30.0)
    assert (params["tau_rise"], params["tau_decay"]) == (opening["tau_rise"], opening["tau_decay"])
    page.locator("#modal").wait_for(state="visible")
    assert "exported to Python" in page.locator("#modal-title").inner_text()

    # After the export the button reverts to a local download of the same document (T-10).
    page.locator("#modal-close").click()
    with page.expect_download() as download:
        page.locator("#export-local").click()
    assert download.value.suggested_filename.startswith("catune-params-") and \
        download.value.suggested_filename.endswith(".json")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["schema_version"] == "1.2.0" and exported["parameters"]["lambda"] == 0.4
    assert exported["metadata"] == {"num_cells": 6, "num_timepoints": 2700}
    assert page.problems == []


def test_hosted_style_cross_origin_calls_and_bridge_url_rules(page, monkeypatch):
    """From another origin (as the hosted app runs), every status is readable through CORS."""
    from calab.bridge.registry import get_app
    from calab.bridge.server import BridgeServer, BridgeSession

    apps._builtin_apps()
    with BridgeServer(BridgeSession(np.ones((2, 50)), 30.0, get_app("catune"))) as pages, \
            BridgeServer(BridgeSession(np.ones((2, 50)), 30.0, get_app("catune"))) as target:
        pages.start()
        target.start()
        page.goto(f"{pages.origin}/pages/catune/index.html")  # a file session: the import wizard
        assert page.locator("#wizard").is_visible()
        statuses = page.evaluate("""async ([origin, secret]) => {
            const call = async (path, init = {}, withSecret = true) => {
              const headers = {...(init.headers || {}), ...(withSecret ? {"X-Bridge-Secret": secret} : {})};
              const r = await fetch(origin + path, {...init, headers});
              return [r.status, await r.text()];
            };
            return {
              metadata: await call("/api/v1/metadata"),
              missing: await call("/api/v1/metadata", {}, false),
              wrong: await call("/api/v1/traces", {headers: {"X-Bridge-Secret": "nope"}}, false),
              notFound: await call("/api/v1/nothing"),
              badJson: await call("/api/v1/params", {method: "POST", body: "{",
                                                     headers: {"Content-Type": "application/json"}}),
              wrongApp: await call("/api/v1/results/cadecon", {method: "POST", body: "{}",
                                                               headers: {"Content-Type": "application/json"}}),
            };
        }""", [target.origin, target.session.secret])
        assert statuses["metadata"] == [200, '{"sampling_rate_hz": 30.0, "num_cells": 2, "num_timepoints": 50}']
        assert statuses["missing"][0] == 401 and statuses["wrong"][0] == 401
        assert statuses["notFound"][0] == 404 and statuses["badJson"] == [400, '{"error": "Invalid JSON"}']
        assert statuses["wrongApp"][0] == 409
        rules = page.evaluate("""async () => {
            const { getBridge } = await import("../common/bridge.js");
            const q = (v) => "?bridge=" + encodeURIComponent(v) + "&bridge_secret=s";
            const pick = (v) => { const b = getBridge(q(v)); return b && b.origin; };
            return [pick("127.0.0.1:8765"), pick("http://localhost:9/x/"), pick("http://[::1]:7"),
                    pick("https://127.0.0.1:1"), pick("http://evil.example"), pick("http://127.0.0.1.evil.example/"),
                    pick("javascript:alert(1)")];
        }""")
        assert rules == ["http://127.0.0.1:8765", "http://localhost:9", "http://[::1]:7", None, None, None, None]
        assert target.session.payload is None
    assert page.problems == [] or all("401" in p or "404" in p or "400" in p or "409" in p for p in page.problems)


def test_heartbeat_loss_after_the_page_closes(page, monkeypatch, capsys):
    monkeypatch.setattr(apps, "HEARTBEAT_TIMEOUT", 3.5)
    url, thread, holder = tune_in_thread(monkeypatch, recording(n_cells=2, seconds=30), timeout=60)
    page.goto(url)
    page.wait_for_function(ALL_DONE, timeout=60_000)
    page.wait_for_timeout(3500)  # at least one beat (every 3 s)
    page.goto("about:blank")  # the user closes the tab
    began = time.monotonic()
    thread.join(30)
    assert holder == {"params": None} and time.monotonic() - began < 20
    assert "Browser disconnected (heartbeat timeout)." in capsys.readouterr().out


def test_import_wizard_file_session(page, tmp_path):
    """Without a bridge the page is a file tool: .npz → select array → swap → rate → validate → cards."""
    from calab.bridge.registry import get_app
    from calab.bridge.server import BridgeServer, BridgeSession

    traces = recording(n_cells=3, seconds=40)
    np.savez_compressed(tmp_path / "rec.npz", traces=traces.T.copy(), other=np.ones((2, 5)))
    apps._builtin_apps()
    with BridgeServer(BridgeSession(np.ones((1, 5)), 30.0, get_app("catune"))) as pages:
        pages.start()
        page.goto(f"{pages.origin}/pages/catune/index.html")
        page.set_input_files("#file-input", str(tmp_path / "rec.npz"))
        page.get_by_role("button", name="traces — 1200 x 3 (<f8)").click()
        assert page.locator("#dims-text").inner_text() == "1200 cells × 3 timepoints"
        assert page.locator("#dims-warning").is_visible()
        page.click("#swap-dims")
        assert page.locator("#dims-text").inner_text() == "3 cells × 1200 timepoints"
        page.click("#confirm-dims")
        assert page.locator("#confirm-rate").is_disabled()
        page.get_by_role("button", name="30 Hz (miniscope / 2-photon)").click()
        assert "40.0 seconds" in page.locator("#rate-text").inner_text()
        page.click("#confirm-rate")
        assert "3600" in page.locator("#validation").inner_text()
        page.click("#open-dashboard")
        page.wait_for_function(ALL_DONE, timeout=60_000)
        assert page.locator(".card").count() == 3
        assert page.locator("#info").inner_text() == "rec.npz · 3 cells · 1200 tp · 30 Hz · 40.0 s"
        assert page.locator("#export-python").is_hidden() and page.locator("#export-local").is_visible()
        # With the data's own kernel the in-page solver's fit explains the transients
        # but not the white noise (noise sd 0.15 on transients of ~1).
        page.locator("#fwhm-range").fill("700")
        page.locator("#peak-range").fill("164")
        page.wait_for_function(ALL_DONE, timeout=60_000)
        cell = page.evaluate("window.__catune.cards.values().next().value.result.cell")
        raw, fit = np.array(cell["raw"]), np.array(cell["fit"])
        r2 = 1 - np.sum((raw - fit) ** 2) / np.sum((raw - raw.mean()) ** 2)
        assert r2 > 0.8 and 0.1 < np.std(raw - fit) < 0.2 and min(cell["deconv"]) >= 0
        assert cell["r2"] == pytest.approx(r2, abs=1e-6)
        # Manual selection: 1-based, invalid and repeated entries dropped, order kept.
        page.select_option("#mode", "manual")
        page.fill("#manual", "3, 1, 9, 3, x")
        page.press("#manual", "Enter")
        assert page.input_value("#manual") == "3, 1"
        assert [page.locator(".card").nth(i).get_attribute("data-cell") for i in range(page.locator(".card").count())] == ["2", "0"]
    assert page.problems == []


def test_demo_data_and_card_height(page):
    """W-02: synthetic data in the page (no export of demo data); T-12: card height."""
    from calab.bridge.registry import get_app
    from calab.bridge.server import BridgeServer, BridgeSession

    apps._builtin_apps()
    with BridgeServer(BridgeSession(np.ones((1, 5)), 30.0, get_app("catune"))) as pages:
        pages.start()
        page.goto(f"{pages.origin}/pages/catune/index.html")
        page.locator(".demo summary").click()
        page.fill("#demo-cells", "4")
        page.fill("#demo-minutes", "1")
        page.click("#load-demo")
        page.wait_for_function(ALL_DONE, timeout=60_000)
        assert page.locator("#info").inner_text() == "4 cells · 1800 tp · 30 Hz · 1.0 min"
        assert page.locator("#export-local").is_hidden() and page.locator("#export-python").is_hidden()
        first = page.locator(".card .uplot").first.bounding_box()["height"]
        page.fill("#card-height", "400")
        page.dispatch_event("#card-height", "change")
        page.wait_for_timeout(200)
        assert page.locator(".card .uplot").first.bounding_box()["height"] == pytest.approx(first + 120, abs=2)
    assert page.problems == []

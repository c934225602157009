"""Regenerate docs/images/cadecon-page.png: the built-in CaDecon page after a finished run.

Usage: python tools/screenshot_cadecon.py [OUTPUT.png]

A simulated population (40 cells × 2 min at 30 Hz, gcamp-like default kernel) is opened
with calab.decon(); the script presses Start like a user, waits for the run to finish,
selects a subset on the raster, takes the screenshot, and exports to Python.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

import numpy as np

import calab
from calab.bridge import apps
from calab.bridge.headless import chromium_launch_options

OUTPUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/images/cadecon-page.png"


def main() -> None:
    from playwright.sync_api import sync_playwright

    sim = calab.simulate(num_cells=40, num_timepoints=3600, fs_hz=30.0, seed=4)
    traces = np.asarray(sim.traces, dtype=np.float64)
    urls: queue.Queue = queue.Queue()
    apps.webbrowser.open = lambda url: urls.put(url)
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(result=calab.decon(traces, 30.0, timeout=600, seed=2)),
                              daemon=True)
    thread.start()
    url = urls.get(timeout=30)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch_options(pw))
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.goto(url)
        page.locator("#start").click()
        page.wait_for_function("() => document.querySelector('#progress-status').textContent === 'Complete'",
                               timeout=600_000)
        page.wait_for_function("() => document.querySelector('#chart-trace canvas') !== null", timeout=60_000)
        page.locator("#cell-select").select_option("5")
        page.wait_for_function("() => { const t = window.__cadecon.trace; return t && t.cell === 5 && t.cell_stats; }",
                               timeout=60_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUTPUT))
        page.locator("#export-python").click()
        thread.join(60)
        browser.close()
    result = holder["result"]
    print(f"wrote {OUTPUT}; learned tau_rise {result.metadata['tau_rise']:.3f} s, "
          f"tau_decay {result.metadata['tau_decay']:.3f} s in {result.metadata['num_iterations']} iterations; "
          f"true kernel {sim.config.kernel}")


if __name__ == "__main__":
    main()

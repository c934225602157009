"""Regenerate the pictures in docs/images/ that show a first session with calab.

Usage: python tools/doc_images.py [OUTPUT_DIR]

* ``catune-page.png``: the built-in CaTune page as ``calab.tune()`` opens it, at the kernel
  learned from the data (60 simulated GCaMP6f cells, 2 min at 30 Hz), once every card is solved;
* ``cadecon-figure.png``: ``CaDeconResult.plot`` of ``run_cadecon`` on the same cells, with the
  true kernel drawn for comparison;
* ``deconvolution-figure.png``: ``DeconvolutionResult.plot`` of ``run_deconvolution_full`` at
  the learned kernel with λ = ``calab.noise_sd``.

Needs matplotlib and Playwright with a Chromium it can drive (the test extra).
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

OUTPUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/images"
FS = 30.0
ALL_DONE = ("() => { const s = window.__catune; return s && s.cards.size > 0 && "
            "[...s.cards.values()].every(c => c.badge.classList.contains('done')); }")


def page_screenshot(traces: np.ndarray, path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    urls: queue.Queue = queue.Queue()
    apps.webbrowser.open = lambda url: urls.put(url) or True
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(params=calab.tune(traces, FS, timeout=600)), daemon=True)
    thread.start()
    url = urls.get(timeout=60)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch_options(pw))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_function(ALL_DONE, timeout=600_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(path))
        page.locator("#export-python").click()
        thread.join(60)
        browser.close()
    return holder["params"]


def main() -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    config = calab.presets.gcamp6f(num_cells=60, num_timepoints=3600, fs_hz=FS, seed=21)
    traces = np.asarray(calab.simulate(config).traces, dtype=np.float64)
    true_taus = (config.kernel.tau_rise_s, config.kernel.tau_decay_s)

    params = page_screenshot(traces, OUTPUT / "catune-page.png")
    print(f"catune-page.png: the page opened at tau_rise {params['tau_rise']:.3f} s, tau_decay "
          f"{params['tau_decay']:.3f} s, lambda {params['lambda_']:.3g}, filter {params['filter_enabled']}")

    result = calab.run_cadecon(traces, FS, progress=False)
    result.plot(traces, given_taus=true_taus, path=OUTPUT / "cadecon-figure.png", overwrite=True,
                title="run_cadecon on 60 simulated GCaMP6f cells (given = the true kernel)")
    learned = (result.metadata["tau_rise"], result.metadata["tau_decay"])
    print(f"cadecon-figure.png: learned {learned[0]:.3f} s / {learned[1]:.3f} s, true {true_taus}")

    full = calab.run_deconvolution_full(traces, FS, *learned, calab.noise_sd(traces))
    full.plot(traces, FS, path=OUTPUT / "deconvolution-figure.png", overwrite=True,
              title="run_deconvolution_full at the learned kernel, lam = calab.noise_sd(traces)")
    print("deconvolution-figure.png written")


if __name__ == "__main__":
    main()

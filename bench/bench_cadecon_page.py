"""Responsiveness of the built-in CaDecon page on a large recording.

Serves an N × T recording (default 1,000 cells × 100,000 frames at 30 Hz) on a CaDecon
bridge session, opens the page in headless Chromium, walks the trace inspector (next
cell × 5, zoom in/out, minimap jump) and reports:

* the server time of each data request the page makes (raster, trace window, state);
* the browser's long tasks (PerformanceObserver "longtask", > 50 ms) during the session,
  the largest of which is what "stays responsive" is judged by (threshold 200 ms).

No run is started (the loop's own cost is bench/cadecon's business); what is measured is
what the page reads and draws.  Usage:

    python bench/bench_cadecon_page.py [N_CELLS] [N_FRAMES]

On a shared machine set ``CALAB_BENCH_LOCK=PATH`` so timings never overlap.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lock import ENV_VAR, hold_lock  # noqa: E402  (bench/_lock.py)


def main() -> None:
    from playwright.sync_api import sync_playwright

    from calab.bridge import apps
    from calab.bridge.headless import chromium_launch_options
    from calab.bridge.registry import get_app
    from calab.bridge.server import BridgeServer, BridgeSession

    hold_lock(os.environ.get(ENV_VAR))
    n_cells = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    n_frames = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rng = np.random.default_rng(0)
    traces = rng.standard_normal((n_cells, n_frames), dtype=np.float32)
    traces[:, ::97] += 5  # some structure for the raster
    apps._builtin_apps()
    began = time.perf_counter()
    session = BridgeSession(traces, 30.0, get_app("cadecon"))
    del traces
    print(f"{n_cells} x {n_frames}: session ready in {time.perf_counter() - began:.2f} s "
          f"({session.traces.nbytes / 2**20:.0f} MiB float64)")
    timings: dict[str, list[float]] = {}
    for name, route in session.app.compute.items():
        def timed(s, q, b, _handler=route.handler, _name=name):
            t0 = time.perf_counter()
            try:
                return _handler(s, q, b)
            finally:
                timings.setdefault(_name, []).append(time.perf_counter() - t0)
        session.app.compute[name] = type(route)(route.method, timed)
    with BridgeServer(session) as server, sync_playwright() as pw:
        server.start()
        url = f"{apps.page_url('cadecon', server)}?bridge={server.origin}&bridge_secret={session.secret}"
        browser = pw.chromium.launch(**chromium_launch_options(pw))
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.add_init_script("""
            window.__long = [];
            new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push(e.duration); })
              .observe({ type: "longtask", buffered: true });
        """)
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function("() => window.__cadecon && window.__cadecon.trace && "
                               "window.__cadecon.rasterLoaded", timeout=120_000)
        print(f"page loaded with raster and first trace in {time.perf_counter() - t0:.2f} s")
        for _ in range(5):
            token = page.evaluate("window.__cadecon.traceToken")
            page.locator("#cell-next").click()
            page.wait_for_function(f"() => window.__cadecon.traceToken > {token} && "
                                   "document.querySelector('#trace-updating').hidden", timeout=60_000)
        for button in ("#zoom-out", "#zoom-out", "#zoom-in"):
            page.locator(button).click()
            page.wait_for_timeout(150)
            page.wait_for_function("() => document.querySelector('#trace-updating').hidden", timeout=60_000)
        box = page.locator("#trace-minimap").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.7, box["y"] + 10)
        page.wait_for_timeout(200)
        page.wait_for_function("() => document.querySelector('#trace-updating').hidden", timeout=60_000)
        long_tasks = page.evaluate("window.__long")
        browser.close()
    for name, values in sorted(timings.items()):
        print(f"  {name:12s} n={len(values):3d}  median {1000 * np.median(values):7.1f} ms  max {1000 * max(values):7.1f} ms")
    worst = max(long_tasks, default=0.0)
    print(f"browser long tasks: {len(long_tasks)} (> 50 ms), largest {worst:.0f} ms "
          f"({'OK' if worst <= 200 else 'over'} the 200 ms budget)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""CaTune page benchmarks: live re-solve latency and responsiveness with a big recording.

1. **Server solve**: ``calab.bridge.catune.solve_window`` for 8 cells × a 20 s window at
   30 Hz (padded as the page asks), quick (100 iterations) and full (2000) passes, for a
   few parameter sets.  Backend as calab resolves it (``--backend`` to force one).
2. **Page re-solve latency**: ``tune()`` with the built-in page in headless Chromium,
   8 cards; for each parameter change, the time from the change to every card showing
   its final solve (the page's own ``performance.now()`` measurement).
3. **Responsiveness**: ``tune()`` on ``--big-cells`` × ``--big-frames`` traces (default
   1,000 × 100,000, float64 = 800 MB); the page is loaded, sliders moved, the selection
   switched to 20 random cells and reshuffled, and every card panned; every
   Long Task (> 50 ms on the main thread) the browser records is collected.

On a shared machine pass ``--lock PATH`` (or set ``CALAB_BENCH_LOCK``) so timings never overlap.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
import webbrowser
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import calab  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)
from calab.bridge import apps  # noqa: E402
from calab.bridge.catune import solve_window  # noqa: E402
from calab.bridge.headless import chromium_launch_options  # noqa: E402


def synthetic(n_cells: int, n_frames: int, fs: float = 30.0, seed: int = 0) -> np.ndarray:
    """Spikes convolved with a 0.1/0.6 s kernel plus noise, float64, generated in row blocks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(5 * fs)) / fs
    kernel = np.exp(-t / 0.6) - np.exp(-t / 0.1)
    out = np.empty((n_cells, n_frames))
    block = max(1, 20_000_000 // n_frames)
    for start in range(0, n_cells, block):
        stop = min(n_cells, start + block)
        spikes = (rng.random((stop - start, n_frames), dtype=np.float32) < 0.02).astype(np.float64)
        spectrum = np.fft.rfft(spikes, n_frames + len(kernel)) * np.fft.rfft(kernel, n_frames + len(kernel))
        calcium = np.fft.irfft(spectrum, n_frames + len(kernel))[:, :n_frames]
        out[start:stop] = calcium + 0.15 * rng.standard_normal((stop - start, n_frames), dtype=np.float32) + 1
    return out


PARAMS = [  # (tau_rise, tau_decay, lambda, filter)
    (0.001, 2.99, 0.0, False),  # the page's defaults: peak 8 ms, FWHM 2080 ms
    (0.06, 0.73, 0.0, False),  # peak 164 ms, FWHM 700 ms
    (0.06, 0.73, 0.5, True),
]


def bench_server(backend: str | None, repeats: int) -> list[dict]:
    traces = synthetic(8, 30 * 300)
    fs = 30.0
    rows = []
    with calab.use_backend(backend) if backend else _null():
        for tr, td, lam, filt in PARAMS:
            start = int(np.ceil(2 * td * fs)) + 600
            for iters in (100, 2000):
                solve_window(traces, fs, list(range(8)), start, start + 600, tr, td, lam, filt, 1200, iters)
                times = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    reply = solve_window(traces, fs, list(range(8)), start, start + 600, tr, td, lam, filt, 1200, iters)
                    times.append(time.perf_counter() - began)
                rows.append({"tau_rise": tr, "tau_decay": td, "lambda": lam, "filter": filt, "max_iters": iters,
                             "padded_frames": reply["padded"][1] - reply["padded"][0],
                             "median_ms": 1e3 * statistics.median(times), "best_ms": 1e3 * min(times)})
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def start_tune(traces: np.ndarray):
    urls: queue.Queue = queue.Queue()
    webbrowser.open = lambda url, *a, **k: urls.put(url)  # type: ignore[assignment]
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.setdefault("params", calab.tune(traces, 30.0, timeout=900)),
                              daemon=True)
    thread.start()
    return urls.get(timeout=600), thread, holder


ALL_DONE = ("() => { const s = window.__catune; return s && s.cards.size > 0 && "
            "[...s.cards.values()].every(c => c.badge.classList.contains('done')); }")
OBSERVE_LONG_TASKS = """() => { window.__longTasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push([e.duration, e.startTime]); })
    .observe({ type: "longtask", buffered: true }); }"""


def settle(page, timeout_ms=600_000):
    page.wait_for_timeout(50)
    page.wait_for_function(ALL_DONE, timeout=timeout_ms)


def bench_page(pw_browser, n_cards: int, repeats: int) -> dict:
    traces = synthetic(50, 30 * 600)
    url, thread, _ = start_tune(traces)
    page = pw_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    settle(page)
    page.fill("#count", str(n_cards))
    page.dispatch_event("#count", "change")
    settle(page)
    # kernel close to the data's (peak 164 ms, FWHM 700 ms), then one slider move at a time
    page.locator("#fwhm-range").fill("700")
    page.locator("#peak-range").fill("164")
    settle(page)
    results = {}
    moves = {
        "Sparsity slider": lambda r: page.locator("#lambda-range").fill(f"{0.2 + 0.1 * r:.2f}"),
        "FWHM slider": lambda r: page.locator("#fwhm-range").fill(str(650 + 25 * r)),
        "Noise Filter toggle": lambda r: page.set_checked("#filter-toggle", r % 2 == 0),
    }
    for label, move in moves.items():
        samples = []
        for r in range(repeats):
            move(r)
            settle(page)
            samples.append(page.evaluate("window.__catune.stats.lastSettleMs"))
        results[label] = {"median_ms": statistics.median(samples), "samples_ms": samples}
    page.click("#export-python")
    thread.join(60)
    page.close()
    return {"cards": n_cards, "window_s": 20, "fs": 30, "changes": results}


def bench_big(pw_browser, n_cells: int, n_frames: int) -> dict:
    began = time.perf_counter()
    traces = synthetic(n_cells, n_frames)
    made = time.perf_counter() - began
    url, thread, _ = start_tune(traces)
    page = pw_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(f"({OBSERVE_LONG_TASKS})()")
    began = time.perf_counter()
    page.goto(url)
    settle(page)
    first_paint_s = time.perf_counter() - began
    actions = []

    def act(name, fn):
        t0 = time.perf_counter()
        at = page.evaluate("performance.now()")
        fn()
        settle(page)
        actions.append((name, time.perf_counter() - t0, at))

    act("sparsity slider", lambda: page.locator("#lambda-range").fill("0.3"))
    act("FWHM slider", lambda: page.locator("#fwhm-range").fill("700"))
    act("random 20 cells", lambda: (page.select_option("#mode", "random"), page.fill("#count", "20"),
                                    page.dispatch_event("#count", "change")))
    act("reshuffle", lambda: page.click("#reshuffle"))

    def pan_all():
        for i in range(page.locator(".card").count()):
            box = page.locator(".card .u-over").nth(i).bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + 40)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 40, steps=5)
            page.mouse.up()

    act("pan every card", pan_all)
    long_tasks = page.evaluate("window.__longTasks")
    phases = [("load", 0.0)] + [(name, at) for name, _, at in actions]
    where = {}
    for duration, start in long_tasks:
        phase = [name for name, at in phases if at <= start][-1]
        where[phase] = max(where.get(phase, 0.0), duration)
    long_tasks = [d for d, _ in long_tasks]
    actions = [(name, s) for name, s, _ in actions]
    page.click("#export-python")
    thread.join(120)
    page.close()
    return {"cells": n_cells, "frames": n_frames, "generate_s": made, "first_settle_s": first_paint_s,
            "actions_s": actions, "long_tasks_ms": sorted(long_tasks, reverse=True)[:10],
            "max_long_task_ms": max(long_tasks, default=0.0), "max_long_task_ms_by_phase": where, "long_tasks_over_200ms": sum(t > 200 for t in long_tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cards", type=int, default=8)
    parser.add_argument("--big-cells", type=int, default=1000)
    parser.add_argument("--big-frames", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: server,page,big")
    parser.add_argument("--json", type=Path)
    add_lock_option(parser)
    args = parser.parse_args()
    hold_lock(args.lock)
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"backend": args.backend or "auto"}
    if "server" not in skip:
        report["server"] = bench_server(args.backend, args.repeats)
        for row in report["server"]:
            print(f"server solve 8 cells x 20 s (+pad {row['padded_frames']} frames) tr={row['tau_rise']} "
                  f"td={row['tau_decay']} lam={row['lambda']} filter={row['filter']} iters<={row['max_iters']}: "
                  f"median {row['median_ms']:.1f} ms (best {row['best_ms']:.1f})")
    if not {"page", "big"} <= skip:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(**chromium_launch_options(pw))
            if "page" not in skip:
                report["page"] = bench_page(browser, args.cards, args.repeats)
                for label, row in report["page"]["changes"].items():
                    print(f"page re-solve, {args.cards} cards x 20 s, {label}: median {row['median_ms']:.0f} ms "
                          f"({', '.join(f'{v:.0f}' for v in row['samples_ms'])})")
            if "big" not in skip:
                report["big"] = big = bench_big(browser, args.big_cells, args.big_frames)
                print(f"big {big['cells']} x {big['frames']}: first cards settled in {big['first_settle_s']:.1f} s; "
                      + "; ".join(f"{n} {s:.1f} s" for n, s in big["actions_s"]))
                print(f"  long tasks: max {big['max_long_task_ms']:.0f} ms, over 200 ms: {big['long_tasks_over_200ms']}, "
                      f"top {['%.0f' % t for t in big['long_tasks_ms']]}, worst per phase "
                      + ", ".join(f"{k} {v:.0f}" for k, v in big["max_long_task_ms_by_phase"].items()))
            browser.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

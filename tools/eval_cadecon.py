#!/usr/bin/env python
"""Evaluate ``calab.run_cadecon`` on simulated populations whose kernel the method does not know.

For every scenario (indicator preset, kernel speed, frame rate, SNR, spike model, drift) it
simulates a population with ground truth, runs ``run_cadecon`` under one or more setting
variants, and scores

* ``tau_decay`` and peak-time error of the learned kernel against the true one (relative);
* spike correlation (100 ms bins, median over cells that fired) of the CaDecon counts and
  of its continuous solution, against the same for FISTA (``calab.run_deconvolution``)
  run with the TRUE kernel and λ = 1 × each cell's noise SD (the yardstick);
* iterations run, convergence and wall time.

Usage::

    python tools/eval_cadecon.py --suite quick          # a few scenarios, small populations
    python tools/eval_cadecon.py --suite done --cells 100 --minutes 5 --json out.json
    python tools/eval_cadecon.py --suite quick --variants spec,default
    python tools/eval_cadecon.py table out.json               # markdown table of saved rows

On a shared machine pass ``--lock PATH`` (or set ``CALAB_BENCH_LOCK``) so timings never overlap.  The results
behind the defaults are in ``docs/cadecon.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import calab  # noqa: E402
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)
from calab.cadecon.initialization import noise_sigma  # noqa: E402
from calab.cadecon.shape import tau_to_shape  # noqa: E402

#: Setting variants compared (DeconConfig overrides).  "spec" is the browser app's loop
#: (§6: peak seeding, its defaults); "default" is whatever DeconConfig() resolves to.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "spec": {"initialization": "peaks", "upsample_target": 300, "max_iterations": 20, "convergence_tol": 0.005,
             "patience": 3, "min_iterations": 2, "selection_window": 5, "activity": "counts"},
    "counts": {"counts": True},  # the default plus the InDeCa counts of every cell
    "peaks": {"initialization": "peaks"},
    "autocov": {"initialization": "autocovariance"},  # the default before the bispectral start (loop refines)
    "bispec+refine": {"initialization": "bispectrum", "refine": True},
    "u100": {"upsample_target": 100},
    "u300": {"upsample_target": 300},
    "patience2": {"patience": 2},
    "maxit6": {"max_iterations": 6},
    # full trajectories for choosing the stopping rule offline (the trail does not depend on it)
    "trail100": {"upsample_target": 100, "max_iterations": 10, "convergence_tol": 1e-9},
    "trail300": {"upsample_target": 300, "max_iterations": 10, "convergence_tol": 1e-9},
}


def scenario(name: str, preset: str, *, speed: float = 1.0, fs: float = 30.0, snr: float | None = None,
             poisson_hz: float | None = None, drift: float | None = None, start: str = "none",
             neuropil: float | None = None) -> dict[str, Any]:
    return dict(name=name, preset=preset, speed=speed, fs=fs, snr=snr, poisson_hz=poisson_hz, drift=drift, start=start,
                neuropil=neuropil)


SUITES: dict[str, list[dict[str, Any]]] = {
    "quick": [
        scenario("gcamp6f", "gcamp6f"),
        scenario("gcamp6f x3 fast", "gcamp6f", speed=3.0),
    ],
    "rules": [
        scenario("gcamp6f", "gcamp6f"),
        scenario("gcamp6s", "gcamp6s"),
        scenario("jgcamp8f x3", "jgcamp8f", speed=3.0),
    ],
    "done": [
        scenario("gcamp6f", "gcamp6f"),
        scenario("gcamp6s", "gcamp6s"),
        scenario("jgcamp8f", "jgcamp8f"),
        scenario("ogb1", "ogb1"),
        scenario("gcamp6f x3, preset start", "gcamp6f", speed=3.0, start="preset"),
        scenario("gcamp6f x3", "gcamp6f", speed=3.0),
        scenario("gcamp6s x3", "gcamp6s", speed=3.0),
        scenario("ogb1 x3", "ogb1", speed=3.0),
        scenario("gcamp6s x3, preset start", "gcamp6s", speed=3.0, start="preset"),
        scenario("jgcamp8f x3", "jgcamp8f", speed=3.0),
    ],
    # frame rates 15-100 Hz with kernels 2-4x faster than the presets, and a slow-decay
    # indicator whose rise spans several frames (ogb1 at 100 Hz: 5 frames; SNR 6)
    "rates": [
        scenario("gcamp6f x2 15 Hz", "gcamp6f", speed=2.0, fs=15.0),
        scenario("jgcamp8f x3 30 Hz", "jgcamp8f", speed=3.0, fs=30.0),
        scenario("gcamp6s x3 30 Hz", "gcamp6s", speed=3.0, fs=30.0),
        scenario("jgcamp8f x2 60 Hz", "jgcamp8f", speed=2.0, fs=60.0),
        scenario("gcamp6f x4 100 Hz", "gcamp6f", speed=4.0, fs=100.0),
        scenario("ogb1 100 Hz SNR 6", "ogb1", fs=100.0, snr=6.0),
    ],
    "held-out": [
        scenario("gcamp6m", "gcamp6m"),
        scenario("gcamp6f x2", "gcamp6f", speed=2.0),
        scenario("gcamp6s x4", "gcamp6s", speed=4.0),
        scenario("gcamp6f SNR 4", "gcamp6f", snr=4.0),
        scenario("gcamp6f Poisson 2 Hz", "gcamp6f", poisson_hz=2.0),
        scenario("gcamp6f strong drift", "gcamp6f", drift=0.01),
        scenario("gcamp6f 15 Hz", "gcamp6f", fs=15.0),
        scenario("jgcamp8f 60 Hz", "jgcamp8f", fs=60.0),
        scenario("gcamp6f x3 160 Hz", "gcamp6f", speed=3.0, fs=160.0),
    ],
    # traces contaminated by the surround: the mean calcium of another population added
    # with this SD relative to each cell's own trace (as uncorrected suite2p/CaImAn F is)
    "neuropil": [
        scenario("gcamp6f neuropil 0.5", "gcamp6f", neuropil=0.5),
        scenario("gcamp6f neuropil 1.0", "gcamp6f", neuropil=1.0),
        scenario("gcamp6s neuropil 0.5", "gcamp6s", neuropil=0.5),
        scenario("jgcamp8f x2 60 Hz neuropil 0.5", "jgcamp8f", speed=2.0, fs=60.0, neuropil=0.5),
    ],
}


def simulate(spec: dict[str, Any], cells: int, minutes: float, seed: int) -> tuple[Any, tuple[float, float]]:
    preset = getattr(calab.presets, spec["preset"])
    fs = spec["fs"]
    overrides: dict[str, Any] = dict(num_cells=cells, num_timepoints=int(round(minutes * 60 * fs)), fs_hz=fs, seed=seed)
    config = preset(**overrides)
    kernel = config.kernel
    true = (kernel.tau_rise_s / spec["speed"], kernel.tau_decay_s / spec["speed"])
    patch: dict[str, Any] = {"kernel": {"tau_rise_s": true[0], "tau_decay_s": true[1]}}
    if spec["snr"] is not None:
        patch["noise"] = {"snr": spec["snr"]}
    if spec["poisson_hz"] is not None:
        patch["spike_model"] = calab.PoissonConfig(rate_hz=spec["poisson_hz"])
    if spec["drift"] is not None:
        patch["drift"] = {"step_std_fraction": spec["drift"]}
    config = preset(**overrides, **patch)
    return calab.simulate(config), true


NEUROPIL_CELLS = 30


def neuropil(spec: dict[str, Any], traces: np.ndarray, minutes: float, seed: int) -> np.ndarray:
    """``(n_cells, T)`` surround signal: the mean clean calcium of another population of the
    same indicator (its own spikes), centred, scaled per cell to ``spec["neuropil"]`` times
    the SD of that cell's trace."""
    other, _ = simulate({**spec, "neuropil": None}, NEUROPIL_CELLS, minutes, seed + 1000)
    surround = np.mean([np.asarray(c.clean_calcium, dtype=np.float64) for c in other.ground_truth], axis=0)
    surround = (surround - surround.mean()) / surround.std()
    return spec["neuropil"] * traces.std(axis=1, keepdims=True) * surround[None, : traces.shape[1]]


def binned(values: np.ndarray, width: int) -> np.ndarray:
    usable = values.shape[-1] // width * width
    return values[..., :usable].reshape(*values.shape[:-1], -1, width).sum(axis=-1)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def spike_correlation(activity: np.ndarray, spikes: np.ndarray, fs: float) -> float:
    width = max(1, round(0.1 * fs))
    values = correlation(binned(np.asarray(activity, dtype=np.float64), width), binned(spikes, width))
    fired = spikes.sum(axis=1) > 0
    return float(np.nanmedian(values[fired])) if fired.any() else math.nan


def evaluate(spec: dict[str, Any], variants: list[str], cells: int, minutes: float, seed: int,
             backend: str | None) -> list[dict[str, Any]]:
    sim, true = simulate(spec, cells, minutes, seed)
    traces = np.asarray(sim.traces, dtype=np.float64)
    if spec.get("neuropil"):
        traces = traces + neuropil(spec, traces, minutes, seed)
    spikes = np.stack([np.asarray(c.spikes, dtype=np.float64) for c in sim.ground_truth])
    fs = spec["fs"]
    true_peak = tau_to_shape(*true)[0]
    lam = noise_sigma(traces)
    fista_true = calab.run_deconvolution(traces, fs, true[0], true[1], lam, backend=backend, progress=False)
    yardstick = spike_correlation(fista_true, spikes, fs)
    rows = []
    oasis = _oasis_correlations(traces, spikes, fs) if OASIS else {}
    for variant in variants:
        overrides = dict(VARIANTS[variant])
        if spec["start"] == "preset":
            preset_kernel = getattr(calab.presets, spec["preset"])().kernel
            overrides.update(tau_rise=preset_kernel.tau_rise_s, tau_decay=preset_kernel.tau_decay_s)
        started = time.perf_counter()
        result = calab.run_cadecon(traces, fs, backend=backend, progress=False, seed=seed, **overrides)
        wall = time.perf_counter() - started
        meta = result.metadata
        row: dict[str, Any] = dict(scenario=spec["name"], variant=variant, fs=fs, cells=cells, minutes=minutes,
                                   true_tau_rise=true[0], true_tau_decay=true[1], wall_s=wall,
                                   iterations=meta["num_iterations"], converged_at=meta["converged_at_iteration"],
                                   start=(meta["start_tau_rise"], meta["start_tau_decay"]), fista_true_corr=yardstick)
        if meta["tau_decay"] is not None:
            peak = tau_to_shape(meta["tau_rise"], meta["tau_decay"])[0]
            row.update(tau_rise=meta["tau_rise"], tau_decay=meta["tau_decay"],
                       tau_decay_err=meta["tau_decay"] / true[1] - 1, peak_err=peak / true_peak - 1)
        row["trail"] = [(h["iteration"], h.get("tau_rise"), h.get("tau_decay"), h.get("kernel_rmse")) for h in meta["history"]]
        counts = result.activity if meta["activity_kind"] == "counts" else meta["counts"]
        continuous = result.activity if meta["activity_kind"] == "continuous" else meta["continuous_activity"]
        # the counts exist only when asked for (activity="counts" or the "counts" variant)
        row["counts_corr"] = spike_correlation(counts, spikes, fs) if counts is not None else math.nan
        row["continuous_corr"] = spike_correlation(continuous, spikes, fs) if continuous is not None else math.nan
        row.update(oasis)
        row["counts_ratio"] = row["counts_corr"] / yardstick
        row["continuous_ratio"] = row["continuous_corr"] / yardstick
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


#: Set by ``--oasis``: also score automated OASIS (bench/_oasis_worker.py in its own venv).
OASIS = False


def _oasis_correlations(traces: np.ndarray, spikes: np.ndarray, fs: float) -> dict[str, float]:
    """Spike correlation of automated OASIS AR(1) and AR(2), run cell by cell in the OASIS venv."""
    import subprocess
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from bench_cadecon_peers import WORKER, oasis_python

    python = oasis_python()
    if python is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "traces.npy", traces)
        subprocess.run([str(python), str(WORKER), str(Path(tmp) / "traces.npy"), str(Path(tmp) / "out")],
                       check=True, capture_output=True)
        return {f"oasis_{order}_corr": spike_correlation(np.load(Path(tmp) / f"out_{order}.npy"), spikes, fs)
                for order in ("ar1", "ar2")}


def format_row(row: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        return f"{100 * row[key]:+6.1f}%" if key in row else "   n/a"

    return (f"{row['scenario']:<28} {row['variant']:<9} tau_d {pct('tau_decay_err')} peak {pct('peak_err')} "
            f"corr counts {row['counts_corr']:.3f} cont {row['continuous_corr']:.3f} (true-kernel FISTA "
            f"{row['fista_true_corr']:.3f}; OASIS AR1/AR2 {row.get('oasis_ar1_corr', math.nan):.3f}/"
            f"{row.get('oasis_ar2_corr', math.nan):.3f}) it {row['iterations']} conv@{row['converged_at']} {row['wall_s']:.0f}s")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the markdown table of docs/cadecon.md (OASIS columns when the rows have them)."""
    if any("oasis_ar2_corr" in r for r in rows):
        return _markdown_with_oasis(rows)
    lines = ["| scenario | settings | cells x min | true τr / τd (s) | learned τr / τd | τd error | peak-time error "
             "| corr. continuous / counts | FISTA true kernel | ratio (continuous) | iterations (conv. at) | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        learned = f"{r['tau_rise']:.3f} / {r['tau_decay']:.3f}" if "tau_rise" in r else "n/a"
        err = (lambda k: f"{100 * r[k]:+.1f}%" if k in r else "n/a")
        lines.append(
            f"| {r['scenario']} | {r['variant']} | {r['cells']} x {r['minutes']:g} | {r['true_tau_rise']:.3f} / "
            f"{r['true_tau_decay']:.3f} | {learned} | {err('tau_decay_err')} | {err('peak_err')} | "
            f"{r['continuous_corr']:.3f} / {r['counts_corr']:.3f} | {r['fista_true_corr']:.3f} | "
            f"{r['continuous_ratio']:.3f} | {r['iterations']} ({r['converged_at']}) | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "table":  # python tools/eval_cadecon.py table a.json [b.json ...]
        print(markdown([row for path in argv[1:] for row in json.loads(Path(path).read_text())]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="quick", help=f"one of {sorted(SUITES)} or a comma list")
    parser.add_argument("--variants", default="default")
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--only", default=None, help="substring filter on scenario names")
    parser.add_argument("--json", type=Path, default=None, help="append rows to this JSON file")
    parser.add_argument("--oasis", action="store_true", help="also score automated OASIS AR(1)/AR(2) (own venv)")
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)
    global OASIS
    OASIS = args.oasis
    specs = [spec for suite in args.suite.split(",") for spec in SUITES[suite]]
    if args.only:
        specs = [s for s in specs if args.only in s["name"]]
    rows = []
    for spec in specs:
        rows.extend(evaluate(spec, args.variants.split(","), args.cells, args.minutes, args.seed, args.backend))
        if args.json:
            existing = json.loads(args.json.read_text()) if args.json.exists() else []
            args.json.write_text(json.dumps(existing + rows[-len(args.variants.split(",")):], indent=1, default=float))
    return 0


def _markdown_with_oasis(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | cells x min | true τr / τd (s) | learned τr / τd | τd error | peak-time error "
             "| corr. ours | FISTA true kernel | ratio | OASIS AR(1) / AR(2) | ours / best OASIS | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        learned = f"{r['tau_rise']:.3f} / {r['tau_decay']:.3f}" if "tau_rise" in r else "n/a"
        err = (lambda k: f"{100 * r[k]:+.1f}%" if k in r else "n/a")
        best = max(r.get("oasis_ar1_corr", math.nan), r.get("oasis_ar2_corr", math.nan))
        lines.append(
            f"| {r['scenario']} | {r['cells']} x {r['minutes']:g} | {r['true_tau_rise']:.3f} / {r['true_tau_decay']:.3f} "
            f"| {learned} | {err('tau_decay_err')} | {err('peak_err')} | {r['continuous_corr']:.3f} "
            f"| {r['fista_true_corr']:.3f} | {r['continuous_ratio']:.3f} | {r.get('oasis_ar1_corr', math.nan):.3f} / "
            f"{r.get('oasis_ar2_corr', math.nan):.3f} | {r['continuous_corr'] / best:.3f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Why the CaDecon loop misses the rise time: three measurements on simulated populations.

    python tools/cadecon_rise_study.py --cases jgcamp8f,ogb1,gcamp6s --cells 40 --minutes 2

For each case (true kernel known to this script only):

1. **oracle**: the frame model of ``tools/cadecon_frame_model.py`` fitted to the
   baseline-removed traces with the *true* spike counts (``δ`` free).  Says whether the
   kernel is recoverable when the spike times are right.
2. **map**: ``solve_traces`` (the loop's trace inference: u = 3, band-pass,
   noise-constrained) run with the true decay and ``f ×`` the true rise, then the frame
   model fitted to *its* counts with ``δ`` fixed at the solver's offset.  The rise that
   comes out against the rise that went in: the loop's kernel update as a map.
3. **profile**: for the same solves, how well each candidate kernel explains the frames
   given its own counts (residual fraction, median over cells) and how many counts it
   needed.  A criterion that could pick the rise would have its optimum at ``f = 1``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent))

import calab  # noqa: E402
from cadecon_frame_model import _convolve, fit_direct, frame_response, solver_shift  # noqa: E402
from eval_cadecon import scenario, simulate  # noqa: E402

from calab.backends import get_backend  # noqa: E402
from calab.cadecon.shape import tau_to_shape  # noqa: E402
from calab.filters import rolling_baseline  # noqa: E402

FACTORS = (0.25, 0.5, 0.75, 1.0, 1.33, 1.8, 2.5)
UPSAMPLE = 3  # the loop's default at 30 Hz (upsample_target 100 Hz)


def frames_less_baseline(raw: np.ndarray, tau_decay: float, fs: float) -> np.ndarray:
    # three times the solves' baseline window: the solves' window follows the calcium
    # through long bursts and shortens the decay by 5-8 % here (1-3 % at three times)
    floor = rolling_baseline(get_backend("numpy"), raw.astype(np.float32), 3.0 * tau_decay, fs)
    return raw - np.asarray(floor, dtype=np.float64)


def study(name: str, speed: float, cells: int, minutes: float, seed: int) -> None:
    spec = scenario(name, name, speed=speed)
    sim, true = simulate(spec, cells, minutes, seed)
    fs = spec["fs"]
    raw = np.asarray(sim.traces, dtype=np.float64)
    frames = frames_less_baseline(raw, true[1], fs)
    label = f"{name}" + (f" x{speed:g}" if speed != 1 else "")
    peak_true = tau_to_shape(*true)[0]

    counts = np.asarray(sim.spikes, dtype=np.float64)
    alpha = np.array([g.alpha for g in sim.ground_truth])
    oracle = fit_direct(frames / alpha[:, None], counts, fs, (1.5 * true[0], 1.2 * true[1]))
    print(f"{label}: true τr/τd {true[0]:.3f}/{true[1]:.3f} s; oracle fit {oracle.tau_rise:.3f}/{oracle.tau_decay:.3f} s "
          f"(peak time {tau_to_shape(oracle.tau_rise, oracle.tau_decay)[0] / peak_true - 1:+.1%}, δ {oracle.shift:+.2f})")
    print("| rise in (× true) | rise out (× true) | decay out (× true) | frame residual (median) | counts per cell |")
    print("|---|---|---|---|---|")
    shift = solver_shift(UPSAMPLE)
    for factor in FACTORS:
        taus = (true[0] * factor, true[1])
        solved = calab.solve_traces(raw, *taus, fs, upsample_factor=UPSAMPLE, max_iters=500, tol=1e-4,
                                    hp_enabled=True, lp_enabled=True, noise_constrained=True)
        counts = np.asarray(solved.s_counts, dtype=np.float64)
        alphas = np.asarray(solved.alpha, dtype=np.float64)
        ok = (alphas > 0) & (counts.sum(axis=1) > 0)
        fit = fit_direct(frames[ok] / alphas[ok, None], counts[ok], fs, taus, shift=shift)
        first, response = frame_response(taus[0] * fs, taus[1] * fs, shift, int(8 * taus[1] * fs) + 2)
        model = _convolve(counts[ok], first, response)
        y = frames[ok] - frames[ok].mean(axis=1, keepdims=True)
        model -= model.mean(axis=1, keepdims=True)
        amplitude = np.maximum((y * model).sum(axis=1) / np.maximum((model * model).sum(axis=1), 1e-30), 0.0)
        residual = ((y - amplitude[:, None] * model) ** 2).sum(axis=1) / (y * y).sum(axis=1)
        print(f"| {factor:g} | {fit.tau_rise / true[0]:.2f} | {fit.tau_decay / true[1]:.2f} | {np.median(residual):.4f} | "
              f"{counts.sum() / len(raw):.0f} |", flush=True)
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="jgcamp8f,ogb1,gcamp6s", help="presets, each optionally 'name*speed'")
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for case in args.cases.split(","):
        name, _, speed = case.partition("*")
        study(name, float(speed or 1), args.cells, args.minutes, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

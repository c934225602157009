#!/usr/bin/env python
"""Choose the stopping rule offline from full kernel trajectories (``eval_cadecon.py`` "trail" variants).

The merged kernel of each iteration does not depend on when the loop stops, so every
stopping rule (tolerance, patience, minimum iterations, selection window) can be replayed
exactly on a trajectory recorded without early stopping.  For each rule this prints the
iterations it would run and the error of the final taus (selected per spec §6.6) against
the truth, per scenario and summarised.

Usage::

    python tools/stopping_rules.py rules100.json [more.json ...]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calab.cadecon.shape import ConvergenceTracker, select_final_taus, tau_to_shape  # noqa: E402


def replay(row: dict, tol: float, patience: int, min_it: int, window: int, fs: float) -> tuple[int, tuple[float, float]]:
    tracker = ConvergenceTracker(tol, patience, min_it, fs, tuple(row["start"]))
    trail, current = [], tuple(row["start"])
    used = 0
    for iteration, tau_rise, tau_decay, _ in row["trail"]:
        used = iteration
        if tau_rise is None:
            break
        tracker.update(iteration, (tau_rise, tau_decay))
        if 0 < tau_rise < tau_decay:
            trail.append((tau_rise, tau_decay))
            current = (tau_rise, tau_decay)
        if tracker.converged:
            break
    return used, select_final_taus(trail, window, current)


def main(paths: list[str]) -> int:
    rows = [row for path in paths for row in json.loads(Path(path).read_text())]
    grid = list(itertools.product((0.005, 0.01, 0.02), (1, 2, 3), (1, 2), (1, 3, 5)))
    summary = []
    for tol, patience, min_it, window in grid:
        errors, iterations = [], []
        for row in rows:
            used, taus = replay(row, tol, patience, min_it, window, row["fs"])
            true = (row["true_tau_rise"], row["true_tau_decay"])
            decay_err = abs(taus[1] / true[1] - 1)
            peak_err = abs(tau_to_shape(*taus)[0] / tau_to_shape(*true)[0] - 1)
            errors.append(max(decay_err, peak_err))
            iterations.append(used)
        summary.append((float(np.max(errors)), float(np.mean(errors)), float(np.mean(iterations)), tol, patience, min_it, window))
    summary.sort(key=lambda s: (round(s[0], 3), s[2]))
    print("worst err  mean err  mean it  tol    patience min_it window")
    for worst, mean, its, tol, patience, min_it, window in summary[:25]:
        print(f"{100 * worst:8.1f}% {100 * mean:8.1f}% {its:8.1f}  {tol:<6} {patience:<8} {min_it:<6} {window}")
    for row in rows:
        print(row["scenario"], row["variant"], [(i, round(r, 3) if r else r, round(d, 3) if d else d, round(e, 4) if e else e)
                                                for i, r, d, e in row["trail"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

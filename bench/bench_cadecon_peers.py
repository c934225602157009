#!/usr/bin/env python
"""``calab.run_cadecon`` against automated OASIS on the same simulated populations, one run.

For each population (``calab.simulate`` preset, frame rate, cells x frames) the script
times, in this one invocation and on the same cores:

* ``calab.run_cadecon(traces, fs)`` with defaults (the kernel learned from the data,
  every cell finalised) on the chosen backend;
* automated OASIS (``oasis-deconv``: AR(1) and AR(2) coefficients estimated per cell,
  constrained foopsi) run cell by cell, in its own venv (``.venv-oasis`` in the
  repository root, or ``$CALAB_OASIS_VENV``; created on first use with
  ``pip install oasis-deconv``) through ``bench/_oasis_worker.py``;
* FISTA (``calab.run_deconvolution``) at the simulation's true kernel, λ = 1 x each
  cell's noise SD: the accuracy yardstick (not timed against the others).

and reports wall time, the speed ratio OASIS / ours (> 1: we are faster), and spike
correlation (Pearson, 100 ms bins, median over cells that fired) of every method.

    python bench/bench_cadecon_peers.py --lock LOCKFILE   # 120 x 9000 at 30 Hz
    python bench/bench_cadecon_peers.py --populations gcamp6f:30:120:9000,ogb1:100:80:18000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)

import calab  # noqa: E402
from calab.cadecon.initialization import noise_sigma  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_oasis_worker.py"
OASIS_VENV_VAR = "CALAB_OASIS_VENV"


def oasis_python(create: bool = True) -> Path | None:
    """The OASIS venv's interpreter, created with ``pip install oasis-deconv`` when missing."""
    root = Path(os.environ.get(OASIS_VENV_VAR, REPO_ROOT / ".venv-oasis"))
    python = root / "bin" / "python"
    check = [str(python), "-c", "import oasis.functions"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    if not create:
        return None
    try:
        venv.create(root, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "oasis-deconv"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"note: could not prepare the OASIS venv at {root} ({exc}); OASIS is skipped", file=sys.stderr)
        return None
    return python if subprocess.run(check, capture_output=True).returncode == 0 else None


def spike_correlation(activity: np.ndarray, spikes: np.ndarray, fs: float) -> float:
    width = max(1, round(0.1 * fs))
    usable = activity.shape[-1] // width * width
    a = np.asarray(activity, dtype=np.float64)[:, :usable].reshape(len(activity), -1, width).sum(-1)
    b = spikes[:, :usable].reshape(len(spikes), -1, width).sum(-1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    fired = (spikes.sum(1) > 0) & (den > 0)
    return float(np.median((a * b).sum(1)[fired] / den[fired])) if fired.any() else math.nan


def population(text: str) -> dict[str, Any]:
    preset, fs, cells, frames = text.split(":")
    return dict(preset=preset, fs=float(fs), cells=int(cells), frames=int(frames))


def run_population(spec: dict[str, Any], args: argparse.Namespace, python: Path | None) -> dict[str, Any]:
    config = getattr(calab.presets, spec["preset"])(num_cells=spec["cells"], num_timepoints=spec["frames"],
                                                    fs_hz=spec["fs"], seed=args.seed)
    sim = calab.simulate(config)
    traces = np.asarray(sim.traces, dtype=np.float64)
    spikes = np.stack([np.asarray(c.spikes, dtype=np.float64) for c in sim.ground_truth])
    fs = spec["fs"]
    true = (config.kernel.tau_rise_s, config.kernel.tau_decay_s)
    row: dict[str, Any] = {**spec, "true_tau_rise": true[0], "true_tau_decay": true[1]}

    calab.run_cadecon(traces[:4, : min(traces.shape[1], 3000)], fs, backend=args.backend, progress=False)  # warm-up
    yardstick = calab.run_deconvolution(traces, fs, *true, noise_sigma(traces), conv_mode="banded", progress=False)
    row["fista_true_corr"] = spike_correlation(np.asarray(yardstick), spikes, fs)

    # The runs alternate (ours, then OASIS, ``--repeats`` times), so a change in the machine's
    # load hits both sides alike; medians are reported.
    row["load_average_before"] = os.getloadavg()
    times, result, oasis_times = [], None, {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.npy"
        np.save(path, traces)
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = calab.run_cadecon(traces, fs, backend=args.backend, progress=False)
            times.append(time.perf_counter() - started)
            if python is not None:
                done = subprocess.run([str(python), str(WORKER), str(path), str(Path(tmp) / "out")],
                                      capture_output=True, text=True, check=True)
                for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    oasis_times.setdefault(name, []).append(seconds)
        row["load_average_after"] = os.getloadavg()
        row["cadecon_s"] = float(np.median(times))
        row["cadecon_runs_s"] = times
        row["cadecon_taus"] = (result.metadata["tau_rise"], result.metadata["tau_decay"])
        row["cadecon_corr"] = spike_correlation(np.asarray(result.activity), spikes, fs)
        for name, seconds in oasis_times.items():
            row[f"oasis_{name}_s"] = float(np.median(seconds))
            row[f"oasis_{name}_runs_s"] = seconds
            row[f"oasis_{name}_corr"] = spike_correlation(np.load(Path(tmp) / f"out_{name}.npy"), spikes, fs)
            row[f"ratio_vs_oasis_{name}"] = row[f"oasis_{name}_s"] / row["cadecon_s"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| population | run_cadecon s | OASIS AR(1) s | OASIS AR(2) s | speed vs AR(1) / AR(2) "
             "| corr. run_cadecon | AR(1) | AR(2) | FISTA true kernel | learned τr / τd (true) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        get = (lambda key, fmt: format(r[key], fmt) if key in r else "n/a")
        lines.append(
            f"| {r['preset']} {r['fs']:g} Hz, {r['cells']} x {r['frames']} | {r['cadecon_s']:.2f} | {get('oasis_ar1_s', '.2f')} "
            f"| {get('oasis_ar2_s', '.2f')} | {get('ratio_vs_oasis_ar1', '.2f')}x / {get('ratio_vs_oasis_ar2', '.2f')}x "
            f"| {r['cadecon_corr']:.3f} | {get('oasis_ar1_corr', '.3f')} | {get('oasis_ar2_corr', '.3f')} "
            f"| {r['fista_true_corr']:.3f} | {r['cadecon_taus'][0]:.3f} / {r['cadecon_taus'][1]:.3f} "
            f"({r['true_tau_rise']:.3f} / {r['true_tau_decay']:.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", default="gcamp6f:30:120:9000",
                        help="comma-separated preset:fs:cells:frames (default gcamp6f:30:120:9000)")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of ours and OASIS (medians)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-oasis", action="store_true", help="time run_cadecon only")
    parser.add_argument("--json", help="write the rows here")
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)
    python = None if args.no_oasis else oasis_python()
    rows = []
    for text in args.populations.split(","):
        rows.append(run_population(population(text), args, python))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    loads = [r["load_average_before"][0] for r in rows] + [r["load_average_after"][0] for r in rows]
    print(f"{args.repeats} alternating runs per method, medians; load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

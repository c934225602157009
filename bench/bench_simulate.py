#!/usr/bin/env python
"""Time calab.simulate against the published calab 0.3.0, side by side.

Usage::

    python bench/bench_simulate.py                      # 1000 cells x 10000 frames
    python bench/bench_simulate.py --cells 200 --frames 9000 --repeats 5
    python bench/bench_simulate.py --reference-python /path/to/other/venv/bin/python

Ours runs in this process.  The reference runs in a subprocess of a separate interpreter
(default: ``.venv-ref/bin/python`` next to this repository) started in isolated mode
(``-I``, from a temporary directory) so that it imports its own installed ``calab``, never
this checkout.  Both sides do one untimed warm-up run and then ``--repeats`` timed runs of
the same config; the table reports the best and the median wall time.

If the reference interpreter is missing or fails, its rows say
``reference not available: <why>`` and the script still reports our timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lock import add_lock_option, hold_lock  # noqa: E402  (bench/_lock.py)

DEFAULT_REFERENCE_PYTHON = REPO_ROOT / ".venv-ref" / "bin" / "python"

# Scenario name -> SimulationConfig keyword overrides (besides cells/frames/seed).
SCENARIOS: dict[str, dict] = {
    "default": {},
    "shot_noise": {"noise": {"snr": 8.0, "shot_noise_enabled": True}},
}

# Runs inside the reference interpreter: prints one JSON line with the timings.
_REFERENCE_SCRIPT = r"""
import json, sys, time
import calab
request = json.loads(sys.argv[1])
config = calab.SimulationConfig.model_validate(request["config"])
calab.simulate(config.model_copy(update={"num_cells": 2, "num_timepoints": 100}))  # warm-up
times = []
for _ in range(request["repeats"]):
    start = time.perf_counter()
    result = calab.simulate(config)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "module": calab.__file__,
                  "version": getattr(calab, "__version__", "?"),
                  "shape": list(result.traces.shape)}))
"""


def config_dict(cells: int, frames: int, seed: int, overrides: dict) -> dict:
    return {"num_cells": cells, "num_timepoints": frames, "seed": seed, **overrides}


def time_ours(config: dict, repeats: int) -> list[float]:
    import calab

    calab.simulate(**{**config, "num_cells": 2, "num_timepoints": 100})  # warm-up: imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = calab.simulate(**config)
        times.append(time.perf_counter() - start)
    assert result.traces.shape == (config["num_cells"], config["num_timepoints"])
    return times


def time_reference(
    python: Path, config: dict, repeats: int, timeout: float
) -> tuple[list[float] | None, str]:
    """Timings from the reference interpreter, or (None, reason)."""
    if not python.exists():
        return None, f"reference not available: {python} does not exist"
    request = json.dumps({"config": config, "repeats": repeats})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    try:
        completed = subprocess.run(
            [str(python), "-I", "-c", _REFERENCE_SCRIPT, request],
            cwd=tempfile.gettempdir(),  # never import this checkout's calab
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"reference not available: {type(exc).__name__}: {exc}"
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"reference not available: exit {completed.returncode}: {last}"
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    module = Path(report["module"]).resolve()
    if REPO_ROOT in module.parents and ".venv-ref" not in module.parts:
        return None, f"reference not available: it imported this checkout ({module})"
    return report["times"], f"reference: calab {report['version']} from {module.parent}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--reference-python", type=Path, default=DEFAULT_REFERENCE_PYTHON)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed for the reference subprocess per scenario")
    add_lock_option(parser)
    args = parser.parse_args(argv)
    hold_lock(args.lock)

    import numpy
    import scipy

    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(f"calab.simulate benchmark: {args.cells} cells x {args.frames} frames, "
          f"best/median of {args.repeats} runs after a warm-up")
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
          f"{os.cpu_count()} CPU(s)")
    rows = []
    notes = []
    for name in names:
        config = config_dict(args.cells, args.frames, args.seed, SCENARIOS[name])
        ours = time_ours(config, args.repeats)
        reference, note = time_reference(args.reference_python, config, args.repeats, args.timeout)
        notes.append(f"[{name}] {note}")
        rows.append((name, "calab (this repo)", ours))
        rows.append((name, "calab 0.3.0 (reference)", reference))

    cell_frames = args.cells * args.frames
    header = (f"{'scenario':<12} {'implementation':<25} {'best s':>8} {'median s':>9} "
              f"{'Mcell-frames/s':>15} {'speed-up':>9}")
    print()
    print(header)
    print("-" * len(header))
    for i in range(0, len(rows), 2):
        (name, label, ours), (_, ref_label, reference) = rows[i], rows[i + 1]
        speedup = f"{min(reference) / min(ours):.2f}x" if reference else ""
        for row_label, times, extra in ((label, ours, speedup), (ref_label, reference, "")):
            if times:
                print(f"{name:<12} {row_label:<25} {min(times):>8.3f} {statistics.median(times):>9.3f} "
                      f"{cell_frames / min(times) / 1e6:>15.1f} {extra:>9}")
            else:
                print(f"{name:<12} {row_label:<25} {'n/a':>8} {'n/a':>9} {'':>15} {'':>9}")
    print()
    for note in notes:
        print(note)
    print("speed-up = reference best / ours best (higher is better for us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

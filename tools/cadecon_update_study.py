#!/usr/bin/env python
"""Is the CaDecon kernel update itself biased?  Two measurements on simulated populations.

    python tools/cadecon_update_study.py --cases jgcamp8f,ogb1,gcamp6s,gcamp6f,ogb1*3
    python tools/cadecon_update_study.py --cases jgcamp8f,gcamp6f --loop 6 --upsample 10

**update** (one step, at the true kernel): the kernel update applied to three spike trains
of the same population,

1. the app's update (spec ``indeca.md`` §6.4 step 3: free kernel at the frame rate by
   ``estimate_kernels``, bi-exponential fit at ``t = i/fs``) fed the simulation's *true*
   frame counts: whatever error remains is the update's own;
2. the same update fed the counts of ``solve_traces`` run with the true kernel (the loop's
   inference at u = 3);
3. a free kernel at the solver's own rate (``u·fs``) from its binary spike train and its
   working trace (the same model the solver fits, so it carries no frame-averaging bias),
   fitted at ``t = i/(u·fs)``.

**loop** (``--loop N``): update 3 iterated ``N`` times from the loop's autocovariance
start, without warm starts: where an unbiased update takes the rise.

Results are in docs/cadecon.md, "Why the rise time is not recovered".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent))

from eval_cadecon import scenario, simulate  # noqa: E402

from calab.backends import get_backend  # noqa: E402
from calab.cadecon import _blocks  # noqa: E402
from calab.cadecon.config import DeconConfig  # noqa: E402
from calab.cadecon.initialization import autocovariance_taus  # noqa: E402
from calab.cadecon.shape import tau_to_shape  # noqa: E402
from calab.indeca import kernel_estimation  # noqa: E402
from calab.indeca import solve as indeca_solve  # noqa: E402
from calab.indeca.biexp import fit_biexponentials  # noqa: E402

UPSAMPLE = 3  # the loop's default at 30 Hz (upsample_target 100 Hz); --upsample changes it
GROUPS = 4  # cells are split into this many "subsets"; the median over them is the update
SETTINGS = DeconConfig().resolved()


def solve_with_binary(raw: np.ndarray, taus: tuple[float, float], fs: float, upsample: int) -> dict:
    """The loop's trace inference, keeping the up-rate binary train and working trace."""
    params = dict(tau_rise=taus[0], tau_decay=taus[1], fs=fs, factor=upsample, max_iters=SETTINGS.trace_max_iters,
                  tol=SETTINGS.trace_tol, lambda_=0.0, hp=True, lp=True, noise_constrained=True, keep_up=True)
    return indeca_solve._solve_block(get_backend("numpy"), raw, None, params)


def nonnegative_kernel(traces, spikes, alphas, baselines, length: int) -> np.ndarray:
    """Exact non-negative least-squares free kernel (spec §3's problem, solved to the end)."""
    gram, rhs = kernel_estimation.gram_terms(kernel_estimation.KernelSubset(traces, spikes, alphas, baselines), length)
    factor = np.linalg.cholesky(gram + 1e-9 * np.trace(gram) / length * np.eye(length))
    kernel, _ = nnls(factor.T, np.linalg.solve(factor, rhs), maxiter=50 * length)
    return kernel.astype(np.float32)


def merged_fit(kernels: list[np.ndarray], rate: float) -> tuple[float, float]:
    fits = fit_biexponentials(np.stack(kernels), rate, refine=True, skip=0)
    return float(np.median(fits.tau_rise)), float(np.median(fits.tau_decay))


def app_update(filtered, spikes, alphas, baselines, groups, length: int, fs: float) -> tuple[float, float]:
    jobs = []
    for rows in groups:
        rows = rows[(alphas[rows] != 0) & (spikes[rows].sum(axis=1) > 0)]
        jobs.append(_blocks.KernelJob(filtered[rows], spikes[rows], alphas[rows], baselines[rows]))
    kernels = _blocks.estimate_kernels(jobs, length, SETTINGS, None, "numpy")
    return merged_fit(list(kernels), fs)


def up_rate_update(solved: dict, groups, length: int, fs: float, upsample: int) -> tuple[float, float]:
    kernels = []
    for rows in groups:
        rows = rows[(solved["alpha"][rows] != 0) & (solved["s_binary"][rows].sum(axis=1) > 0)]
        kernels.append(nonnegative_kernel(solved["work_up"][rows], solved["s_binary"][rows],
                                          solved["alpha"][rows], solved["baseline"][rows], length))
    return merged_fit(kernels, fs * upsample)


def peak_error(taus: tuple[float, float], true: tuple[float, float]) -> str:
    return f"{tau_to_shape(*taus)[0] / tau_to_shape(*true)[0] - 1:+.0%}"


def errors(taus: tuple[float, float], true: tuple[float, float]) -> str:
    return f"{taus[0]:.3f} / {taus[1]:.3f} | {peak_error(taus, true)} | {taus[1] / true[1] - 1:+.0%}"


def study(case: str, cells: int, minutes: float, seed: int, loop: int, upsample: int,
          poisson_hz: float | None = None) -> None:
    name, _, speed = case.partition("*")
    spec = scenario(name, name, speed=float(speed or 1), poisson_hz=poisson_hz)
    sim, true = simulate(spec, cells, minutes, seed)
    fs = spec["fs"]
    raw = np.asarray(sim.traces, dtype=np.float64)
    groups = np.array_split(np.arange(cells), GROUPS)
    label = name + (f" x{speed}" if speed else "") + (f" Poisson {poisson_hz:g} Hz" if poisson_hz else "")
    solved = solve_with_binary(raw, true, fs, upsample)
    frame_length = math.ceil(5 * true[1] * fs)
    truth = app_update(solved["filtered_trace"], np.asarray(sim.spikes, np.float32), np.ones(cells),
                       solved["baseline"], groups, frame_length, fs)
    app = app_update(solved["filtered_trace"], solved["s_counts"], solved["alpha"], solved["baseline"],
                     groups, frame_length, fs)
    up = up_rate_update(solved, groups, frame_length * upsample, fs, upsample)
    for what, taus in (("app update, true counts", truth), ("app update, solver counts", app),
                       ("up-rate update, solver binary", up)):
        print(f"| {label} | {true[0]:.3f} / {true[1]:.3f} | {what} | {errors(taus, true)} |", flush=True)
    if loop:
        taus = autocovariance_taus(raw, fs).starting_taus()  # the loop's start
        length = math.ceil(5 * taus[1] * fs) * upsample
        trail = [f"start {peak_error(taus, true)}"]
        for _ in range(loop):
            taus = up_rate_update(solve_with_binary(raw, taus, fs, upsample), groups, length, fs, upsample)
            trail.append(peak_error(taus, true))
        print(f"| {label} | up-rate loop, peak-time error per iteration | {', '.join(trail)} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="jgcamp8f,ogb1,gcamp6s,gcamp6f,ogb1*3", help="presets, each optionally 'name*speed'")
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loop", type=int, default=0, help="also iterate the up-rate update this many times")
    parser.add_argument("--upsample", type=int, default=UPSAMPLE, help="the solves' upsampling factor")
    parser.add_argument("--poisson", type=float, default=None, help="Poisson spikes at this rate instead of the bursts")
    args = parser.parse_args(argv)
    print("| case | true τr / τd (s) | update | fitted τr / τd (s) | peak-time error | τd error |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        study(case, args.cells, args.minutes, args.seed, args.loop, args.upsample, args.poisson)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``calab demo``: simulate a dataset, deconvolve it, report accuracy and speed.

The science (simulation, λ, scores) is :mod:`calab.demo`; this module times and prints.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from calab.cli._common import (
    CommandError,
    backend_arg,
    kernel_source,
    plot_path,
    resolve_backend_name,
    solve,
    terminal_progress,
    write_figure,
)
from calab.cli._parsing import add_backend, add_plot, command_parser, positive_float


def add_parser(commands: Any) -> None:
    demo = command_parser(
        commands, "demo", help="Simulate data, deconvolve it, report accuracy and speed",
        description="Simulate GCaMP6f cells with known spikes, deconvolve them with the true kernel and "
                    "then learn the kernel from the data (CaDecon), and report how well the inferred "
                    "activity matches the true spikes and how fast it ran.",
        examples="""\
examples:
  calab demo                                  # 200 cells x 5 min at 30 Hz on the best backend
  calab demo --cells 20 --frames 3000 --plot demo.png
  calab demo --backend numpy --cadecon-cells 0  # the CPU, without the kernel-learning part
""",
    )
    demo.add_argument("--cells", type=int, default=200, help="number of simulated cells (default 200)")
    demo.add_argument("--frames", type=int, default=9000, help="frames per cell (default 9000 = 5 min at 30 Hz)")
    demo.add_argument("--fs", type=positive_float, default=30.0, help="frame rate in Hz (default 30)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    demo.add_argument("--cadecon-cells", type=int, default=50,
                      help="cells for the automated (kernel-learning) part; 0 skips it (default 50)")
    add_plot(demo)
    demo.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    add_backend(demo)
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from calab.backends import backend_info, get_backend
    from calab.demo import noise_scaled_lambda, score_bin_width, simulate_population, spike_correlation

    if args.cells < 1 or args.frames < 16:
        raise CommandError("--cells must be >= 1 and --frames >= 16.")
    backend = backend_arg(args)
    backend_name = resolve_backend_name(backend)  # fail early on an unusable backend
    figure_path = plot_path(args, [])

    minutes = args.frames / args.fs / 60
    print(
        f"calab demo: {args.cells} simulated GCaMP6f cells x {args.frames} frames at {args.fs:g} Hz "
        f"({minutes:.1f} min each, seed {args.seed})"
    )
    started = time.perf_counter()
    population = simulate_population(args.cells, args.frames, args.fs, args.seed)
    simulate_s = time.perf_counter() - started
    traces, fs = population.traces, population.fs
    tau_rise, tau_decay = population.tau_rise, population.tau_decay
    print(f"  simulated in {simulate_s:.2f} s")

    lam = noise_scaled_lambda(traces)
    print(f"Deconvolving on backend '{backend_name}' ({backend_info(backend_name).reason})")
    print(f"  kernel tau_rise {tau_rise} s, tau_decay {tau_decay} s; lambda {lam:.3g} (1 x noise SD)")
    compiled = get_backend(backend_name).compiles_per_shape
    if not compiled:
        # Numba kernels compile per dtype, not per shape: a tiny untimed call absorbs it.
        solve(traces[:1, : min(256, traces.shape[1])], fs, tau_rise, tau_decay, lam, full=False, backend=backend)
    started = time.perf_counter()
    activity = solve(traces, fs, tau_rise, tau_decay, lam, full=False, backend=backend, label="demo")
    solve_s = time.perf_counter() - started
    if compiled:
        # JAX/CuPy compile for each new shape; the second call shows the steady state a
        # user gets on every later call with data of this size.
        print(f"  first call {solve_s:.2f} s (includes one-time compilation for this shape)")
        started = time.perf_counter()
        activity = solve(traces, fs, tau_rise, tau_decay, lam, full=False, backend=backend, label="demo")
        solve_s = time.perf_counter() - started

    width = score_bin_width(fs)
    decon_r = spike_correlation(activity, population.spikes, width)
    raw_r = spike_correlation(traces, population.spikes, width)
    with_spikes = int(np.isfinite(decon_r).sum())
    recorded_s = args.frames / fs * args.cells
    print(f"  done in {solve_s:.2f} s: {traces.size / solve_s:,.0f} samples/s, "
          f"{args.cells / solve_s:,.1f} cells/s, {recorded_s / solve_s:,.0f}x real time")
    if with_spikes == 0:
        print("Accuracy: no simulated cell fired; run with more --frames.")
        return 0
    print(f"Accuracy vs ground truth ({with_spikes} cells with spikes, 100 ms bins, median over cells):")
    print(f"  correlation of inferred activity with true spikes: {np.nanmedian(decon_r):.3f}")
    print(f"  correlation of raw fluorescence with true spikes:  {np.nanmedian(raw_r):.3f}")
    learned = None
    if args.cadecon_cells > 0:
        learned = run_cadecon_part(population, decon_r, args.cadecon_cells, backend, width)
    if figure_path is not None:
        plot_demo(population, lam, learned, args, figure_path)
    print("Next: 'calab convert' brings in CaImAn/Minian/suite2p/NWB output; 'calab doctor' lists backends.")
    return 0


def run_cadecon_part(population: Any, true_kernel_r: np.ndarray, max_cells: int, backend: str | None,
                     width: int) -> Any:
    """The automated path: learn the kernel with run_cadecon and compare it with the true one."""
    from calab.cadecon import run_cadecon
    from calab.cadecon.shape import tau_to_shape
    from calab.demo import spike_correlation

    cells = min(max_cells, population.traces.shape[0])
    true_taus = (population.tau_rise, population.tau_decay)
    print(f"Automated deconvolution (CaDecon, kernel learned from the data) on {cells} cells:")
    started = time.perf_counter()
    result = run_cadecon(population.traces[:cells], population.fs, backend=backend, progress=terminal_progress())
    elapsed = time.perf_counter() - started
    meta = result.metadata
    if meta["tau_rise"] is None:
        print("  no kernel could be learned (see the warnings above)")
        return None
    learned = (meta["tau_rise"], meta["tau_decay"])
    true_peak, learned_peak = tau_to_shape(*true_taus)[0], tau_to_shape(*learned)[0]
    print(f"  done in {elapsed:.1f} s (kernel {kernel_source(meta)})")
    print(f"  kernel     true: tau_rise {true_taus[0]:.3f} s, tau_decay {true_taus[1]:.3f} s, peak at {1000 * true_peak:.0f} ms")
    print(f"          learned: tau_rise {learned[0]:.3f} s, tau_decay {learned[1]:.3f} s, peak at {1000 * learned_peak:.0f} ms "
          f"(decay {100 * (learned[1] / true_taus[1] - 1):+.1f}%, peak {100 * (learned_peak / true_peak - 1):+.1f}%)")
    learned_r = spike_correlation(result.activity, population.spikes[:cells], width)
    print(f"  correlation with true spikes ({meta['activity_kind']} at the learned kernel): {np.nanmedian(learned_r):.3f}"
          f"  vs FISTA with the true kernel: {np.nanmedian(true_kernel_r[:cells]):.3f}")
    return result


def plot_demo(population: Any, lam: float, learned: Any, args: argparse.Namespace, path: Any) -> None:
    """``--plot``: the learned kernel against the true one and a few cells (or, without the
    CaDecon part, FISTA with the true kernel)."""
    from calab.deconvolution import run_deconvolution_full

    true_taus = (population.tau_rise, population.tau_decay)
    if learned is not None:
        traces = population.traces[: len(learned.activity)]
        figure = learned.plot(traces, count=args.plot_cells, given_taus=true_taus, backend=backend_arg(args),
                              title="calab demo: kernel learned from simulated GCaMP6f cells (given = true kernel)")
    else:
        full = run_deconvolution_full(population.traces, population.fs, *true_taus, lam, backend=backend_arg(args),
                                      progress=False)
        figure = full.plot(population.traces, population.fs, count=args.plot_cells,
                           title="calab demo: FISTA with the true kernel on simulated GCaMP6f cells")
    write_figure(figure, path, args.force)

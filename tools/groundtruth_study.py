"""Where run_cadecon's timing and accuracy stand on the development set (a study tool).

The development set is a folder of real recordings with simultaneous electrophysiology and
its scorer (``score.py``), kept outside the repository (``../shared/groundtruth`` beside the
checkout by default).  Three studies, each printing a Markdown table (docs/cadecon.md,
"How far the development set lets the method go"):

``onset``
    A least-squares regression of each recording's trace on its own true spike counts
    (a free response from 12 frames before the spike to 60 after): where the response
    reaches half its peak and its peak, relative to the spike.  A response that is
    already half-way up *before* the spike says the recording's clocks are offset: no
    causal method can place those events on time.
``timing``
    run_cadecon with defaults, one call per neuron; r25 of its activity moved earlier by
    fractions of a frame and by fixed times.  A gain from moving earlier means the
    recordings' responses start later than the kernel (which starts at the spike).
``ceiling``
    FISTA (λ = the noise SD, the default continuous solve) at every bi-exponential kernel
    of a grid, per neuron: the best r25 any kernel of the family reaches there, an upper
    bound of what kernel estimation alone can give.
``rates``
    The fast recordings slowed down to the rates most two-photon data have (30 and 60 Hz
    by default), where their timing is known to be right (lag 0 at the native rate):
    r25 and lag of run_cadecon, and with ``--oasis`` of automated OASIS AR(2), for a frame
    that integrates its whole exposure (``mean``) and for a scan that reads the cell once,
    at the start, middle or end of the frame (``start``, ``mid``, ``end``).

    python tools/groundtruth_study.py onset --datasets DS31
    python tools/groundtruth_study.py timing
    python tools/groundtruth_study.py ceiling --datasets DS07 DS10
    python tools/groundtruth_study.py rates --datasets DS10 DS12 DS31 --oasis
    python tools/groundtruth_study.py rates --rates 7.5 15 30 60 --datasets DS10 DS12 DS31 --oasis \
        --figure docs/images/groundtruth-rates.png
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

import calab
from calab.noise import noise_sd

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "groundtruth"
FRAME_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
TIME_SHIFTS_S = (0.01, 0.02, 0.04)
GRID_RISE_S = (0.003, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
GRID_DECAY_S = (0.1, 0.2, 0.4, 0.8, 1.6)
SAMPLINGS = ("mean", "start", "mid", "end")
REPO = Path(__file__).resolve().parents[1]


def _scorer(folder: Path):
    spec = importlib.util.spec_from_file_location("groundtruth_score", folder / "score.py")
    if spec is None or not (folder / "score.py").is_file():
        raise SystemExit(f"no score.py in {folder}: pass --groundtruth FOLDER")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _neurons(score, folder: Path, datasets: list[str], max_neurons: int, max_minutes: float):
    """Per neuron: dataset, name and its recordings at its first frame rate (as score.py groups them)."""
    for name in datasets:
        if not (folder / f"{name}.npz").is_file():
            raise SystemExit(f"no {name}.npz in {folder}")
        _, neurons = score.load(name, max_neurons, max_minutes)
        for neuron, recordings in neurons:
            by_rate = defaultdict(list)
            for rec in recordings:
                by_rate[round(rec["fs"], 3)].append(rec)
            for group in by_rate.values():
                yield name, neuron, group


def _weighted(score, activities, group, key: str = "r25", fs: float | None = None) -> float:
    """score.py's duration-weighted ``key`` over a neuron's recordings (at rate ``fs`` when the
    activities are not at the recordings' own rate)."""
    scores = [s for s in (score.score_recording(a, fs or r["fs"], r["t0"], r["spikes"])
                          for a, r in zip(activities, group)) if s]
    weights = np.array([s["dur"] for s in scores])
    return float(np.sum(weights * [s[key] for s in scores]) / weights.sum()) if scores else float("nan")


def moved_earlier(activity: np.ndarray, fs: float, seconds: float) -> np.ndarray:
    """``activity`` moved earlier by ``seconds`` (fractional shifts through its cumulative sum,
    so the total is kept and nothing turns negative)."""
    cumulative = np.concatenate([[0.0], np.cumsum(activity)])
    clock = np.arange(activity.size + 1) / fs
    return np.diff(np.interp(clock + seconds, clock, cumulative))


def slowed_down(trace: np.ndarray, fs: float, target_fs: float, sampling: str) -> tuple[np.ndarray, float]:
    """``trace`` recorded at ``fs`` as a slower camera or scan would have recorded it.

    Every ``m = round(fs / target_fs)`` native frames make one new frame (a trailing
    remainder is dropped), so new frame ``k`` covers exactly native frames ``k m`` to
    ``k m + m - 1``: the same clock, the same ``t0``, rate ``fs / m``, and the scorer's
    "frame k covers [t0 + k/fs', t0 + (k+1)/fs')" still holds.

    Parameters
    ----------
    trace : np.ndarray, shape (n_frames,), float
    fs, target_fs : float
        Native and wanted frame rates (Hz); the rate obtained is ``fs / m``.
    sampling : {"mean", "start", "mid", "end"}
        ``"mean"``: the frame integrates its whole exposure.  The others: the cell is read
        once, at the first, middle or last native frame of the new frame (a raster scan
        that reaches the cell's line at that point of the frame).

    Returns
    -------
    slowed : np.ndarray, shape (n_frames // m,), float64
    new_fs : float
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    factor = max(1, int(round(fs / target_fs)))
    blocks = np.asarray(trace, dtype=np.float64)[: trace.size // factor * factor].reshape(-1, factor)
    if sampling == "mean":
        return blocks.mean(axis=1), fs / factor
    column = {"start": 0, "mid": factor // 2, "end": factor - 1}[sampling]
    return blocks[:, column].copy(), fs / factor


def _oasis_ar2(traces: list[np.ndarray]) -> list[np.ndarray] | None:
    """Automated OASIS AR(2) on each trace, in the OASIS venv (bench/_oasis_worker.py)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_cadecon_peers import WORKER, oasis_python

    python = oasis_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", *traces)
        subprocess.run([str(python), str(WORKER), str(Path(tmp) / "in.npz"), str(Path(tmp) / "out"),
                        "--orders", "2"], check=True, capture_output=True)
        with np.load(Path(tmp) / "out_ar2.npz") as out:
            return [out[f"arr_{i}"] for i in range(len(traces))]


def _cadecon(traces: list[np.ndarray], fs: float) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = calab.run_cadecon(traces, fs, progress=False, backend="numpy")
    return [np.asarray(a, dtype=np.float64).ravel() for a in result.activity]


def study_rates(score, neurons, targets=(30.0, 60.0), oasis: bool = False, figure: Path | None = None) -> None:
    cells = defaultdict(list)  # (method, target, sampling, dataset) -> [(r25, lag, fs)]
    for dataset, neuron, group in neurons:
        for target in targets:
            for sampling in SAMPLINGS:
                slowed = [slowed_down(r["trace"], r["fs"], target, sampling) for r in group]
                fs = slowed[0][1]
                traces = [trace for trace, _ in slowed]
                methods = {"run_cadecon": _cadecon(traces, fs)}
                if oasis and sampling in ("mean", "start"):
                    methods["OASIS AR(2)"] = _oasis_ar2(traces)
                for method, activities in methods.items():
                    if activities is not None:
                        cells[(method, target, sampling, dataset)].append(
                            (_weighted(score, activities, group, "r25", fs), _weighted(score, activities, group, "lag", fs), fs))
        print(f"  {dataset} {neuron} done", file=sys.stderr, flush=True)
    summary = {key: tuple(float(v) for v in np.median(np.array(values), axis=0)) for key, values in cells.items()}
    datasets = list(dict.fromkeys(d for *_, d in summary))
    print("| method | target rate | sampling | " + " | ".join(f"{d}: r25 / lag (rate)" for d in datasets) + " |")
    print("|---|---|---|" + "---|" * len(datasets))
    for method, target, sampling in dict.fromkeys(k[:3] for k in summary):
        parts = [f"{r25:.3f} / {lag:+.1f} ({rate:.0f} Hz)"
                 for r25, lag, rate in (summary[(method, target, sampling, d)] for d in datasets)]
        print(f"| {method} | {target:g} Hz | {sampling} | " + " | ".join(parts) + " |", flush=True)
    if figure is not None:
        plot_rates(summary, figure)


def plot_rates(summary: dict, path: Path) -> None:
    """Median r25 and lag against the frame rate, one column per dataset (matplotlib).

    ``summary`` maps ``(method, target rate, sampling, dataset)`` to the medians over
    neurons ``(r25, lag in bins, rate obtained)``.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(key[3] for key in summary))
    styles = {("run_cadecon", "mean"): ("C0", "-", "o"), ("run_cadecon", "start"): ("C0", "--", "s"),
              ("OASIS AR(2)", "mean"): ("C3", "-", "o"), ("OASIS AR(2)", "start"): ("C3", "--", "s")}
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.6 * len(datasets), 5.6), sharex=True, squeeze=False)
    for column, dataset in enumerate(datasets):
        for (method, sampling), (color, line, marker) in styles.items():
            points = sorted((v[2], v[0], v[1]) for k, v in summary.items()
                            if k[0] == method and k[2] == sampling and k[3] == dataset)
            if not points:
                continue
            rate, r25, lag = np.array(points).T
            frames = "integrating frames" if sampling == "mean" else "read at the frame's start"
            label = f"{method}, {frames}"
            axes[0, column].plot(rate, r25, color=color, linestyle=line, marker=marker, label=label)
            axes[1, column].plot(rate, lag, color=color, linestyle=line, marker=marker, label=label)
        axes[0, column].set_title(dataset)
        axes[0, column].set_ylim(0, 1)
        axes[1, column].axhline(0, color="0.6", linewidth=0.8)
        axes[1, column].set_ylim(-3.3, 3.3)
        axes[1, column].set_xscale("log")
        axes[1, column].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axes[1, column].set_xticks([7.5, 15, 30, 60], ["7.5", "15", "30", "60"])
        axes[1, column].set_xlabel("frame rate (Hz)")
    axes[0, 0].set_ylabel("r25 (median over neurons)")
    axes[1, 0].set_ylabel("lag (40-ms bins; > 0: late)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Fast real recordings slowed down on their own clock", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fista(traces, fs: float, taus: tuple[float, float]) -> list[np.ndarray]:
    out = []
    for trace in traces:
        row = trace.reshape(1, -1)
        result = calab.run_deconvolution_full(row, fs, taus[0], taus[1], float(noise_sd(row)[0]),
                                              conv_mode="banded", backend="numpy", progress=False)
        out.append(np.asarray(result.activity, dtype=np.float64).ravel())
    return out


def study_onset(score, neurons) -> None:
    pre, post = 12, 60
    print("| dataset | neuron | fs (Hz) | half-rise (ms from spike) | peak (ms) |")
    print("|---|---|---|---|---|")
    for dataset, neuron, group in neurons:
        for rec in group:
            fs, trace = rec["fs"], rec["trace"]
            counts = np.histogram(rec["spikes"], bins=rec["t0"] + np.arange(trace.size + 1) / fs)[0].astype(float)
            design = np.column_stack([np.roll(counts, lag) for lag in range(-pre, post)] + [np.ones(trace.size)])
            edge = post + pre  # rolled-in samples at both ends are left out
            response = np.linalg.lstsq(design[edge:-edge], trace[edge:-edge], rcond=None)[0][:-1]
            peak = int(np.argmax(response))
            half = int(np.argmax(response >= 0.5 * response[peak]))
            print(f"| {dataset} | {neuron} | {fs:.1f} | {(half - pre) / fs * 1e3:+.0f} | {(peak - pre) / fs * 1e3:+.0f} |")


def study_timing(score, neurons) -> None:
    rows = defaultdict(list)
    for dataset, neuron, group in neurons:
        fs = float(group[0]["fs"])
        activities = _cadecon([r["trace"] for r in group], fs)
        shifts = [f / fs for f in FRAME_SHIFTS] + list(TIME_SHIFTS_S)
        rows[dataset].append([_weighted(score, [moved_earlier(a, fs, s) for a in activities], group)
                              for s in shifts])
        print(f"  {dataset} {neuron}: " + " ".join(f"{v:.3f}" for v in rows[dataset][-1]), file=sys.stderr, flush=True)
    heads = [f"{f:g} frame" for f in FRAME_SHIFTS] + [f"{s * 1e3:g} ms" for s in TIME_SHIFTS_S]
    print("| dataset (median r25) | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for dataset, values in rows.items():
        print(f"| {dataset} | " + " | ".join(f"{v:.3f}" for v in np.median(values, axis=0)) + " |")


def study_ceiling(score, neurons) -> None:
    best = defaultdict(list)
    print("| dataset | neuron | best (τr, τd) s | best r25 |")
    print("|---|---|---|---|")
    for dataset, neuron, group in neurons:
        fs = float(group[0]["fs"])
        found = {}
        for rise in GRID_RISE_S:
            for decay in GRID_DECAY_S:
                if rise < decay / 2:
                    found[(rise, decay)] = _weighted(score, _fista([r["trace"] for r in group], fs, (rise, decay)), group)
        taus = max(found, key=found.get)
        best[dataset].append(found[taus])
        print(f"| {dataset} | {neuron} | {taus} | {found[taus]:.3f} |", flush=True)
    for dataset, values in best.items():
        print(f"| {dataset} | median | | {np.median(values):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=("onset", "timing", "ceiling", "rates"))
    parser.add_argument("--groundtruth", type=Path, default=DEFAULT_FOLDER, help="folder with score.py and DSxx.npz")
    parser.add_argument("--datasets", nargs="*", default=["DS07", "DS10", "DS12", "DS31"])
    parser.add_argument("--max-neurons", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=4.0)
    parser.add_argument("--rates", type=float, nargs="*", default=[30.0, 60.0], help="rates study: target rates (Hz)")
    parser.add_argument("--oasis", action="store_true", help="rates study: also automated OASIS AR(2) (its own venv)")
    parser.add_argument("--figure", type=Path, help="rates study: also draw r25 and lag against the rate (matplotlib)")
    args = parser.parse_args()
    score = _scorer(args.groundtruth)
    neurons = list(_neurons(score, args.groundtruth, args.datasets, args.max_neurons, args.max_minutes))
    if args.study == "rates":
        study_rates(score, neurons, tuple(args.rates), args.oasis, args.figure)
        return
    {"onset": study_onset, "timing": study_timing, "ceiling": study_ceiling}[args.study](score, neurons)


if __name__ == "__main__":
    main()

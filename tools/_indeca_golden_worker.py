"""Worker for ``tools/make_indeca_golden.py``: runs INSIDE the reference venv (``calab==0.3.0``).

Never run it with our venv's python: it imports ``calab`` and must get the published
reference.  It shares the deterministic input generator of ``_golden_worker.py``
(:func:`calcium_traces`), runs the reference's InDeCa functions (``solve_trace``,
``estimate_kernel``, ``fit_biexponential``, the private ``_solver.py_seed_trace``) and
writes one compressed ``.npz`` per case plus ``manifest.json`` into ``OUTDIR/indeca/``::

    <reference python> tools/_indeca_golden_worker.py OUTDIR

Everything in the outputs is produced by the reference; nothing is computed by our code.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calab  # the reference, thanks to the interpreter we are run with  # noqa: E402
import calab._solver as reference_solver  # noqa: E402
from _golden_worker import _check_reference, calcium_traces, double_exponential  # noqa: E402

GCAMP6F = dict(tau_rise=0.1, tau_decay=0.6)


def solve_cases() -> list[dict]:
    """``solve_trace`` cases: (name, traces (n, T) float64, kwargs, warm (n, T) or None)."""
    cases = []

    def add(name, traces, description, warm=None, **kwargs):
        cases.append(dict(name=name, traces=np.atleast_2d(traces), description=description, warm=warm, kwargs=kwargs))

    base = calcium_traces(101, 3, 900, fs=30.0, rate_hz=0.8, noise_sd=0.15, offset=2.0, drift=0.5, **GCAMP6F)
    app = dict(hp_enabled=True, lp_enabled=True)
    add("u1_plain", base, "u=1, no filter, max-PVE", fs=30.0, **GCAMP6F)
    add("u1_filtered", base, "u=1, HP+LP", fs=30.0, **GCAMP6F, **app)
    add("u4_filtered", base, "u=4, HP+LP, max-PVE", fs=30.0, upsample_factor=4, **GCAMP6F, **app)
    add("u4_noise", base, "u=4, HP+LP, noise-constrained", fs=30.0, upsample_factor=4, noise_constrained=True, **GCAMP6F, **app)
    add("u10_app", base, "u=10, HP+LP, noise-constrained (the CaDecon app setting)", fs=30.0, upsample_factor=10, noise_constrained=True, **GCAMP6F, **app)
    add("u10_maxpve", base, "u=10, HP+LP, max-PVE", fs=30.0, upsample_factor=10, **GCAMP6F, **app)
    add("hp_only", base, "u=4, HP only", fs=30.0, upsample_factor=4, hp_enabled=True, **GCAMP6F)
    add("lp_only_noise", base, "u=1, LP only, noise-constrained", fs=30.0, lp_enabled=True, noise_constrained=True, **GCAMP6F)
    add("lambda", base, "u=1, λ=0.05, max_iters=120 (cap 150)", fs=30.0, lambda_=0.05, max_iters=120, **GCAMP6F)
    add("tol_loose", base, "u=4, tol=1e-3", fs=30.0, upsample_factor=4, tol=1e-3, **GCAMP6F, **app)
    first = calab.solve_trace(base[0], fs=30.0, upsample_factor=4, **GCAMP6F, **app)
    warm = np.stack([calab.solve_trace(row, fs=30.0, upsample_factor=4, **GCAMP6F, **app).s_counts for row in base])
    del first
    add("warm_u4", base, "u=4, HP+LP, warm-started from its own previous counts", warm=warm.astype(np.float64), fs=30.0, upsample_factor=4, **GCAMP6F, **app)
    add("warm_u1_noise", base, "u=1, noise-constrained, warm counts", warm=np.stack([calab.solve_trace(row, fs=30.0, noise_constrained=True, **GCAMP6F).s_counts for row in base]).astype(np.float64), fs=30.0, noise_constrained=True, **GCAMP6F)
    fast60 = calcium_traces(102, 3, 1200, fs=60.0, rate_hz=1.0, noise_sd=0.1, offset=0.0, drift=0.3, tau_rise=0.05, tau_decay=0.3)
    add("fs60_u5", fast60, "60 Hz data (jGCaMP8f-like taus), u=5, HP+LP, noise-constrained", fs=60.0, upsample_factor=5, noise_constrained=True, tau_rise=0.05, tau_decay=0.3, **app)
    # traces on which the JAX backend once diverged from 0.3.0 (the AR(2) operator by FFT):
    # gcamp6f at u = 10 (cells 1 and 3) and a short gcamp6s recording (cell 3)
    gcamp6f_u10 = calcium_traces(504, 4, 1800, fs=30.0, rate_hz=1.0, noise_sd=0.1, offset=1.0, drift=0.3, **GCAMP6F)
    add("u10_app_long", gcamp6f_u10, "gcamp6f, 60 s at 30 Hz, u=10, HP+LP, noise-constrained", fs=30.0, upsample_factor=10,
        noise_constrained=True, **GCAMP6F, **app)
    gcamp6s = dict(tau_rise=0.4, tau_decay=1.8)
    short_6s = calcium_traces(503, 6, 300, fs=30.0, rate_hz=1.0, noise_sd=0.1, offset=1.0, drift=0.2, **gcamp6s)
    add("gcamp6s_short_u10", short_6s, "gcamp6s, 10 s at 30 Hz, u=10, HP+LP, noise-constrained", fs=30.0, upsample_factor=10,
        noise_constrained=True, **gcamp6s, **app)
    short = calcium_traces(103, 2, 12, fs=30.0, rate_hz=2.0, noise_sd=0.05, **GCAMP6F)
    add("short_u4", short, "12-sample traces (shorter than the 249-sample kernel), u=4, HP+LP", fs=30.0, upsample_factor=4, **GCAMP6F, **app)
    add("short_u1", short, "12-sample traces, u=1", fs=30.0, **GCAMP6F)
    add("tiny5", np.array([[0.1, 0.5, 0.2, 0.0, 0.3]]), "5-sample trace", fs=30.0, **GCAMP6F)
    add("constant", np.full((1, 300), 3.5), "constant trace, HP+LP, u=4", fs=30.0, upsample_factor=4, **GCAMP6F, **app)
    add("zeros", np.zeros((1, 300)), "all-zero trace, u=10, noise-constrained", fs=30.0, upsample_factor=10, noise_constrained=True, **GCAMP6F, **app)
    return cases


def kernel_cases() -> list[dict]:
    """``estimate_kernel`` cases from real fits of the reference itself."""
    fs = 30.0
    traces = calcium_traces(201, 6, 900, fs=fs, rate_hz=1.0, noise_sd=0.1, offset=1.0, drift=0.3, **GCAMP6F)
    fits = [calab.solve_trace(row, fs=fs, upsample_factor=10, hp_enabled=True, lp_enabled=True, noise_constrained=True, **GCAMP6F) for row in traces]
    spikes = np.stack([f.s_counts for f in fits]).astype(np.float64)
    alphas = np.array([f.alpha for f in fits])
    baselines = np.array([f.baseline for f in fits])
    lengths = np.full(traces.shape[0], traces.shape[1])
    common = dict(traces=traces, spikes=spikes, lengths=lengths, alphas=alphas, baselines=baselines)
    seeds = np.stack([np.asarray(reference_solver.py_seed_trace(row, fs)[0]) for row in traces]).astype(np.float64)
    medians = np.array([float(reference_solver.py_seed_trace(row, fs)[2]) for row in traces])
    truth = double_exponential(0.1, 0.6, fs)[:90].astype(np.float32)
    cases = [
        dict(name="fits_k90", description="6 cells × 900 frames, counts/alpha/baseline from solve_trace u=10, K=90", kernel_length=90, kwargs={}, **common),
        dict(name="fits_k45_tv", description="same, K=45, smooth_lambda=0.01", kernel_length=45, kwargs=dict(smooth_lambda=0.01), **common),
        dict(name="fits_warm", description="same, K=90, warm kernel = 0.8·truth, max_iters=60", kernel_length=90, kwargs=dict(max_iters=60), warm=0.8 * truth, **common),
        dict(name="seed_k45", description="seed-phase kernel: peak seeds, alpha 1, median baselines, K=45, 500 iterations, tol 1e-5, TV 0.001",
             kernel_length=45, kwargs=dict(max_iters=500, tol=1e-5, smooth_lambda=0.001), traces=traces, spikes=seeds,
             lengths=lengths, alphas=np.ones(traces.shape[0]), baselines=medians),
        dict(name="ragged_zero_alpha", description="ragged lengths (900, 500, 300) and one alpha = 0", kernel_length=60, kwargs={},
             traces=np.concatenate([traces[0], traces[1, :500], traces[2, :300]])[None, :], spikes=np.concatenate([spikes[0], spikes[1, :500], spikes[2, :300]])[None, :],
             lengths=np.array([900, 500, 300]), alphas=np.array([alphas[0], 0.0, alphas[2]]), baselines=baselines[:3]),
    ]
    return cases


def biexp_cases(kernels: dict[str, np.ndarray]) -> list[dict]:
    """``fit_biexponential`` cases on synthetic and estimated kernels."""
    fs = 30.0
    t = np.arange(90) / fs

    def template(tr, td, times=t):
        return np.exp(-times / td) - np.exp(-times / tr)

    rng = np.random.default_rng(301)
    clean = (template(0.1, 0.6) / template(0.1, 0.6).max()).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.02, clean.size)).astype(np.float32)
    two = (2 * template(0.1, 0.6) + 0.8 * template(0.01, 0.04)).astype(np.float32)
    t100 = np.arange(150) / 100.0
    c100 = template(0.02, 0.3, t100).astype(np.float32)
    warm_two = calab.BiexpFitResult(0.09, 0.62, 1.0, 1.0, 0.02, 0.05, 0.1, "TwoComponent")
    warm_slow = calab.BiexpFitResult(0.12, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0, "SlowOnly")
    cases = []
    for name, h, f in (("clean", clean, fs), ("noisy", noisy, fs), ("two", two, fs), ("c100", c100, 100.0),
                       ("estimated", kernels["fits_k90"], fs), ("estimated_tv", kernels["fits_k45_tv"], fs),
                       ("seed", kernels["seed_k45"], fs)):
        cases.append(dict(name=f"{name}_refined", h=h, fs=f, kwargs={}))
        cases.append(dict(name=f"{name}_grid", h=h, fs=f, kwargs=dict(refine=False)))
    cases.append(dict(name="two_skip2", h=two, fs=fs, kwargs=dict(skip=2)))
    cases.append(dict(name="noisy_skip3", h=noisy, fs=fs, kwargs=dict(skip=3)))
    cases.append(dict(name="estimated_skip1", h=kernels["fits_k90"], fs=fs, kwargs=dict(skip=1)))
    cases.append(dict(name="noisy_warm_two", h=noisy, fs=fs, kwargs=dict(warm=warm_two)))
    cases.append(dict(name="two_warm_two", h=two, fs=fs, kwargs=dict(warm=warm_two)))
    cases.append(dict(name="estimated_warm_slow", h=kernels["fits_k90"], fs=fs, kwargs=dict(warm=warm_slow)))
    cases.append(dict(name="two_warm_grid", h=two, fs=fs, kwargs=dict(warm=warm_two, refine=False)))
    cases.append(dict(name="zeros", h=np.zeros(30, np.float32), fs=fs, kwargs={}))
    return cases


def seed_cases() -> list[dict]:
    traces = calcium_traces(401, 4, 3000, fs=30.0, rate_hz=0.05, noise_sd=0.1, offset=5.0, drift=0.2, amplitude=3.0, **GCAMP6F)
    return [dict(name="seed_30hz", traces=traces, fs=30.0), dict(name="seed_flat", traces=np.ones((1, 100)), fs=30.0)]


def main(argv: list[str]) -> int:
    _check_reference()
    outdir = Path(argv[1]) / "indeca"
    outdir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, list] = {"solve": [], "kernel": [], "biexp": [], "seed": []}
    for case in solve_cases():
        traces, kwargs, warm = case["traces"], case["kwargs"], case["warm"]
        counts, scalars, seconds = [], [], []
        for i, row in enumerate(traces):
            start = time.perf_counter()
            result = calab.solve_trace(row, **kwargs, warm_counts=None if warm is None else warm[i])
            seconds.append(time.perf_counter() - start)
            counts.append(np.asarray(result.s_counts, dtype=np.float32))
            scalars.append([result.alpha, result.baseline, result.threshold, result.pve, result.iterations, float(result.converged)])
        payload = dict(traces=traces, s_counts=np.stack(counts), scalars=np.asarray(scalars, dtype=np.float64), seconds=np.asarray(seconds))
        if warm is not None:
            payload["warm_counts"] = warm
        np.savez_compressed(outdir / f"solve_{case['name']}.npz", **payload)
        manifest["solve"].append(dict(name=case["name"], description=case["description"], kwargs=kwargs, warm=warm is not None,
                                      iterations=[int(s[4]) for s in scalars]))
    kernels = {}
    for case in kernel_cases():
        warm = case.get("warm")
        h = calab.estimate_kernel(case["traces"].ravel(), case["spikes"].ravel(), case["lengths"], case["alphas"], case["baselines"],
                                  case["kernel_length"], warm_kernel=warm, **case["kwargs"])
        kernels[case["name"]] = np.asarray(h, dtype=np.float32)
        payload = dict(traces_flat=case["traces"].ravel(), spikes_flat=case["spikes"].ravel(), trace_lengths=case["lengths"],
                       alphas=case["alphas"], baselines=case["baselines"], kernel=kernels[case["name"]])
        if warm is not None:
            payload["warm_kernel"] = warm
        np.savez_compressed(outdir / f"kernel_{case['name']}.npz", **payload)
        manifest["kernel"].append(dict(name=case["name"], description=case["description"], kernel_length=case["kernel_length"], kwargs=case["kwargs"]))
    for case in biexp_cases(kernels):
        kwargs = dict(case["kwargs"])
        result = calab.fit_biexponential(case["h"], case["fs"], **kwargs)
        entry = dict(name=case["name"], fs=case["fs"], result=[float(v) for v in result[:7]], fit_mode=str(result[7]),
                     kwargs={k: (list(v[:7]) + [str(v[7])] if k == "warm" else v) for k, v in kwargs.items()})
        entry["result"] = [v if math.isfinite(v) else str(v) for v in entry["result"]]
        np.savez_compressed(outdir / f"biexp_{case['name']}.npz", h=np.asarray(case["h"], dtype=np.float32))
        manifest["biexp"].append(entry)
    for case in seed_cases():
        outputs = [reference_solver.py_seed_trace(row, case["fs"]) for row in case["traces"]]
        np.savez_compressed(outdir / f"seed_{case['name']}.npz", traces=case["traces"],
                            s_counts=np.stack([np.asarray(o[0], dtype=np.float32) for o in outputs]),
                            alpha=np.array([o[1] for o in outputs]), baseline=np.array([o[2] for o in outputs]))
        manifest["seed"].append(dict(name=case["name"], fs=case["fs"]))
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({k: len(v) for k, v in manifest.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Parity measures of our InDeCa functions against the calab 0.3.0 golden fixtures.

Shared by ``tests/test_indeca_golden.py`` and ``bench/bench_indeca.py`` (the parity table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden" / "indeca"

#: the per-cell parity criteria for solve_trace
COUNT_CORRELATION = 0.98
TOTAL_COUNT_RTOL = 0.03
ALPHA_RTOL = 0.03
PVE_ATOL = 0.01
ITERATIONS_RTOL = 0.10


def manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


def load(kind: str, name: str) -> dict:
    with np.load(GOLDEN / f"{kind}_{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def solve_case(name: str, kwargs: dict, backend: str) -> tuple[dict, object]:
    import calab

    case = load("solve", name)
    warm = case.get("warm_counts")
    result = calab.solve_traces(case["traces"], **kwargs, warm_counts=warm, backend=backend)
    return case, result


def cell_metrics(ref_counts: np.ndarray, ref_scalars: np.ndarray, counts: np.ndarray, alpha: float, pve: float, iterations: int) -> dict:
    """The parity measures for one cell, plus whether each criterion holds."""
    ref_total, total = float(ref_counts.sum()), float(counts.sum())
    if ref_counts.std() > 0 and counts.std() > 0:
        corr = float(np.corrcoef(ref_counts, counts)[0, 1])
    else:
        corr = 1.0 if np.array_equal(ref_counts, counts) else 0.0
    ref_alpha, ref_pve, ref_iters = ref_scalars[0], ref_scalars[3], ref_scalars[4]

    def rel(a, b):
        return abs(a - b) / abs(b) if b != 0 else (0.0 if a == 0 else np.inf)

    out = dict(
        corr=corr,
        total_rel=rel(total, ref_total),
        alpha_rel=rel(alpha, ref_alpha),
        pve_abs=abs(pve - ref_pve),
        iter_rel=rel(iterations, ref_iters),
    )
    out["ok"] = (
        corr >= COUNT_CORRELATION
        and out["total_rel"] <= TOTAL_COUNT_RTOL
        and out["alpha_rel"] <= ALPHA_RTOL
        and out["pve_abs"] <= PVE_ATOL
        and out["iter_rel"] <= ITERATIONS_RTOL
    )
    return out


def solve_report(backend: str) -> list[tuple[str, int, dict]]:
    rows = []
    for entry in manifest()["solve"]:
        case, result = solve_case(entry["name"], entry["kwargs"], backend)
        for i in range(case["traces"].shape[0]):
            rows.append((entry["name"], i, cell_metrics(case["s_counts"][i], case["scalars"][i], result.s_counts[i],
                                                         result.alpha[i], result.pve[i], int(result.iterations[i]))))
    return rows

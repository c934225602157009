"""``noise_sd``: each trace's noise level, the scale of a good sparsity weight λ.

λ is in the traces' own units (FISTA minimises ``0.5·‖y − K s − b‖² + λ·G·‖s‖₁``), so
one number cannot suit both ΔF/F traces and raw fluorescence counts.  Tied to each
trace's noise it can: on simulated GCaMP6f, GCaMP6s, jGCaMP8f and OGB-1 populations
``lam = noise_sd(traces)`` gives a median spike correlation within 0.03 of the best
multiple tried (0.03-5x), while 5x loses 0.2-0.3 (``tests/test_lambda_rule.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["noise_sd"]


def noise_sd(traces: Any) -> np.ndarray | float:
    """The white-noise standard deviation of each trace, in the traces' units.

    Estimated from the top half of each trace's power spectrum, where calcium
    transients (slow) leave only noise: the same estimate :func:`calab.run_cadecon`
    scales its λ with.  Use it as the sparsity weight of :func:`calab.run_deconvolution`
    (``lam=calab.noise_sd(traces)``, one λ per cell); a larger multiple keeps fewer,
    larger events, a smaller one more, smaller ones.

    Parameters
    ----------
    traces : array_like, shape (n_cells, n_timepoints) or (n_timepoints,)
        NumPy, CuPy or JAX; read on the host.

    Returns
    -------
    numpy.ndarray of shape (n_cells,), float64, or float for a 1-D trace
        0 for traces shorter than 8 frames.
    """
    from calab._validate import _is_device, _to_host, check_real_array
    from calab.cadecon.initialization import noise_sigma

    rows = check_real_array(_to_host(traces) if _is_device(traces) else traces, "traces", ndim=(1, 2))
    values = noise_sigma(np.atleast_2d(np.asarray(rows, dtype=np.float64)))
    return float(values[0]) if rows.ndim == 1 else values

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

__all__ = ["noise_sd", "white_noise_sd"]


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

    Raises
    ------
    ValueError
        NaN or infinite values (the cell and frame are named), or an array that is not
        1-D or 2-D.
    TypeError
        Non-numeric data.
    """
    from calab._validate import _is_device, _to_host, check_real_array

    rows = check_real_array(_to_host(traces) if _is_device(traces) else traces, "traces", ndim=(1, 2), finite=True)
    values = white_noise_sd(np.atleast_2d(np.asarray(rows, dtype=np.float64)))
    return float(values[0]) if rows.ndim == 1 else values


def white_noise_sd(traces: np.ndarray) -> np.ndarray:
    """White-noise SD per row: root mean power over the top half of the rFFT bins.

    ``traces`` is ``(n_cells, T)`` (host, any real dtype); returns ``(n_cells,)`` float64,
    0 for ``T < 8``.  For white noise the expected power per bin is ``σ²``; calcium
    transients put almost none of theirs above a quarter of the sampling rate.
    """
    traces = np.asarray(traces, dtype=np.float64)
    n_frames = traces.shape[-1]
    if n_frames < 8:
        return np.zeros(traces.shape[:-1])
    # Each row is divided by its largest magnitude first, so that powers of values near
    # float64's range do not overflow; the SD scales back exactly.
    centred = traces - traces.mean(axis=-1, keepdims=True)
    scale = np.abs(centred).max(axis=-1, keepdims=True)
    scale[~(scale > 0)] = 1.0
    spectrum = np.fft.rfft(centred / scale, axis=-1)
    bins = spectrum.shape[-1]
    power = np.abs(spectrum[..., bins // 2 :]) ** 2 / n_frames
    return np.sqrt(power.mean(axis=-1)) * scale[..., 0]

"""Counter-based random numbers for the simulator, vectorised over cells.

Every random number is a pure function of ``(seed, stream, cell, counter)``:

    key(seed, stream, cell)  = mix64(key(seed, stream) + (cell + 1) * GAMMA_CELL)
    bits(key, counter)       = mix64(key + (counter + 1) * GAMMA)

where ``mix64`` is the SplitMix64 output function and ``GAMMA`` the SplitMix64 increment,
so each ``(seed, stream, cell)`` is a SplitMix64 sequence starting at its own hashed state.
Consequences the simulator relies on:

* any subset of cells and counters can be generated in any order, in one vectorised call,
  with the same result: chunking over cells never changes the output, cell ``c`` does not
  depend on ``num_cells`` (prefix property) and spike trains do not depend on
  ``num_timepoints`` either;
* the integer bits are identical on every platform and NumPy version (uint64 arithmetic
  only); derived floats use ``log``/``cos``/``sin``, whose last-ulp rounding is the only
  possible platform difference;
* the scheme ports directly to CuPy/JAX (elementwise integer hashing).

All arrays here are NumPy; nothing is drawn from global state.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Stream", "CounterRNG"]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64 increment (odd, 2^64 / golden ratio)
_GAMMA_CELL = 0xD1B54A32D192ED03  # a second odd constant, to separate cell keys
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_SEED_SALT = 0x6361_6C61_625F_7369  # "calab_si": keeps our streams apart from bare SplitMix64

_U_GAMMA = np.uint64(_GAMMA)
_U_GAMMA_CELL = np.uint64(_GAMMA_CELL)
_U_MUL1 = np.uint64(_MUL1)
_U_MUL2 = np.uint64(_MUL2)
_S30, _S27, _S31, _S32, _S11 = (np.uint64(s) for s in (30, 27, 31, 32, 11))
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_M32 = 2.0**-32
_TWO_M53 = 2.0**-53
_TWO_PI = 2.0 * np.pi


class Stream(enum.IntEnum):
    """Independent random streams, one per use.  The numbers are part of the output
    definition: changing one changes what a seed produces."""

    ALPHA = 1
    TAU_RISE = 2
    TAU_DECAY = 3
    SNR = 4
    P_SILENT_TO_ACTIVE = 5
    K_D = 6
    DRIFT_PARAMETER = 7
    DRIFT_CYCLES = 8
    BLEACH_AMPLITUDE = 9
    MARKOV_SILENT_DWELL = 10
    MARKOV_ACTIVE_DWELL = 11
    ACTIVE_SPIKES = 12
    SILENT_SPIKES = 13
    POISSON_SPIKES = 14
    DRIFT_NOISE = 15
    GAUSSIAN_NOISE = 16
    SHOT_UNIFORM = 17
    SHOT_NORMAL = 18


def _mix64_int(z: int) -> int:
    """SplitMix64 output function on a Python int (exact, no NumPy overflow warnings)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix64_inplace(z: np.ndarray) -> np.ndarray:
    """SplitMix64 output function on a uint64 array, in place (array ops wrap silently)."""
    z ^= z >> _S30
    z *= _U_MUL1
    z ^= z >> _S27
    z *= _U_MUL2
    z ^= z >> _S31
    return z


class CounterRNG:
    """Counter-based generator for one simulation seed.

    Parameters
    ----------
    seed : int
        Any non-negative integer (the config restricts it to ``[0, 2**32)``).
    """

    def __init__(self, seed: int) -> None:
        self._root = _mix64_int(_mix64_int(int(seed) ^ _SEED_SALT) + _GAMMA)

    def keys(self, stream: Stream, cells: np.ndarray) -> np.ndarray:
        """Per-cell keys of a stream.

        Parameters
        ----------
        stream : Stream
        cells : ndarray of int, shape (C,)
            Global cell indices (not positions within a chunk).

        Returns
        -------
        ndarray of uint64, shape (C,)
        """
        stream_key = np.uint64(_mix64_int(self._root + int(stream) * _GAMMA))
        z = np.array(cells, dtype=np.uint64, copy=True)
        z += np.uint64(1)
        z *= _U_GAMMA_CELL
        z += stream_key
        return _mix64_inplace(z)

    # ------------------------------------------------------------------ raw draws

    @staticmethod
    def bits(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
        """64 random bits for each broadcast pair ``(key, counter)``, as uint64."""
        keys, counters = np.broadcast_arrays(
            np.asarray(keys, dtype=np.uint64), np.asarray(counters, dtype=np.uint64)
        )
        # In-place operations on a fresh array: uint64 array arithmetic wraps modulo 2^64
        # silently, whereas NumPy *scalar* arithmetic would warn on overflow.
        z = counters.astype(np.uint64, copy=True)
        z += np.uint64(1)
        z *= _U_GAMMA
        z += keys
        return _mix64_inplace(z)

    @classmethod
    def uniform(cls, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
        """Uniform float64 on ``[0, 1)`` with 53-bit resolution (for ``u < p`` tests)."""
        return (cls.bits(keys, counters) >> _S11).astype(np.float64) * _TWO_M53

    @classmethod
    def uniform32(cls, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
        """Uniform float64 on ``[0, 1)`` with 32-bit resolution (the reference's own
        resolution); about twice as fast as :meth:`uniform` for bulk use."""
        high = (cls.bits(keys, counters) >> _S32).astype(np.uint32)
        u = high.astype(np.float64)
        u *= _TWO_M32
        return u

    @classmethod
    def uniform_open(cls, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
        """Uniform float64 on ``(0, 1]`` (safe under ``log``)."""
        u = (cls.bits(keys, counters) >> _S11).astype(np.float64)
        u += 1.0
        u *= _TWO_M53
        return u

    @classmethod
    def normal(cls, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
        """One standard normal per ``(key, counter)`` (Box–Muller, cosine branch).

        The high 32 bits give the radius, the low 32 bits the angle; as in the reference's
        32-bit Box–Muller, ``|z| <= sqrt(2 ln 2^32) = 6.66``.
        """
        z = cls.bits(keys, counters)
        return _box_muller_cosine(z)

    @classmethod
    def normal_matrix(cls, keys: np.ndarray, n: int) -> np.ndarray:
        """Standard normals for counters ``0..n-1`` of each key, in float32 precision.

        Both Box–Muller outputs are used: pair ``j`` (one 64-bit draw at counter ``j``)
        gives elements ``2j`` (cosine) and ``2j + 1`` (sine), so element ``i`` depends only
        on ``(key, i)`` and the matrix of a longer trace extends that of a shorter one.
        The transform runs in float32 (about 10x faster than float64 trigonometry); the
        values are exact normals to ~1e-7 relative, below the float32 rounding of the traces
        they perturb.

        Parameters
        ----------
        keys : ndarray of uint64, shape (C,)
        n : int

        Returns
        -------
        ndarray of float32, shape (C, n)
        """
        keys = np.asarray(keys, dtype=np.uint64)
        n_pairs = (n + 1) // 2
        z = cls.bits(keys[:, None], np.arange(n_pairs, dtype=np.uint64)[None, :])
        # Explicit shifts/truncation (not a uint32 view) keep this byte-order independent.
        radius = (z >> _S32).astype(np.uint32).astype(np.float32)
        angle = z.astype(np.uint32).astype(np.float32)
        del z
        radius += np.float32(1.0)  # (0, 2^32]: never log(0)
        radius *= np.float32(_TWO_M32)
        np.log(radius, out=radius)
        radius *= np.float32(-2.0)
        np.sqrt(radius, out=radius)
        angle *= np.float32(_TWO_PI * _TWO_M32)
        out = np.empty((keys.shape[0], n_pairs, 2), dtype=np.float32)
        np.cos(angle, out=out[:, :, 0])
        np.sin(angle, out=out[:, :, 1])
        out *= radius[:, :, None]
        out = out.reshape(keys.shape[0], 2 * n_pairs)
        return out[:, :n] if n % 2 else out

    @classmethod
    def geometric(
        cls, keys: np.ndarray, counters: np.ndarray, p: np.ndarray, cap: int
    ) -> np.ndarray:
        """Geometric draws on ``{1, 2, ...}``: trials up to and including the first success.

        ``P(G > k) = (1 - p)^k``, by inversion: ``G = floor(ln u / ln(1 - p)) + 1`` with
        ``u`` in ``(0, 1]``.  ``p <= 0`` (never) gives ``cap``; ``p >= 1`` gives 1.  Results
        are clipped to ``[1, cap]`` so that sums of them cannot overflow.

        Returns
        -------
        ndarray of int64, broadcast shape of ``keys``, ``counters`` and ``p``
        """
        u = cls.uniform_open(keys, counters)
        p = np.broadcast_to(np.asarray(p, dtype=np.float64), u.shape)
        usable = (p > 0.0) & (p < 1.0)
        log_q = np.log1p(-np.where(usable, p, 0.5))
        trials = np.log(u)
        with np.errstate(over="ignore"):  # tiny p: +inf, clipped to ``cap`` below
            trials /= log_q
        trials = np.floor(trials, out=trials)
        trials += 1.0
        trials = np.where(usable, trials, np.where(p >= 1.0, 1.0, float(cap)))
        np.clip(trials, 1.0, float(cap), out=trials)
        return trials.astype(np.int64)


def _box_muller_cosine(z: np.ndarray) -> np.ndarray:
    """Float64 Box–Muller (cosine branch) on packed 64-bit draws: the high word gives the
    radius, the low word the angle."""
    shape = z.shape
    z = z.reshape(-1)  # 0-d inputs would turn into NumPy scalars, which lack out=
    radius = (z >> _S32).astype(np.float64)
    radius += 1.0  # (0, 2^32]: never log(0)
    radius *= _TWO_M32
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    angle = (z & _LOW32).astype(np.float64)
    angle *= _TWO_PI * _TWO_M32
    np.cos(angle, out=angle)
    angle *= radius
    return angle.reshape(shape)

"""Automated deconvolution that learns the calcium kernel from the data (CaDecon / InDeCa loop).

Public names (re-exported by :mod:`calab`): :func:`run_cadecon`, :class:`DeconConfig`,
:class:`CaDeconResult`, :class:`CaDeconProgress`, :class:`CaDeconControl`,
:class:`CaDeconWarning`.
"""

from __future__ import annotations

from calab.cadecon.config import NATIVE_DEFAULTS, DeconConfig
from calab.cadecon.loop import CaDeconWarning, run_cadecon, starting_kernel
from calab.cadecon.progress import CaDeconControl, CaDeconProgress
from calab.cadecon.result import CaDeconResult

__all__ = [
    "NATIVE_DEFAULTS",
    "CaDeconControl",
    "CaDeconProgress",
    "CaDeconResult",
    "CaDeconWarning",
    "DeconConfig",
    "run_cadecon",
    "starting_kernel",
]

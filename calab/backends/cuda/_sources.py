"""The CUDA sources shipped with calab (package data ``kernels/*.cu``); no CuPy import.

``KERNEL_FILES`` lists every ``extern "C"`` kernel of every file: the CuPy launchers
(:mod:`calab.backends.cuda._device`) look kernels up here, the warm-up compiles all of
them, and the CPU tests check the list against the sources and the NumPy
transliterations (:mod:`calab.backends.cuda.reference`).
"""

from __future__ import annotations

import importlib.resources

__all__ = ["COMPILE_OPTIONS", "KERNEL_FILES", "kernel_file", "kernel_source"]

#: NVRTC/nvcc options: no FMA contraction, so every float32 operation rounds as in NumPy
COMPILE_OPTIONS: tuple[str, ...] = ("--fmad=false",)

#: the kernels of every source file
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "fista_fft.cu": ("residual_pad", "fista_update_fft"),
    "ar2.cu": (
        "ar2_forward_tm",
        "ar2_adjoint_tm",
        "ar2_adjoint_update_tm",
        "ar2_chunk_forward_local",
        "ar2_chunk_carry_forward",
        "ar2_chunk_forward_fix",
        "ar2_chunk_adjoint_local",
        "ar2_chunk_carry_adjoint",
        "ar2_chunk_adjoint_fix",
        "ar2_chunk_adjoint_update",
        "fista_decide",
        "fista_restart_tm",
    ),
    "rolling_rank.cu": ("rolling_rank_shared", "rolling_rank_global"),
}


def kernel_file(filename: str):
    """Traversable of a ``.cu`` file in ``calab/backends/cuda/kernels``."""
    return importlib.resources.files("calab.backends.cuda").joinpath("kernels", filename)


def kernel_source(filename: str) -> str:
    """Text of a ``.cu`` file shipped in ``calab/backends/cuda/kernels``."""
    return kernel_file(filename).read_text()

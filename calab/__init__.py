"""CaLab: calcium imaging analysis tools — deconvolution and data preparation.

Batched FISTA spike deconvolution of many calcium traces at once, on NumPy/SciPy
(the CPU fallback), JAX (XLA, CPU or GPU) or CuPy (CUDA kernels), behind the API of
the published ``calab`` package.

Importing :mod:`calab` is cheap: submodules (and, above all, CuPy and JAX) are only
imported when a name that needs them is first used.
"""

import importlib as _importlib

__version__ = "0.4.0.dev0"

# Public name -> submodule that defines it.  Resolved lazily by __getattr__ so that
# `import calab` never pulls in pydantic models, h5py/zarr, CuPy or JAX.
_LAZY_EXPORTS: dict[str, str] = {
    # kernel maths
    "build_kernel": "calab.kernel",
    "tau_to_ar2": "calab.kernel",
    "compute_lipschitz": "calab.kernel",
    "compute_upsample_factor": "calab.kernel",
    # filters
    "bandpass_filter": "calab.filters",
    # deconvolution
    "run_deconvolution": "calab.deconvolution",
    "run_deconvolution_full": "calab.deconvolution",
    "DeconvolutionResult": "calab.deconvolution",
    "noise_sd": "calab.noise",
    "SuspiciousInputWarning": "calab._validate",
    # backend dispatch
    "use_backend": "calab.backends",
    "available_backends": "calab.backends",
    "BackendUnavailableError": "calab.backends",
    # simulation
    "simulate": "calab.simulation",
    "presets": "calab.simulation",
    "SimulationConfig": "calab.simulation",
    "KernelConfig": "calab.simulation",
    "NoiseConfig": "calab.simulation",
    "PhotobleachingConfig": "calab.simulation",
    "SaturationConfig": "calab.simulation",
    "PoissonConfig": "calab.simulation",
    "MarkovConfig": "calab.simulation",
    "RandomWalkDrift": "calab.simulation",
    "SinusoidalDrift": "calab.simulation",
    "DriftModel": "calab.simulation",
    "SpikeModel": "calab.simulation",
    "SimulationResult": "calab.simulation",
    "CellGroundTruth": "calab.simulation",
    # files
    "save_for_tuning": "calab.io",
    "load_tuning_data": "calab.io",
    "load_export_params": "calab.io",
    "deconvolve_from_export": "calab.io",
    "load_caiman": "calab.loaders",
    "load_minian": "calab.loaders",
    "load_suite2p": "calab.loaders",
    "load_nwb": "calab.loaders",
    # browser bridge (CaTune page, headless Chromium)
    "tune": "calab.bridge",
    "decon": "calab.bridge",  # CaDecon page on the bridge
    "HeadlessBrowser": "calab.bridge",
    "BridgeVersionError": "calab.bridge",
    "BridgeVersionWarning": "calab.bridge",
    # InDeCa building blocks
    "solve_trace": "calab.indeca",
    "solve_traces": "calab.indeca",
    "estimate_kernel": "calab.indeca",
    "estimate_kernels": "calab.indeca",
    "fit_biexponential": "calab.indeca",
    "fit_biexponentials": "calab.indeca",
    "seed_traces": "calab.indeca",
    "SolveTraceResult": "calab.indeca",
    "SolveTracesResult": "calab.indeca",
    "BiexpFitResult": "calab.indeca",
    "BiexpFitResults": "calab.indeca",
    "SeedResult": "calab.indeca",
    "KernelSubset": "calab.indeca",
    # automated deconvolution (CaDecon loop)
    "run_cadecon": "calab.cadecon",
    "DeconConfig": "calab.cadecon",
    "CaDeconResult": "calab.cadecon",
    "CaDeconProgress": "calab.cadecon",
    "CaDeconControl": "calab.cadecon",
    "CaDeconWarning": "calab.cadecon",

    # whole datasets (streaming, resume, Dask)
    "deconvolve_dataset": "calab.datasets",
    "open_source": "calab.datasets",
    "DatasetLockedError": "calab.datasets",
    "DatasetMismatchError": "calab.datasets",
    "DatasetDamagedError": "calab.datasets",
    "DatasetDamageWarning": "calab.datasets",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'calab' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    # The public names (resolved or not yet), the version, and whatever Python itself put
    # here (dunders, submodules already imported); no helper of this file.
    own = {name for name in globals() if not name.startswith("_") or name.startswith("__")}
    return sorted(own | set(__all__))

"""``deconvolve_dataset``: stream a recording through the solver into a Zarr store.

How a run goes:

1. open the source lazily (:mod:`calab.datasets._sources`), validate the parameters;
2. create the output in a hidden sibling directory, lock it, write the empty arrays and
   the manifest, check every pending chunk for NaN/inf, then rename it into place — so a
   bad input or a read-only location leaves nothing behind — or, when the output
   exists, lock it and check that its manifest matches this run (parameters, recording,
   chunk grid) before continuing where it stopped;
3. solve the pending chunks in order: a prefetch thread reads chunk *i + 1* while chunk
   *i* is solved, and a writer thread stores chunk *i − 1* and then lists it in the
   manifest (replaced atomically).  With ``client=`` the chunks are solved and written
   by Dask workers instead, each on its own backend, and this process keeps the
   manifest.

A chunk's numbers depend only on its cells and the parameters (the solver treats every
cell alone, and the chunk grid is fixed in the manifest), so a resumed run writes exactly
what an uninterrupted one would have.

A resumed run trusts nothing it cannot check: the manifest's fields are validated, every
finished chunk is read back and compared with the CRC-32 recorded when it was written
(a damaged or missing chunk is solved again, with a :class:`DatasetDamageWarning` naming
it), and every chunk of the input read again is compared with the CRC-32 of what the
output was made from (a changed cell is a :class:`DatasetMismatchError`).
"""

from __future__ import annotations

import concurrent.futures
import copy
import errno
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from calab._progress import progress_bar, show_by_default
from calab.datasets._sources import TraceSource, check_finite, open_source
from calab.datasets._store import (
    DatasetDamagedError,
    DatasetDamageWarning,
    DatasetMismatchError,
    OutputLock,
    OutputStore,
    block_crc32,
    is_locked,
    remove_output,
)

__all__ = ["DatasetRun", "deconvolve_dataset", "plan_chunk_cells", "solve_block"]

MANIFEST_VERSION_KEY = "calab_version"
#: Host memory a CPU-backend chunk may use by default (bytes); GPU backends stage more.
DEFAULT_HOST_BUDGET = 256 << 20
DEFAULT_GPU_HOST_BUDGET = 4 << 30


class DatasetRun(NamedTuple):
    """What :func:`deconvolve_dataset` did.

    Attributes
    ----------
    output : pathlib.Path
        The Zarr store (open it with ``zarr.open_group(output, mode="r")``).
    n_cells, n_timepoints : int
        Shape of the recording.
    chunk_cells : int
        Cells per chunk (fixed for the life of the output).
    chunks_total : int
        Number of chunks.
    chunks_solved : int
        Chunks solved by this call.
    chunks_resumed : int
        Chunks found already finished (from an earlier, interrupted run).
    seconds : float
        Wall time of this call.
    """

    output: Path
    n_cells: int
    n_timepoints: int
    chunk_cells: int
    chunks_total: int
    chunks_solved: int
    chunks_resumed: int
    seconds: float


# --------------------------------------------------------------------------- chunks
def plan_chunk_cells(
    backend: Any, n_cells: int, n_timepoints: int, itemsize: int = 4, memory_budget: int | None = None
) -> int:
    """Cells per chunk: what fits the backend's free memory and the host budget.

    The device side is :meth:`Backend.max_chunk_cells` (from
    :meth:`Backend.free_memory_bytes`).  On the host a chunk costs its input three times
    (read ahead, queued, being solved), its float32 copy, two chunks of float32 results
    (this one and the one being written) and — when the backend computes on the host —
    the solver's temporaries.

    Parameters
    ----------
    backend : calab.backends.base.Backend
    n_cells, n_timepoints : int
    itemsize : int
        Bytes per sample of the source.
    memory_budget : int, optional
        Host bytes a chunk may use.  Default: an eighth of the available memory, at most
        256 MiB for a CPU backend or 4 GiB for a GPU backend.
    """
    device_cells = backend.max_chunk_cells(n_cells, n_timepoints)
    if memory_budget is None:
        cap = DEFAULT_GPU_HOST_BUDGET if backend.is_gpu else DEFAULT_HOST_BUDGET
        memory_budget = min(cap, _available_host_memory() // 8)
    # input: read ahead, queued, being solved; its float32 copy; float32 results of this
    # chunk and of the one being written; ~16 float32 solver temporaries on a host backend
    per_cell = n_timepoints * (3 * itemsize + 4 + 8 + (0 if backend.is_gpu else 64))
    host_cells = int(memory_budget) // max(per_cell, 1)
    return int(max(1, min(n_cells, device_cells, host_cells)))


def _available_host_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30


def _chunk_bounds(index: int, chunk_cells: int, n_cells: int) -> tuple[int, int]:
    start = index * chunk_cells
    return start, min(start + chunk_cells, n_cells)


# --------------------------------------------------------------------------- solving
def solve_block(block: np.ndarray, settings: dict, lam: np.ndarray, backend: str | None) -> dict:
    """Deconvolve one chunk of cells and return the arrays to store.

    Calls the engine's block-level entry point (:func:`calab.engine.solve_block` with
    :meth:`Problem.catune`), which gives ``run_deconvolution_full``'s numbers bit for bit
    without its float64 copies, and computes the reconvolution only when it is stored.

    Parameters
    ----------
    block : numpy.ndarray, shape (cells, n_timepoints)
        The chunk's traces (any real dtype).
    settings : dict
        The manifest's ``parameters``.
    lam : numpy.ndarray, shape (cells,)
        λ per cell.
    backend : str or None
        Backend name; None resolves it in this process (a Dask worker picks its own).

    Returns
    -------
    dict
        ``activity`` (float32), ``baseline`` (float64), ``iterations`` (int64),
        ``converged`` (bool), and ``reconvolution`` (float32) when it is saved.
    """
    from calab.engine import Problem
    from calab.engine import solve_block as solve_engine_block

    if settings.get("method") == "cadecon":
        return _solve_cadecon_block(block, settings, backend)
    fs, tau_r, tau_d = settings["fs"], settings["tau_r"], settings["tau_d"]
    if settings["bandpass"]:
        from calab.filters import bandpass_filter

        block = bandpass_filter(block, tau_r, tau_d, fs, backend=backend)
    problem = Problem.catune(fs, tau_r, tau_d, max_iters=settings["max_iters"], conv_mode=settings["conv_mode"],
                             constraint=settings["constraint"])
    result = solve_engine_block(
        problem, block, lam=lam, backend=backend, reconvolution=settings["save_reconvolution"]
    ).to_numpy()
    out = {
        "activity": np.asarray(result.activity, dtype=np.float32),
        "baseline": np.asarray(result.baseline, dtype=np.float64),
        "iterations": np.asarray(result.iterations, dtype=np.int64),
        "converged": np.asarray(result.converged, dtype=bool),
    }
    if settings["save_reconvolution"]:
        out["reconvolution"] = np.asarray(result.reconvolution, dtype=np.float32)
    return out


def _solve_cadecon_block(block: np.ndarray, settings: dict, backend: str | None) -> dict:
    """CaDecon's finalisation of one chunk: InDeCa's solve with the learned kernel (cold start).

    ``settings["cadecon"]`` holds the :class:`~calab.DeconConfig` fields the solve reads,
    so a resumed run (or a Dask worker) solves exactly as the first one did.
    """
    from calab.cadecon import DeconConfig
    from calab.cadecon._blocks import solve

    resolved = DeconConfig(**settings["cadecon"]).resolved()
    solved = solve(np.asarray(block, dtype=np.float64), settings["tau_r"], settings["tau_d"], settings["fs"],
                   resolved, None, backend)
    return {
        "activity": np.asarray(solved.s_counts, dtype=np.float32),
        "alpha": np.asarray(solved.alpha, dtype=np.float64),
        "baseline": np.asarray(solved.baseline, dtype=np.float64),
        "pve": np.asarray(solved.pve, dtype=np.float64),
    }


def solve_and_write_chunk(
    source: TraceSource, store: OutputStore, index: int, chunk_cells: int, settings: dict,
    lam: np.ndarray, backend: str | None, block: np.ndarray | None = None, input_crc: int | None = None,
) -> tuple[int, str, dict[str, int], int]:
    """One chunk, start to finish: read (unless given), check, solve, write.  Runs on Dask
    workers too; returns the chunk index, the backend that solved it, the CRC-32 of each
    array written and of the input.  ``input_crc``: what the input must match (the
    manifest's record), checked before anything is solved."""
    from calab.backends import resolve_backend

    start, stop = _chunk_bounds(index, chunk_cells, source.shape[0])
    try:
        if block is None:
            block = source.read(start, stop)
        crc = block_crc32(block)
        _check_input_crc(crc, input_crc, start, stop, source.where)
        check_finite(block, start, source.where)
        written = store.write_block(start, stop, solve_block(block, settings, lam, backend))
    finally:
        source.close()
    return index, resolve_backend(backend).name, written, crc


def _check_input_crc(found: int, recorded: int | None, start: int, stop: int, where: str) -> None:
    if recorded is not None and found != recorded:
        raise DatasetMismatchError(
            f"cannot resume: cells {start}-{stop - 1} of {where} differ from those the output was made "
            "from (their checksum changed). Pass overwrite=True (--force) to start again from this "
            "recording, or resume with the original one."
        )


# --------------------------------------------------------------------------- manifest
def _settings(fs: float, tau_r: float, tau_d: float, lam_cells: np.ndarray, lam: Any, max_iters: int,
              conv_mode: str, constraint: str, bandpass: bool, save_reconvolution: bool) -> dict:
    import hashlib

    import calab

    if np.ndim(lam) == 0:
        lam_record: Any = float(lam)
    else:
        lam_record = {"per_cell_sha256": hashlib.sha256(lam_cells.astype("<f8").tobytes()).hexdigest()}
    return {
        "fs": float(fs),
        "tau_r": float(tau_r),
        "tau_d": float(tau_d),
        "lam": lam_record,
        "max_iters": int(max_iters),
        "conv_mode": conv_mode,
        "constraint": constraint,
        "bandpass": bool(bandpass),
        "save_reconvolution": bool(save_reconvolution),
        MANIFEST_VERSION_KEY: calab.__version__,
    }


def _differences(manifest: dict, wanted: dict) -> list[str]:
    found = []
    for section in ("parameters", "source", "chunk_cells", "backend"):
        old, new = manifest.get(section), wanted.get(section)
        if section == "backend" and (old is None or new is None):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if name in ("where",):  # a moved recording is still the same recording
                    continue
                if old.get(name) != new.get(name):
                    found.append(f"{section} {name}: the output has {old.get(name)!r}, this run asks for {new.get(name)!r}")
        elif old != new:
            found.append(f"{section}: the output has {old!r}, this run asks for {new!r}")
    return found


# --------------------------------------------------------------------------- progress
def _progress(progress: Any, total: int, done: int, label: str) -> tuple[Callable[[int], Any] | None, Callable[[], Any] | None]:
    if callable(progress):
        return progress, None
    if progress is None:
        progress = show_by_default()
    if not progress:
        return None, None
    # cells done, cells/s and the ETA; a resumed run starts at the chunks already stored
    bar = progress_bar(total, label, initial=done, unit_scale=True, smoothing=0.1, leave=True)
    return bar.update, bar.close


# --------------------------------------------------------------------------- the run
def deconvolve_dataset(
    source: Any,
    output: str | os.PathLike[str],
    *,
    fs: float | None = None,
    tau_r: float,
    tau_d: float,
    lam: Any,
    max_iters: int = 2000,
    conv_mode: str = "fft",
    constraint: str = "nonneg",
    bandpass: bool = False,
    key: str | None = None,
    fmt: str | None = None,
    backend: str | None = None,
    chunk_cells: int | None = None,
    memory_budget: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    save_reconvolution: bool = False,
    prescan: bool = True,
    progress: bool | Callable[[int], object] | None = None,
    client: Any = None,
    source_options: dict | None = None,
) -> DatasetRun:
    """Deconvolve a recording too big for memory, chunk by chunk, into a Zarr store.

    Memory stays bounded by a few chunks whatever the recording's size; the run can be
    killed at any point and resumed; with ``client=`` the chunks are spread over a
    ``dask.distributed`` cluster.

    Parameters
    ----------
    source : str, os.PathLike or array-like
        A Zarr store/array (Minian's ``C.zarr`` layout included), an HDF5 file (CaImAn
        ``estimates/C`` by default), a ``.npy`` file (memory-mapped), a suite2p plane
        folder, an NWB file, or an array with ``shape``/``dtype``/slicing (NumPy, zarr,
        h5py or dask array), shaped ``(n_cells, n_timepoints)``.
    output : str or os.PathLike
        Directory of the Zarr store to write (e.g. ``"activity.zarr"``); see
        :mod:`calab.datasets` for its layout.
    fs : float, optional
        Sampling rate in Hz; default the rate stored in the source (CaImAn, suite2p, NWB).
    tau_r, tau_d, lam, max_iters, conv_mode, constraint
        As in :func:`calab.run_deconvolution`; ``lam`` may be one value per cell.
    bandpass : bool
        Band-pass filter each trace first (CaTune exports' ``filter_enabled``).
    key : str, optional
        Zarr array name, HDF5 dataset path or NWB series.
    fmt : str, optional
        Source format (see :func:`calab.datasets.open_source`); detected when None.
    backend : str, optional
        Compute backend, resolved as usual.  With ``client=``, None lets every worker
        choose its own (CuPy on dask-cuda workers).
    chunk_cells : int, optional
        Cells per chunk; default :func:`plan_chunk_cells` (free device memory and the
        host ``memory_budget``).  Fixed for the life of an output.
    memory_budget : int, optional
        Host bytes one chunk may use (see :func:`plan_chunk_cells`).
    resume : bool
        Continue an existing output made with the same parameters (default).  Its
        finished chunks are read back first; one that no longer matches the CRC-32
        recorded when it was written (truncated, emptied, overwritten or deleted) is
        solved again with a :class:`~calab.datasets.DatasetDamageWarning`.  False: an
        existing output is an error unless ``overwrite``.
    overwrite : bool
        Delete an existing calab output (not a locked one) and start again.
    save_reconvolution : bool
        Also store the float32 model fit ``reconvolution``.
    prescan : bool
        Read the whole input once before writing anything (default): NaN/inf in a chunk
        still to solve then fails the run before it starts and leaves no output, and on
        resume a chunk whose CRC-32 differs from the recorded one (the recording changed)
        is refused before anything is solved.  False skips this extra read; a bad or
        changed chunk then stops the run when it is reached, after the chunks before it.
    progress : bool or callable, optional
        None: a bar (cells done, cells/s, ETA) when stderr is a terminal or in a Jupyter
        notebook (a widget there).  A callable
        gets the number of cells finished since its previous call.
    client : dask.distributed.Client, optional
        Solve chunks on the cluster's workers.  They read the source and write the
        output themselves, so both must be on storage every worker sees.
    source_options : dict, optional
        suite2p options (``subtract_neuropil``, ``neuropil_coefficient``,
        ``cells_only``, ``cell_probability``).

    Returns
    -------
    DatasetRun

    Raises
    ------
    ValueError
        Bad parameters or source (wrong rank, NaN/inf: the message names the cell and
        frame), or no sampling rate.
    calab.datasets.DatasetMismatchError
        The existing output was made with other parameters, from another recording or
        with another chunk grid; the message lists each difference.  Also when cells of
        the recording changed since the output was started (each chunk's CRC-32 is
        recorded; with ``prescan`` every chunk is compared before anything is solved).
    calab.datasets.DatasetDamagedError
        The existing output's manifest is unreadable or inconsistent (e.g. ``done`` is not
        a list of chunk numbers); pass ``overwrite=True`` to start again.
    calab.datasets.DatasetLockedError
        Another live run is writing the output.
    FileExistsError
        The output exists and ``resume=False`` (without ``overwrite``), or it is not a
        calab output.
    PermissionError
        The output location is not writable.
    """
    from calab._validate import check_integer, warn_if_milliseconds, warn_if_transposed
    from calab.deconvolution import check_solve_settings
    from calab.loaders._common import validate_fs

    began = time.perf_counter()
    output = Path(output)
    data = open_source(source, key=key, fmt=fmt, **(source_options or {}))
    n_cells, n_timepoints = data.shape
    fs = validate_fs(fs, required=False)
    if fs is None:
        fs = data.fs
    if fs is None:
        raise ValueError(f"{data.where} does not store its sampling rate; pass fs= (Hz).")
    fs, tau_r, tau_d, lam_cells, max_iters = check_solve_settings(
        fs, tau_r, tau_d, lam, max_iters, conv_mode, constraint, n_cells, shape=tuple(data.shape)
    )
    warn_if_transposed(data.shape, data.where, "store it with cells as rows")
    warn_if_milliseconds(tau_r, tau_d, ("tau_r", "tau_d"))
    # 0 must not fall through to "choose for me", and 2.5 is not truncated
    chunk_cells = check_integer(chunk_cells, "chunk_cells", minimum=None, allow_none=True)
    if chunk_cells is not None and chunk_cells < 1:
        raise ValueError(f"chunk_cells must be a positive number of cells, got {chunk_cells!r}")
    settings = _settings(fs, tau_r, tau_d, lam_cells, lam, max_iters, conv_mode, constraint, bandpass,
                         save_reconvolution)
    return stream_dataset(data, output, settings, lam_cells, chunk_cells=chunk_cells, backend=backend,
                          memory_budget=memory_budget, resume=resume, overwrite=overwrite, prescan=prescan,
                          progress=progress, client=client, began=began)


def stream_dataset(
    data: TraceSource, output: Path, settings: dict, lam_cells: np.ndarray, *, chunk_cells: int | None,
    backend: str | None, memory_budget: int | None, resume: bool, overwrite: bool, prescan: bool,
    progress: Any, client: Any, began: float,
) -> DatasetRun:
    """Stream ``data`` chunk by chunk into the Zarr store ``output`` (shared by
    :func:`deconvolve_dataset` and :func:`calab.datasets.cadecon_dataset`).

    ``settings`` are the manifest's parameters (they say which solve runs, see
    :func:`solve_block`); ``data`` is closed on return.
    """
    from calab.backends import resolve_backend

    n_cells, n_timepoints = data.shape
    local_backend = None if client is not None else resolve_backend(backend)
    wanted = {
        "parameters": settings,
        "source": {**data.describe(), "fingerprint": data.fingerprint()},
        "chunk_cells": None if chunk_cells is None else min(int(chunk_cells), n_cells),
        "backend": None if local_backend is None else local_backend.name,
    }

    lock, store, manifest, resumed = _open_output(
        output, data, wanted, resume=resume, overwrite=overwrite, prescan=prescan,
        default_chunk=lambda: plan_chunk_cells(
            local_backend or resolve_backend(backend), n_cells, n_timepoints, data.dtype.itemsize, memory_budget
        ),
    )
    try:
        chunk = manifest["chunk_cells"]
        total = -(-n_cells // chunk)
        if resumed:
            if prescan:  # the whole input again: unchanged, and finite where still to solve
                _prescan(data, manifest, set(manifest["done"]))
            _drop_damaged_chunks(store, manifest, output)
            store.write_manifest(manifest)
        done = set(manifest["done"])
        pending = [index for index in range(total) if index not in done]
        finished_cells = sum(_chunk_bounds(i, chunk, n_cells)[1] - _chunk_bounds(i, chunk, n_cells)[0] for i in done)
        advance, close = _progress(progress, n_cells, finished_cells, f"calab {output.name}")
        try:
            runner = _run_distributed if client is not None else _run_local
            runner(data, store, manifest, pending, lam_cells, backend, advance, client)
        finally:
            if close is not None:
                close()
    finally:
        lock.release()
        data.close()
    return DatasetRun(output, n_cells, n_timepoints, chunk, total, len(pending), len(done),
                      time.perf_counter() - began)


def _prescan(data: TraceSource, manifest: dict, finished: set[int]) -> None:
    """Read every chunk of the input once before solving: NaN/inf in a chunk still to solve
    fails the run, a chunk whose CRC-32 differs from the manifest's record means another
    recording (:class:`DatasetMismatchError`); missing records are added."""
    chunk, n_cells = manifest["chunk_cells"], data.shape[0]
    recorded = manifest["input_crc32"]
    for index in range(-(-n_cells // chunk)):
        start, stop = _chunk_bounds(index, chunk, n_cells)
        block = data.read(start, stop)
        crc = block_crc32(block)
        _check_input_crc(crc, recorded.get(str(index)), start, stop, data.where)
        if index not in finished:
            check_finite(block, start, data.where)
        recorded[str(index)] = crc


def _drop_damaged_chunks(store: OutputStore, manifest: dict, output: Path) -> None:
    """Take finished chunks whose stored values no longer match out of ``done`` (with a
    warning naming each), so that this run solves them again."""
    chunk, n_cells = manifest["chunk_cells"], manifest["n_cells"]
    damaged = []
    for index in sorted(manifest["done"]):
        start, stop = _chunk_bounds(index, chunk, n_cells)
        reason = store.chunk_damage(start, stop, manifest["chunk_crc32"].get(str(index)))
        if reason is not None:
            damaged.append(index)
            warnings.warn(
                f"{output}: finished chunk {index} (cells {start}-{stop - 1}) is damaged: {reason}; "
                "solving it again.", DatasetDamageWarning, stacklevel=4,
            )
    for index in damaged:
        manifest["done"].remove(index)
        manifest["chunk_crc32"].pop(str(index), None)
        manifest["solved_on"].pop(str(index), None)


def _open_output(output: Path, data: TraceSource, wanted: dict, *, resume: bool, overwrite: bool,
                 prescan: bool, default_chunk: Callable[[], int]) -> tuple[OutputLock, OutputStore, dict, bool]:
    """Lock the output and return its manifest (an existing one checked, or a new store's)
    and whether it existed (a run to resume)."""
    parent = output.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"Output directory does not exist: {parent}. Create it first or choose another output.")
    _remove_abandoned_partials(output)
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} is a file; the output must be a Zarr directory (e.g. activity.zarr).")
    if output.is_dir() and any(output.iterdir()):
        store = OutputStore(output)
        try:
            manifest = store.read_manifest()
        except DatasetDamagedError:
            if not overwrite:
                raise
            manifest = {}  # a calab output with a damaged manifest: overwrite may replace it
        if manifest is None:
            raise FileExistsError(
                f"{output} already exists and is not a calab output (no calab_manifest.json); "
                "choose another output name."
            )
        if not os.access(output, os.W_OK):
            raise PermissionError(f"cannot write to the output {output}: it is read-only. Choose a writable location.")
        lock = OutputLock(output)
        lock.acquire(output)
        try:
            if overwrite:
                remove_output(output)
            elif not resume:
                raise FileExistsError(
                    f"{output} already exists ({len(manifest['done'])} of its chunks done). Pass resume=True "
                    "(calab deconvolve --resume) to continue it, or overwrite=True (--force) to start again."
                )
            else:
                problems = _differences(manifest, wanted)
                if wanted["chunk_cells"] is None:
                    problems = [p for p in problems if not p.startswith("chunk_cells")]
                if problems:
                    raise DatasetMismatchError(
                        f"cannot resume {output}: it was made differently. " + "; ".join(problems)
                        + ". Use the original settings to resume it, pass overwrite=True (--force) to "
                        "start again, or choose another output."
                    )
                return lock, store, manifest, True
        except BaseException:
            lock.release()
            raise
        lock.release()
    return (*_create_output(output, data, wanted, prescan, default_chunk), False)


def _create_output(output: Path, data: TraceSource, wanted: dict, prescan: bool,
                   default_chunk: Callable[[], int]) -> tuple[OutputLock, OutputStore, dict]:
    """Build a new output in a hidden sibling directory and rename it into place."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(
                f"cannot create the output {output}: {output.parent} is not writable ({exc.strerror}). "
                "Choose a writable location."
            ) from None
        raise
    lock = OutputLock(staging)
    try:
        chunk = wanted["chunk_cells"] or default_chunk()
        n_cells, n_timepoints = data.shape
        manifest = {**wanted, "format": 1, "chunk_cells": int(chunk), "n_cells": n_cells,
                    "n_timepoints": n_timepoints, "done": [], "solved_on": {}, "input_crc32": {},
                    "chunk_crc32": {}}
        store = OutputStore(staging)
        # zarr's mode="w" empties the directory, so the lock is taken afterwards (nobody
        # else knows the staging directory's random name yet).
        store.create(n_cells, n_timepoints, int(chunk), wanted["parameters"]["save_reconvolution"],
                     wanted["parameters"].get("method", "catune"))
        lock.acquire(output)
        store.write_manifest(manifest)
        if prescan:
            _prescan(data, manifest, set())
            store.write_manifest(manifest)
        try:
            os.rename(staging, output)  # an empty directory at `output` is replaced
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(f"{output} was created by another run meanwhile; choose another output.") from None
            raise
    except BaseException:
        lock.release()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    store.path = output
    store._group = None
    return lock, store, manifest


def _remove_abandoned_partials(output: Path) -> None:
    """Delete hidden staging directories of runs killed while creating ``output``."""
    for partial in output.parent.glob(f".{output.name}.partial-*"):
        if partial.is_dir() and not is_locked(partial):
            shutil.rmtree(partial, ignore_errors=True)


class _Reader(threading.Thread):
    """Reads the pending chunks in order, one ahead of the solver (a bounded queue)."""

    def __init__(self, data: TraceSource, pending: list[int], chunk: int) -> None:
        super().__init__(name="calab-prefetch", daemon=True)
        self.data, self.pending, self.chunk = data, pending, chunk
        self.blocks: queue.Queue = queue.Queue(maxsize=1)
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            for index in self.pending:
                start, stop = _chunk_bounds(index, self.chunk, self.data.shape[0])
                block = self.data.read(start, stop)
                item = (index, (block, block_crc32(block)))
                while not self.stopping.is_set():
                    try:
                        self.blocks.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stopping.is_set():
                    return
        except BaseException as exc:  # handed to the solving thread, which raises it
            self.blocks.put((None, exc))
            return
        self.blocks.put((None, None))

    def stop(self) -> None:
        self.stopping.set()
        while self.is_alive():
            try:
                self.blocks.get_nowait()
            except queue.Empty:
                pass
            self.join(timeout=0.05)


def _run_local(data: TraceSource, store: OutputStore, manifest: dict, pending: list[int], lam_cells: np.ndarray,
               backend: str | None, advance: Callable[[int], Any] | None, client: Any) -> None:
    chunk, n_cells, settings = manifest["chunk_cells"], data.shape[0], manifest["parameters"]
    backend_name = manifest.get("backend")

    def finish(index: int, start: int, stop: int, results: dict, input_crc: int) -> None:
        manifest["chunk_crc32"][str(index)] = store.write_block(start, stop, results)
        manifest["input_crc32"][str(index)] = input_crc
        manifest["done"].append(index)
        manifest["solved_on"][str(index)] = backend_name
        store.write_manifest(manifest)

    reader = _Reader(data, pending, chunk)
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="calab-writer")
    writing: concurrent.futures.Future | None = None
    # The progress callback runs on the writer thread as soon as a chunk is listed; an
    # exception it raises would die there (concurrent.futures only logs it), so it is kept
    # and raised here, after the chunk in flight has been stored.
    callback_errors: list[BaseException] = []

    def report(done: concurrent.futures.Future, cells: int) -> None:
        if done.exception() is None and advance is not None and not callback_errors:
            try:
                advance(cells)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                callback_errors.append(exc)

    reader.start()
    try:
        while True:
            index, item = reader.blocks.get()
            if index is None:
                if item is not None:
                    raise item
                break
            block, input_crc = item
            start, stop = _chunk_bounds(index, chunk, n_cells)
            _check_input_crc(input_crc, manifest["input_crc32"].get(str(index)), start, stop, data.where)
            check_finite(block, start, data.where)
            results = solve_block(block, settings, lam_cells[start:stop], backend)
            del block, item
            if writing is not None:
                writing.result()
            if callback_errors:
                break
            writing = writer.submit(finish, index, start, stop, results, input_crc)
            writing.add_done_callback(lambda f, n=stop - start: report(f, n))
        if writing is not None:
            writing.result()
    finally:
        reader.stop()
        writer.shutdown(wait=True)  # a chunk being written is finished and listed
    if callback_errors:
        raise callback_errors[0]


def _run_distributed(data: TraceSource, store: OutputStore, manifest: dict, pending: list[int],
                     lam_cells: np.ndarray, backend: str | None, advance: Callable[[int], Any] | None,
                     client: Any) -> None:
    run_on_client(client, data, store, manifest, pending, lam_cells, backend, advance)


def run_on_client(
    client: Any, data: Any, store: Any, manifest: dict, pending: list[int], lam_cells: np.ndarray,
    backend: str | None, advance: Callable[[int], Any] | None,
) -> None:
    """Solve ``pending`` chunks on a ``dask.distributed`` cluster and record them.

    Workers re-open file sources themselves; for an array source this process reads each
    chunk and sends it.  At most two chunks per worker are in flight, so an array source
    is never held in memory whole.
    """
    from distributed import as_completed

    chunk, n_cells, settings = manifest["chunk_cells"], data.shape[0], manifest["parameters"]
    reopenable = data._reopenable()
    shipped = data if reopenable else _detached(data)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    token = uuid.uuid4().hex[:8]
    queue = iter(pending)

    def submit(index: int) -> Any:
        start, stop = _chunk_bounds(index, chunk, n_cells)
        block = None if reopenable else data.read(start, stop)
        return client.submit(
            solve_and_write_chunk, shipped, store, index, chunk, settings, lam_cells[start:stop], backend, block,
            manifest["input_crc32"].get(str(index)), key=f"calab-chunk-{index}-{token}", pure=False,
        )

    running = as_completed()
    for _ in range(2 * workers):
        index = next(queue, None)
        if index is None:
            break
        running.add(submit(index))
    try:
        for future in running:
            index, solved_on, written, input_crc = future.result()
            manifest["chunk_crc32"][str(index)] = written
            manifest["input_crc32"][str(index)] = input_crc
            manifest["done"].append(index)
            manifest["solved_on"][str(index)] = solved_on
            store.write_manifest(manifest)
            start, stop = _chunk_bounds(index, chunk, n_cells)
            if advance is not None:
                advance(stop - start)
            following = next(queue, None)
            if following is not None:
                running.add(submit(following))
    except BaseException:
        client.cancel(list(running.futures))
        raise


def _detached(data: Any) -> Any:
    """A copy of an array source without its array (workers get blocks, not the array)."""
    light = copy.copy(data)
    light._array = None
    return light

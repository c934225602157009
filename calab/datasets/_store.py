"""The Zarr output of a streamed deconvolution: arrays, manifest and lock.

Layout of ``OUT.zarr`` (a Zarr group, format of the installed zarr)::

    activity       (n_cells, n_timepoints) float32   non-negative activity
    baseline       (n_cells,)              float64   estimated baseline level
    iterations     (n_cells,)              int64     FISTA iterations run
    converged      (n_cells,)              bool      convergence criterion met

Cells of chunks not finished yet read as NaN (activity, baseline, reconvolution), -1
(iterations) and False (converged).
    reconvolution  (n_cells, n_timepoints) float32   only with save_reconvolution=True
    calab_manifest.json                              parameters, source, finished chunks
    .calab.lock                                      held (flock) while a run writes

Activity is stored as float32 because the solver computes in float32: the values are the
in-memory result's exactly (which returns them widened to float64).  One solve chunk of
cells covers whole Zarr chunks, so chunks never share a file and a chunk written by a run
that was killed is simply written again by the resumed run.

The manifest is replaced atomically (:func:`calab._atomic.atomic_write`) after each chunk's
arrays are written, so a chunk is listed only once its data are complete.  With each
finished chunk it records the CRC-32 of every array's values as written
(``chunk_crc32``), and for every chunk whose input was read the CRC-32 of that input
(``input_crc32``): a resumed run reads the finished chunks back and solves again any
that no longer match (a truncated, emptied, overwritten or deleted chunk file), and
refuses to continue from a recording whose cells changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from calab._atomic import atomic_write
from calab.datasets._sources import DatasetDamageWarning

__all__ = [
    "MANIFEST_NAME",
    "DatasetDamageWarning",
    "DatasetDamagedError",
    "DatasetLockedError",
    "DatasetMismatchError",
    "OutputLock",
    "OutputStore",
    "PER_CELL_FIELDS",
]

MANIFEST_NAME = "calab_manifest.json"
LOCK_NAME = ".calab.lock"
MANIFEST_FORMAT = 1
#: Largest Zarr chunk written (bytes); long recordings are split along time too.
ZARR_CHUNK_BYTES = 64 << 20


class DatasetLockedError(RuntimeError):
    """The output is being written by another live run (its lock is held)."""


class DatasetMismatchError(ValueError):
    """An existing output was made with other parameters or from another recording."""


class DatasetDamagedError(ValueError):
    """An existing output's manifest is unreadable or inconsistent, so it cannot be resumed."""


def block_crc32(values: Any) -> int:
    """CRC-32 of an array's bytes (C order, its own dtype): cheap, and catches any change."""
    array = np.ascontiguousarray(values)
    return zlib.crc32(memoryview(array.reshape(-1)).cast("B")) if array.size else zlib.crc32(b"")


class OutputLock:
    """An exclusive, non-blocking lock on ``<output>/.calab.lock``.

    ``fcntl.flock`` locks belong to the open file: the kernel releases them when the
    process dies, however it dies (kill -9 included), so a crashed run never leaves a
    stale lock behind.  The file records who holds it, for the refusal message.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, output: Path) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DatasetLockedError(
                f"{output} is being written by another calab run{holder}. Wait for it to finish "
                "or stop it (a run that was killed releases its lock by itself), or choose another output."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError from None
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f" (pid {info['pid']} on {info['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def is_locked(directory: Path) -> bool:
    """Whether a live run holds ``directory``'s lock (used to clean abandoned partial outputs)."""
    path = directory / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        _lock_fd(fd)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


#: What unfinished cells read as: NaN activity/baseline, -1 iterations, not converged.
_FILL = {"activity": np.nan, "reconvolution": np.nan, "baseline": np.nan, "iterations": -1, "converged": False,
         "alpha": np.nan, "pve": np.nan}
#: Per-cell arrays of each method's output (``calab deconvolve`` / ``calab cadecon --native``).
PER_CELL_FIELDS = {
    "catune": (("baseline", np.float64), ("iterations", np.int64), ("converged", bool)),
    "cadecon": (("alpha", np.float64), ("baseline", np.float64), ("pve", np.float64)),
}


def _create_array(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any) -> Any:
    """Create an array in a group with zarr 3 (``create_array``) or zarr 2 (``create_dataset``)."""
    fill = _FILL[name]
    if hasattr(group, "create_array"):
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
    return group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)  # pragma: no cover


def zarr_time_chunk(chunk_cells: int, n_timepoints: int) -> int:
    """Frames per Zarr chunk: all of them unless one chunk would exceed ZARR_CHUNK_BYTES."""
    frames = ZARR_CHUNK_BYTES // max(1, 4 * chunk_cells)
    return int(max(1, min(n_timepoints, frames)))


class OutputStore:
    """Read/write access to an output directory's arrays and manifest."""

    FIELDS_2D = ("activity", "reconvolution")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._group: Any = None

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def read_manifest(self) -> dict | None:
        """The checked manifest, or None when there is none.

        Raises
        ------
        DatasetDamagedError
            The file is not JSON, not a calab manifest of this format, or its fields are
            inconsistent (the message names the field and how to start again).
        """
        if not self.manifest_path.is_file():
            return None
        try:
            with open(self.manifest_path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError) as exc:
            raise DatasetDamagedError(
                f"{self.manifest_path} is unreadable ({exc}); the output is damaged. {_START_AGAIN}"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise DatasetDamagedError(
                f"{self.manifest_path} is not a calab manifest of format {MANIFEST_FORMAT}. {_START_AGAIN}"
            )
        problem = _manifest_problem(manifest)
        if problem is not None:
            raise DatasetDamagedError(f"{self.manifest_path} is damaged: {problem}. {_START_AGAIN}")
        manifest.setdefault("solved_on", {})
        manifest.setdefault("input_crc32", {})
        manifest.setdefault("chunk_crc32", {})
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        text = json.dumps(manifest, indent=1, sort_keys=True)
        with atomic_write(self.manifest_path, "w") as handle:
            handle.write(text)

    # ------------------------------------------------------------------ arrays
    def create(self, n_cells: int, n_timepoints: int, chunk_cells: int, save_reconvolution: bool,
               method: str = "catune") -> None:
        """Create the (empty) output arrays; nothing but metadata is written.

        ``method`` picks the per-cell arrays (:data:`PER_CELL_FIELDS`): ``baseline``,
        ``iterations``, ``converged`` for FISTA with a given kernel; ``alpha``,
        ``baseline``, ``pve`` for CaDecon's finalisation (activity = spike counts).
        """
        zarr = _zarr()
        group = zarr.open_group(str(self.path), mode="w")
        frames = zarr_time_chunk(chunk_cells, n_timepoints)
        _create_array(group, "activity", (n_cells, n_timepoints), (chunk_cells, frames), np.float32)
        if save_reconvolution:
            _create_array(group, "reconvolution", (n_cells, n_timepoints), (chunk_cells, frames), np.float32)
        for name, dtype in PER_CELL_FIELDS[method]:
            _create_array(group, name, (n_cells,), (chunk_cells,), dtype)
        self._group = group

    def group(self) -> Any:
        if self._group is None:
            self._group = _zarr().open_group(str(self.path), mode="r+")
        return self._group

    def write_block(self, start: int, stop: int, block: dict) -> dict[str, int]:
        """Write the results of cells ``start:stop`` (one whole chunk of every array).

        Returns the CRC-32 of each array's values as stored (its dtype), for the manifest.
        """
        group = self.group()
        checksums = {}
        for name, values in block.items():
            stored = np.asarray(values, dtype=group[name].dtype)
            group[name][start:stop] = stored
            checksums[name] = block_crc32(stored)
        return checksums

    def chunk_damage(self, start: int, stop: int, recorded: dict[str, int] | None) -> str | None:
        """Why the finished chunk of cells ``start:stop`` cannot be trusted, or None if it can.

        Every array's values are read back: a chunk file that cannot be decoded, or values
        whose CRC-32 differs from ``recorded`` (the manifest's), is damaged.  Without a
        record (an output of an older calab), a chunk that reads as the fill value (a
        missing file: NaN activity or baseline) is damaged.
        """
        group = self.group()
        for name in self.stored_arrays():
            try:
                values = group[name][start:stop]
            except Exception as exc:  # noqa: BLE001 - any decoding failure means damage
                return f"{name} cannot be read ({type(exc).__name__}: {exc})"
            if recorded is not None and name in recorded:
                if block_crc32(values) != recorded[name]:
                    return f"{name} differs from what was written (checksum mismatch)"
            elif name in ("activity", "baseline") and np.isnan(values).any():
                return f"{name} reads as the fill value (its chunk file is missing)"
        return None

    def stored_arrays(self) -> list[str]:
        """Names of the result arrays in the store (activity, per-cell fields, ...)."""
        group = self.group()
        return [name for name in ("activity", "reconvolution", "alpha", "baseline", "pve", "iterations",
                                  "converged") if name in group]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_group": None}


_START_AGAIN = ("Pass overwrite=True (calab deconvolve / cadecon --out ... --force) to start the output "
                "again, or choose another output.")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _manifest_problem(manifest: dict) -> str | None:
    """What is inconsistent in a manifest's fields (None when it can be trusted)."""
    for name in ("chunk_cells", "n_cells", "n_timepoints"):
        value = manifest.get(name)
        if not _is_count(value) or value < 1:
            return f"'{name}' must be a positive integer, found {value!r:.60}"
    for name in ("parameters", "source"):
        if not isinstance(manifest.get(name), dict):
            return f"'{name}' must be an object, found {manifest.get(name)!r:.60}"
    total = -(-manifest["n_cells"] // manifest["chunk_cells"])
    done = manifest.get("done")
    if not isinstance(done, list):
        return f"'done' must be a list of finished chunk numbers, found {done!r:.60}"
    bad = [index for index in done if not _is_count(index) or not 0 <= index < total]
    if bad:
        return f"'done' must hold chunk numbers 0 to {total - 1}, found {bad[0]!r:.60}"
    if len(set(done)) != len(done):
        return "'done' lists a chunk twice"
    for name in ("solved_on", "input_crc32", "chunk_crc32"):
        if name in manifest and not isinstance(manifest[name], dict):
            return f"'{name}' must be an object, found {manifest[name]!r:.60}"
    for index, crc in manifest.get("input_crc32", {}).items():
        if not _is_count(crc):
            return f"'input_crc32' of chunk {index} must be an integer, found {crc!r:.60}"
    for index, crcs in manifest.get("chunk_crc32", {}).items():
        if not isinstance(crcs, dict) or not all(_is_count(v) for v in crcs.values()):
            return f"'chunk_crc32' of chunk {index} must map array names to integers, found {crcs!r:.60}"
    return None


def _zarr() -> Any:
    from calab.loaders._common import require_module

    return require_module("zarr", "write Zarr outputs")


def remove_output(path: Path) -> None:
    """Delete an output directory made by calab (refuses anything else)."""
    if not (path / MANIFEST_NAME).is_file() and not (path / LOCK_NAME).is_file():
        raise FileExistsError(f"{path} exists and is not a calab output; refusing to delete it.")
    shutil.rmtree(path)

"""The one FISTA driver skeleton: segment → sync → compact, shared by every backend.

A backend supplies a :class:`FistaBatch` — the device state of a batch of cells and
four operations on it — through :meth:`calab.backends.base.Backend.fista_batch`; the
skeleton :func:`run_segments` does the rest, identically everywhere:

1. **segment**: ``batch.advance()`` runs some iterations with no host sync (one step on
   the CPU, ``check_every`` fused steps on CUDA, a compiled ``lax.while_loop`` on JAX);
2. **sync**: ``batch.active()`` reads the per-cell active mask back to the host, once;
3. **compact**: when ``batch.compact_now(running)`` says so, the cells that finished are
   written to the outputs (``harvest``) and the batch is gathered down to the cells still
   running (``compact``; a backend may pad to a bucketed size with inactive rows).

Finished cells are frozen by the step's mask (or dropped before the next step), so when
they are harvested does not change any result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from calab.backends.types import FistaOutcome

__all__ = ["FistaBatch", "run_segments"]


class FistaBatch(ABC):
    """A batch of cells being iterated on a device (rows are positions in the batch)."""

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows in the batch, inactive padding included."""

    @abstractmethod
    def advance(self) -> None:
        """Run one segment of iterations for every active row (no host sync needed)."""

    @abstractmethod
    def active(self) -> np.ndarray:
        """Host ``(rows,)`` bool copy of the active mask: the one sync per segment."""

    def compact_now(self, running: int) -> bool:
        """Whether to drop finished rows now, given ``running`` live active rows.

        Default: as soon as one row finished (right when the batch is re-gathered every
        step anyway).  Backends with costly gathers wait for more rows to finish.
        """
        return running < self.rows

    @abstractmethod
    def harvest(self, index: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """``(x rows on the device, iterations int64, converged bool)`` of rows ``index``."""

    @abstractmethod
    def compact(self, keep: np.ndarray) -> None:
        """Keep rows ``keep`` (in order), optionally followed by inactive padding rows."""


def run_segments(
    batch: FistaBatch,
    out_x: Any,
    scatter: Callable[[Any, np.ndarray, Any], Any],
) -> FistaOutcome:
    """Iterate ``batch`` until every cell finished; return the outcome in input order.

    Parameters
    ----------
    batch : FistaBatch
        Rows ``0 … n_cells − 1`` are the cells in input order; rows beyond are padding.
    out_x : device array, shape (n_cells, n), float32
        Output buffer, holding the starting point (finished rows are overwritten).
    scatter : callable
        ``scatter(out_x, rows, values) -> out_x`` writes device rows into the output
        (in place, or functionally for immutable arrays).

    Returns
    -------
    FistaOutcome
    """
    n_cells = int(out_x.shape[0])
    iterations = np.zeros(n_cells, dtype=np.int64)
    converged = np.zeros(n_cells, dtype=bool)
    rows = np.concatenate([np.arange(n_cells), np.full(batch.rows - n_cells, -1)])
    while True:
        batch.advance()
        mask = batch.active()
        live = rows >= 0
        running_mask = mask & live
        running = int(np.count_nonzero(running_mask))
        if running and not batch.compact_now(running):
            continue
        done = np.flatnonzero(~mask & live)
        if done.size:
            x_done, iterations_done, converged_done = batch.harvest(done)
            out_x = scatter(out_x, rows[done], x_done)
            iterations[rows[done]] = iterations_done
            converged[rows[done]] = converged_done
        if running == 0:
            return FistaOutcome(out_x, iterations, converged)
        keep = np.flatnonzero(running_mask)
        batch.compact(keep)
        rows = np.concatenate([rows[keep], np.full(batch.rows - keep.size, -1)])

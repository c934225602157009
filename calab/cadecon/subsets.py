"""Deterministic subset rectangles of the CaDecon loop (spec ``indeca.md`` §6.2).

The same seeded 32-bit LCG, Fisher–Yates shuffle of tiles and draw order as the
reference app's ``subset-store.ts``, so a seed gives the same rectangles as the browser.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Subset", "place_subsets", "subset_size"]

_LCG_MULTIPLIER = 1664525
_LCG_INCREMENT = 1013904223
_LCG_MODULUS = 2**32


class Subset(NamedTuple):
    """A rectangle of the recording: frames ``[t_start, t_stop)`` of cells ``[cell_start, cell_stop)``."""

    t_start: int
    t_stop: int
    cell_start: int
    cell_stop: int

    @property
    def n_frames(self) -> int:
        return self.t_stop - self.t_start

    @property
    def n_cells(self) -> int:
        return self.cell_stop - self.cell_start


class _Lcg:
    def __init__(self, seed: int) -> None:
        self.state = int(seed) % _LCG_MODULUS

    def draw(self) -> float:
        self.state = (self.state * _LCG_MULTIPLIER + _LCG_INCREMENT) % _LCG_MODULUS
        return self.state / _LCG_MODULUS


def subset_size(n_cells: int, n_frames: int, num_subsets: int, coverage: float, aspect_ratio: float) -> tuple[int, int]:
    """``(n_sub_cells, t_sub)``: the size shared by every subset."""
    scale = math.sqrt(coverage / num_subsets)
    t_sub = max(1, min(n_frames, math.floor(n_frames * scale * math.sqrt(aspect_ratio))))
    n_sub = max(1, min(n_cells, math.floor(n_cells * scale / math.sqrt(aspect_ratio))))
    return n_sub, t_sub


def place_subsets(
    n_cells: int, n_frames: int, num_subsets: int, coverage: float, aspect_ratio: float, seed: int
) -> list[Subset]:
    """The ``num_subsets`` rectangles the app places for this recording and seed.

    Tiles of a ``rows x cols`` grid are shuffled and each subset is placed at a random
    offset inside its tile; subsets beyond the number of tiles are placed uniformly at
    random (and may overlap).

    Parameters
    ----------
    n_cells, n_frames : int
        Size of the recording (cells x frames), both >= 1.
    num_subsets : int
        Number of rectangles K >= 1.
    coverage : float
        Fraction of the recording covered by all K rectangles together, in (0, 1].
    aspect_ratio : float
        > 1 makes rectangles longer in time and shorter in cells.
    seed : int
        LCG seed (taken modulo 2**32).
    """
    n_sub, t_sub = subset_size(n_cells, n_frames, num_subsets, coverage, aspect_ratio)
    rng = _Lcg(seed)
    cols = max(1, n_frames // t_sub)
    rows = max(1, n_cells // n_sub)
    slots = list(range(cols * rows))
    for i in range(len(slots) - 1, 0, -1):
        j = math.floor(rng.draw() * (i + 1))
        slots[i], slots[j] = slots[j], slots[i]
    tile_w, tile_h = n_frames // cols, n_cells // rows
    subsets: list[Subset] = []
    for k in range(min(num_subsets, len(slots))):
        slot = slots[k]
        col, row = slot % cols, slot // cols
        width = n_frames - col * tile_w if col == cols - 1 else tile_w
        height = n_cells - row * tile_h if row == rows - 1 else tile_h
        t_start = col * tile_w + math.floor(rng.draw() * (max(0, width - t_sub) + 1))
        cell_start = row * tile_h + math.floor(rng.draw() * (max(0, height - n_sub) + 1))
        subsets.append(Subset(t_start, t_start + t_sub, cell_start, cell_start + n_sub))
    for _ in range(len(subsets), num_subsets):
        t_start = math.floor(rng.draw() * max(1, n_frames - t_sub + 1))
        cell_start = math.floor(rng.draw() * max(1, n_cells - n_sub + 1))
        subsets.append(Subset(t_start, t_start + t_sub, cell_start, cell_start + n_sub))
    return subsets

"""A sweep's grids: one labelled picture per Z value (per prompt), its cells in index
order whatever an earlier run made, written beside the first cell's image as
``NAME-grid.SUFFIX`` (where the contact sheet links grids from)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..output.grid import grid_image
from ..output.labelled_grid import labelled_grid


@dataclass(frozen=True)
class SweepGrid:
    """One grid: where it goes, its labels, and the run indices of each cell's images
    (``cells[row][column]``: X along a row, Y down the rows)."""

    path: Path
    column_labels: tuple[str, ...]
    row_labels: tuple[str, ...] | None
    title: str | None
    cells: tuple[tuple[tuple[int, ...], ...], ...]

    @property
    def indices(self) -> set[int]:
        return {index for row in self.cells for cell in row for index in cell}


def plan_grids(images) -> list[SweepGrid]:
    """The grids of the planned images (``PlannedImage``) that belong to sweeps: one per
    sweep and Z value, its path beside its first image."""
    groups: dict[tuple, dict[tuple[int, int], list]] = {}
    first: dict[tuple, object] = {}
    for image in sorted(images, key=lambda image: image.index):
        cell = image.job.sweep
        if cell is None:
            continue
        z = cell.position[2] if len(cell.position) > 2 else None
        key = (cell.sweep_id, z)
        first.setdefault(key, (image, cell))
        x = cell.position[0]
        y = cell.position[1] if len(cell.position) > 1 else 0
        groups.setdefault(key, {}).setdefault((x, y), []).append(image.index)
    grids = []
    for key, by_cell in groups.items():
        image, cell = first[key]
        axes = cell.axes
        columns = tuple(axes[0].cell_label(i) for i in range(len(axes[0].values)))
        rows = None
        if len(axes) > 1:
            rows = tuple(axes[1].cell_label(i) for i in range(len(axes[1].values)))
        title = axes[2].cell_label(key[1]) if key[1] is not None else None
        layout = tuple(
            tuple(tuple(by_cell.get((x, y), ())) for x in range(len(columns)))
            for y in range(len(rows) if rows else 1)
        )
        path = image.path.with_name(f"{image.path.stem}-grid{image.path.suffix}")
        grids.append(SweepGrid(path, columns, rows, title, layout))
    return grids


def grid_picture(grid: SweepGrid, pixels: Callable[[int], np.ndarray | None]) -> np.ndarray:
    """The labelled picture of ``grid``; ``pixels(index)`` gives an image's pixels (None:
    not made). A cell of several images (``--num-images``) shows them tiled."""
    cells = []
    for row in grid.cells:
        drawn = []
        for indices in row:
            shown = [p for p in (pixels(index) for index in indices) if p is not None]
            drawn.append(None if not shown else shown[0] if len(shown) == 1 else grid_image(shown))
        cells.append(drawn)
    return labelled_grid(cells, list(grid.column_labels), _list(grid.row_labels), grid.title)


def _list(labels):
    return None if labels is None else list(labels)

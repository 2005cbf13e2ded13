"""The grid image of a run: every image tiled in one picture."""

from __future__ import annotations

import math

import numpy as np


def grid_image(images: list[np.ndarray]) -> np.ndarray:
    """The images tiled in a near-square grid, row by row; unused cells are black.
    Images of different sizes are placed in cells as large as the largest."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    grid = np.zeros((rows * cell_h, columns * cell_w, 3), dtype=np.uint8)
    for position, image in enumerate(images):
        row, column = divmod(position, columns)
        top, left = row * cell_h, column * cell_w
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid

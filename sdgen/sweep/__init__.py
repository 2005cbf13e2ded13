"""Sweeps (A1111's X/Y/Z plot): ``--sweep KEY=V1,V2,...`` on up to three axes.

- :mod:`.axes`: ``KEY=VALUES`` read into checked values, with ranges and prompt S/R.
- :mod:`.cells`: a job turned into one job per cell, in index order, sharing a seed.
- :mod:`.grids`: one labelled grid per Z value, from whichever run made each cell.
"""

from .axes import MAX_AXES, PROMPT_SR, SWEEP_KEYS, Axis, parse_axes
from .cells import CONFIRM_ABOVE, SweepCell, SweepTooLargeError, cell_count, expand

__all__ = [
    "CONFIRM_ABOVE",
    "MAX_AXES",
    "PROMPT_SR",
    "SWEEP_KEYS",
    "Axis",
    "SweepCell",
    "SweepTooLargeError",
    "cell_count",
    "expand",
    "parse_axes",
]

"""A grid with its axes written on it, as AUTOMATIC1111's X/Y/Z plot draws one: the X
values above the columns, the Y values left of the rows, and a title (the Z value).

Small cells are enlarged (by whole pixel repeats) to at least ``MIN_CELL`` pixels, and
labels are wrapped to their column's width, so a grid of many tiny-model images stays
readable. The text is drawn in DejaVu Sans, the font matplotlib ships; without it,
Pillow's own.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Cells are shown at least this many pixels wide and high.
MIN_CELL = 128
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_MISSING = (200, 200, 200)


def labelled_grid(
    cells: list[list[np.ndarray | None]],
    column_labels: list[str],
    row_labels: list[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """``cells[row][column]`` (uint8 RGB arrays; None for a cell with no image, drawn
    grey) tiled with their labels; returns the picture as a uint8 RGB array."""
    from PIL import Image, ImageDraw

    rows, columns = len(cells), len(column_labels)
    shapes = [cell.shape[:2] for row in cells for cell in row if cell is not None]
    cell_h = max((shape[0] for shape in shapes), default=MIN_CELL)
    cell_w = max((shape[1] for shape in shapes), default=MIN_CELL)
    scale = max(1, math.ceil(MIN_CELL / min(cell_h, cell_w)))
    cell_h, cell_w = cell_h * scale, cell_w * scale
    size = min(48, max(14, (cell_w + cell_h) // 25))
    font = _font(size)
    pad = max(4, size // 3)
    line = size + size // 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> float:
        return measure.textlength(text, font=font)

    column_text = [_wrap(label, cell_w - 2 * pad, width) for label in column_labels]
    top = max((len(lines) for lines in column_text), default=0) * line + 2 * pad
    left = 0
    row_text: list[list[str]] = []
    if row_labels:
        widest = max(width(label) for label in row_labels) + 2 * pad
        left = math.ceil(min(widest, max(cell_w, 12 * size))) + 1
        row_text = [_wrap(label, left - 2 * pad, width) for label in row_labels]
    total_w = left + columns * cell_w
    title_text = _wrap(title, total_w - 2 * pad, width) if title else []
    heading = len(title_text) * line + (2 * pad if title_text else 0)
    total_h = heading + top + rows * cell_h
    canvas = Image.new("RGB", (total_w, total_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _lines(draw, title_text, font, width, (0, total_w), pad, line)
    for column, lines in enumerate(column_text):
        x0 = left + column * cell_w
        _lines(draw, lines, font, width, (x0, x0 + cell_w), heading + pad, line)
    for row in range(rows):
        y0 = heading + top + row * cell_h
        if row_text:
            lines = row_text[row]
            first = y0 + (cell_h - len(lines) * line) // 2
            _lines(draw, lines, font, width, (0, left), first, line)
        for column in range(columns):
            cell = cells[row][column] if column < len(cells[row]) else None
            x0 = left + column * cell_w
            if cell is None:
                draw.rectangle([x0, y0, x0 + cell_w - 1, y0 + cell_h - 1], fill=_MISSING)
                continue
            big = np.repeat(np.repeat(cell[..., :3], scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(np.ascontiguousarray(big, dtype=np.uint8)), (x0, y0))
    return np.asarray(canvas)


def _lines(draw, lines, font, width, span, top, line) -> None:
    """``lines`` centred between ``span``'s x bounds, from ``top`` down."""
    for number, text in enumerate(lines):
        x = span[0] + (span[1] - span[0] - width(text)) / 2
        draw.text((x, top + number * line), text, fill=_TEXT, font=font)


def _wrap(text: str, room: float, width) -> list[str]:
    """``text`` broken into lines no wider than ``room``: at spaces, and inside a word
    only where the word alone is wider."""
    room = max(room, width("W"))
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if width(candidate) <= room:
                current = candidate
                continue
            if current:
                lines.append(current)
            while width(word) > room:  # a word wider than the column: break it
                cut = max(1, _fitting(word, room, width))
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current)
    return lines


def _fitting(word: str, room: float, width) -> int:
    """How many leading characters of ``word`` fit in ``room``."""
    count = 0
    while count < len(word) and width(word[: count + 1]) <= room:
        count += 1
    return count


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        path = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
        return ImageFont.truetype(path, size)
    except Exception:  # no matplotlib font: Pillow's own, at the size asked for
        return ImageFont.load_default(size=size)

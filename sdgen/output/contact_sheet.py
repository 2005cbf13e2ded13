"""An HTML contact sheet of an output folder: ``index.html`` beside the images.

The page shows every image of the folder's manifest (in sub-folders too) as a thumbnail
linking to the full image, with its prompt, negative prompt, seed, sampler, steps, CFG
scale, size, model and file name under it. Above them it links each run's grid: the
``NAME-grid.SUFFIX`` beside an image ``NAME.SUFFIX`` (``--grid`` names a run's grid after
its first image). A sweep's images are also laid out as tables, one per sweep and Z
value, X across and Y down, as its grids are. It is one self-contained file: inline CSS, no
JavaScript, no external resources, and relative links, so the folder can be moved or
shared as a whole.

``ContactSheet`` keeps the page up to date during a run without re-reading the whole
manifest after each image: it renders each record's card once, remembers how far it has
read every manifest file (other shards' too) and reads only what was appended since.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ..errors import OutputError
from .files import remove_temporaries, write_atomically
from .manifest import manifest_paths, read_manifest, read_records

CONTACT_SHEET_NAME = "index.html"

_STYLE = """
:root { color-scheme: light dark; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; background: #f4f4f5; color: #18181b; }
h1 { margin: 0 0 20px; font-size: 20px; font-weight: 600; }
h2 { margin: 0 0 12px; font-size: 16px; font-weight: 600; }
.grid { display: grid; gap: 20px;
  grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); }
.grids { margin-bottom: 28px;
  grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); }
figure { margin: 0; background: #fff; border: 1px solid #e4e4e7; border-radius: 8px;
  overflow: hidden; display: flex; flex-direction: column; }
figure a.thumb { display: block; background: #e4e4e7; line-height: 0; }
figure img { display: block; width: 100%; height: auto; }
figcaption { padding: 10px 12px 12px; }
.prompt { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
.negative { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere;
  color: #71717a; }
dl { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: 2px 10px;
  font-size: 12px; color: #52525b; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
.sweeps { margin-bottom: 28px; overflow-x: auto; }
table.sweep { border-collapse: collapse; margin-bottom: 20px; }
table.sweep caption { text-align: left; font-weight: 600; padding-bottom: 6px; }
table.sweep th { font-size: 12px; font-weight: 600; padding: 4px 8px; }
table.sweep td { padding: 2px; }
table.sweep img { display: block; width: 128px; height: auto; }
@media (prefers-color-scheme: dark) {
  body { background: #18181b; color: #f4f4f5; }
  figure { background: #27272a; border-color: #3f3f46; }
  figure a.thumb { background: #3f3f46; }
  .negative, dl { color: #a1a1aa; }
}
""".strip()


def write_contact_sheet(folder: Path, records: list[dict] | None = None) -> Path:
    """Write ``folder/index.html`` showing the images of ``records`` and return its path.

    ``records`` default to the folder's manifests. When several records name the same
    file, the last one wins (a file regenerated with ``--overwrite`` appears once, with
    its latest parameters); records whose file is no longer on disk are left out. Images
    are ordered by ``index``, then file name. The page is written atomically.
    """
    folder = Path(folder)
    if records is None:
        records = read_manifest(folder)
    shown = _current_records(folder, records)
    grids = grid_files(folder, [record["file"] for record in shown])
    path = folder / CONTACT_SHEET_NAME
    page = render_contact_sheet(shown, grids)
    write_atomically(path, page.encode("utf-8"), overwrite=True)
    return path


class ContactSheet:
    """``folder/index.html``, updated by ``update()`` after each saved image.

    The first ``update()`` reads every manifest of the folder; later ones read only the
    lines appended since, by this run or by other shard processes, and render only their
    cards, so a run of N images costs O(N) reads and renders instead of O(N^2). The page
    itself is still written whole (atomically) each time. A file deleted during the run
    stays on the page until the next run. With several processes writing the page, each
    one checks after writing whether any manifest grew meanwhile and, if so, writes again,
    so the last page written shows every image.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / CONTACT_SHEET_NAME
        self._offsets: dict[Path, int] = {}
        self._started = False
        self._cards: dict[str, tuple[tuple[int, str], str]] = {}  # file -> (order, card)
        self._swept: dict[str, dict] = {}  # file -> record, of the images of sweeps

    def update(self) -> Path:
        """Read what the manifests gained, write the page, and return its path."""
        if not self._started:  # the first update: what a killed writer left goes
            self._started = True
            remove_temporaries(self.folder, {CONTACT_SHEET_NAME})
        self._read_new()
        while True:
            ordered = sorted(self._cards.values())
            grids = grid_files(self.folder, self._cards)
            cards = "\n".join(card for _, card in ordered)
            page = _page(len(ordered), cards, grids, sweep_tables(self._swept.values()))
            try:
                write_atomically(self.path, page.encode("utf-8"), overwrite=True)
            except OutputError:
                # another shard starting up took our temporary for a killed writer's
                write_atomically(self.path, page.encode("utf-8"), overwrite=True)
            if not self._read_new():
                return self.path

    def _read_new(self) -> bool:
        """Add the records appended since the last read; whether there were any."""
        first = not self._offsets
        records = []
        for manifest in manifest_paths(self.folder):
            new, self._offsets[manifest] = read_records(manifest, self._offsets.get(manifest, 0))
            records += new
        if first:  # as read_manifest merges the files: by time, each file in its order
            records.sort(key=lambda record: str(record.get("created") or ""))
        for record in records:
            name = record.get("file")
            if not isinstance(name, str) or not _is_inside(name):
                continue
            self._swept.pop(name, None)
            if (self.folder / name).is_file():
                self._cards[name] = ((_index(record), name), _card(record))
                if isinstance(record.get("sweep"), dict):
                    self._swept[name] = record
            else:
                self._cards.pop(name, None)
        return bool(records)


def render_contact_sheet(records: list[dict], grids: Iterable[str] = ()) -> str:
    """The HTML of a contact sheet showing ``records`` in the order given, after links to
    the grid images ``grids`` (paths relative to the folder)."""
    cards = "\n".join(_card(record) for record in records)
    return _page(len(records), cards, grids, sweep_tables(records))


def grid_files(folder: Path, names: Iterable[str]) -> list[str]:
    """The grids beside the images ``names`` (relative POSIX paths in ``folder``): for
    each ``NAME.SUFFIX``, a file ``NAME-grid.SUFFIX`` that is not itself one of the
    images; in name order. One ``stat`` per image, no folder listing."""
    names = set(names)
    grids = set()
    for name in names:
        image = PurePosixPath(name)
        grid = image.with_name(f"{image.stem}-grid{image.suffix}").as_posix()
        if grid not in names and grid not in grids and (Path(folder) / grid).is_file():
            grids.add(grid)
    return sorted(grids)


def sweep_tables(records: Iterable[dict]) -> str:
    """The images of sweeps as HTML tables, one per sweep and Z value: X values across,
    Y values down, each cell its image's thumbnail; nothing when no record has a
    ``sweep`` field."""
    tables: dict[tuple, dict] = {}
    for record in records:
        sweep = record.get("sweep")
        if not isinstance(sweep, dict):
            continue
        cell, labels = list(sweep.get("cell") or []), list(sweep.get("labels") or [])
        if not cell or len(cell) != len(labels):
            continue
        z = (cell[2], labels[2]) if len(cell) > 2 else None
        table = tables.setdefault(
            (str(sweep.get("id")), z), {"record": record, "x": {}, "y": {}, "cells": {}}
        )
        x, y = cell[0], cell[1] if len(cell) > 1 else 0
        table["x"][x] = labels[0]
        table["y"][y] = labels[1] if len(labels) > 1 else ""
        table["cells"].setdefault((x, y), []).append(record)
    if not tables:
        return ""
    parts = ['<h2>Sweeps</h2>\n<section class="sweeps">']
    for (_, z), table in sorted(tables.items(), key=lambda item: _index(item[1]["record"])):
        caption = str(table["record"].get("prompt") or "")
        if z is not None:
            caption += f" — {z[1]}"
        head = "".join(f"<th>{_text(table['x'][x])}</th>" for x in sorted(table["x"]))
        rows = []
        for y in sorted(table["y"]):
            cells = []
            for x in sorted(table["x"]):
                shown = sorted(table["cells"].get((x, y), []), key=_index)
                links = "".join(
                    f'<a href="{_text(quote(r["file"]))}"><img src="{_text(quote(r["file"]))}"'
                    f' alt="{_text(r["file"])}"></a>'
                    for r in shown
                )
                cells.append(f"<td>{links}</td>")
            rows.append(f"<tr><th>{_text(table['y'][y])}</th>{''.join(cells)}</tr>")
        parts.append(
            f'<table class="sweep"><caption>{_text(caption)}</caption>\n'
            f"<tr><th></th>{head}</tr>\n" + "\n".join(rows) + "\n</table>"
        )
    parts.append("</section>\n")
    return "\n".join(parts)


def _page(count: int, cards: str, grids: Iterable[str] = (), tables: str = "") -> str:
    title = f"sdgen — {count} images"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n"
        f"<h1>{_text(title)}</h1>\n"
        f"{_grid_section(list(grids))}"
        f"{tables}"
        f'<main class="grid">\n{cards}\n</main>\n'
        "</body>\n</html>\n"
    )


def _grid_section(grids: list[str]) -> str:
    """Links to the grid images, as cards above the images; nothing without grids."""
    if not grids:
        return ""
    cards = "\n".join(
        "<figure>\n"
        f'<a class="thumb" href="{_text(quote(name))}"><img src="{_text(quote(name))}"'
        f' alt="{_text("grid " + name)}"></a>\n'
        f"<figcaption><dl><dt>Grid</dt><dd>{_text(name)}</dd></dl></figcaption>\n"
        "</figure>"
        for name in grids
    )
    heading = "Grid" if len(grids) == 1 else "Grids"
    return f'<h2>{heading}</h2>\n<section class="grid grids">\n{cards}\n</section>\n'


def _current_records(folder: Path, records: list[dict]) -> list[dict]:
    latest: dict[str, dict] = {}
    for record in records:
        name = record.get("file")
        if not isinstance(name, str) or not _is_inside(name):
            continue
        latest.pop(name, None)  # a later record replaces an earlier one
        latest[name] = record
    present = [record for name, record in latest.items() if (folder / name).is_file()]
    return sorted(present, key=lambda record: (_index(record), record["file"]))


def _is_inside(name: str) -> bool:
    """A relative POSIX path below the folder (a name template may make sub-folders):
    no ``.`` or ``..`` parts, not absolute, no backslashes."""
    if not name or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and all(part not in (".", "..") for part in path.parts)


def _index(record: dict) -> int:
    try:
        return int(record.get("index", 0))
    except (TypeError, ValueError):
        return 0


def _card(record: dict) -> str:
    name = record["file"]
    href = _text(quote(name))
    width, height = record.get("width"), record.get("height")
    size_attributes = ""
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        size_attributes = f' width="{width}" height="{height}"'
    prompt = str(record.get("prompt") or "")
    negative = str(record.get("negative_prompt") or "")
    details = [
        ("Seed", record.get("seed")),
        ("Sampler", record.get("sampler_label") or record.get("sampler")),
        ("Steps", record.get("steps")),
        ("CFG scale", _number(record.get("guidance_scale"))),
        ("Size", f"{width}x{height}" if width is not None and height is not None else None),
        ("Model", record.get("model")),
        ("File", name),
    ]
    rows = "".join(
        f"<dt>{_text(label)}</dt><dd>{_text(value)}</dd>"
        for label, value in details
        if value is not None and value != ""
    )
    lines = [
        "<figure>",
        f'<a class="thumb" href="{href}"><img src="{href}" alt="{_text(prompt)}"'
        f"{size_attributes}></a>",
        "<figcaption>",
        f'<p class="prompt">{_text(prompt)}</p>',
    ]
    if negative:
        lines.append(f'<p class="negative"><strong>Negative:</strong> {_text(negative)}</p>')
    lines += [f"<dl>{rows}</dl>", "</figcaption>", "</figure>"]
    return "\n".join(lines)


def _number(value) -> str | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _text(value) -> str:
    return html.escape(str(value), quote=True)

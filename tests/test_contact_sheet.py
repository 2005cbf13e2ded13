"""The HTML contact sheet: content, escaping, de-duplication, and a real browser load.

The browser checks use headless Chromium from Debian (``apt-get install -y chromium``).
They are skipped when ``/usr/bin/chromium`` is missing, unless ``SDGEN_REQUIRE_CHROMIUM=1``
(as in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from browser import images_loaded, run_chromium
from PIL import Image

from sdgen.output.contact_sheet import ContactSheet, write_contact_sheet
from sdgen.output.manifest import append_manifest

NASTY_PROMPT = "a <b>bold</b> \"quoted\" & 'single' cat"
COLOURS = {
    "red-cat.png": ((255, 0, 0), 0),
    "green dog.png": ((0, 200, 0), 1),  # a space in the file name
    "blue-bird.png": ((0, 0, 255), 2),
}


def _record(file: str, index: int, seed: int, prompt: str = "a cat", **extra) -> dict:
    record = {
        "prompt": prompt,
        "negative_prompt": "",
        "steps": 25,
        "sampler": "ddim",
        "sampler_label": "DDIM",
        "guidance_scale": 7.5,
        "seed": seed,
        "width": 64,
        "height": 48,
        "model": "tiny",
        "version": "0.1.0",
        "file": file,
        "sha256": "0" * 64,
        "index": index,
        "batch_size": 3,
        "seconds": 1.0,
        "load_seconds": 0.5,
        "created": "2024-01-01T00:00:00+00:00",
    }
    record.update(extra)
    return record


@pytest.fixture
def sheet_folder(tmp_path) -> Path:
    """An output folder with three PNGs and their manifest, plus a stale and a
    superseded record."""
    folder = tmp_path / "out"
    folder.mkdir()
    for name, (colour, _) in COLOURS.items():
        Image.new("RGB", (64, 48), colour).save(folder / name)
    # The first record for blue-bird.png is superseded by a later one (--overwrite).
    append_manifest(folder, _record("blue-bird.png", 2, seed=111))
    append_manifest(folder, _record("red-cat.png", 0, seed=100, negative_prompt="blurry, dark"))
    append_manifest(folder, _record("green dog.png", 1, seed=101, prompt=NASTY_PROMPT))
    append_manifest(folder, _record("gone.png", 3, seed=103))  # deleted since
    append_manifest(folder, _record("blue-bird.png", 2, seed=222, sampler_label="Euler a"))
    return folder


def test_contact_sheet_contents(sheet_folder):
    path = write_contact_sheet(sheet_folder)

    assert path == sheet_folder / "index.html"
    page = path.read_text("utf-8")
    assert "<title>sdgen — 3 images</title>" in page
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page  # no external resources
    assert not list(sheet_folder.glob(".index.html.*"))  # no temporary file left
    # one thumbnail per image, each linking to the full PNG, in index order
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources == ["red-cat.png", "green%20dog.png", "blue-bird.png"]
    for source in sources:
        assert f'<a class="thumb" href="{source}">' in page
    assert 'loading="lazy"' not in page
    for text in ("Seed", "DDIM", "Euler a", "25", "7.5", "64x48", "tiny", "blurry, dark"):
        assert text in page
    assert html.escape("green dog.png") in page


def test_contact_sheet_escapes_text(sheet_folder):
    page = write_contact_sheet(sheet_folder).read_text("utf-8")

    assert "<b>" not in page
    assert "bold</b>" not in page
    assert html.escape(NASTY_PROMPT, quote=True) in page
    assert "a &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &amp; &#x27;single&#x27; cat" in page


def test_missing_file_left_out_and_latest_record_wins(sheet_folder):
    page = write_contact_sheet(sheet_folder).read_text("utf-8")

    assert "gone.png" not in page
    assert page.count('src="blue-bird.png"') == 1
    assert "222" in page and "111" not in page
    assert "Euler a" in page


def test_explicit_records_and_empty_folder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    page = write_contact_sheet(folder).read_text("utf-8")
    assert "<title>sdgen — 0 images</title>" in page

    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "b.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "a.png")
    records = [_record("b.png", 0, seed=1), _record("a.png", 0, seed=2)]
    (folder / "sub").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "sub" / "c.png")
    records.append(_record("sub/c.png", 0, seed=4))  # a name template's sub-folder
    for outside in ("../escape.png", "/tmp/escape.png", "sub\\..\\..\\escape.png"):
        records.append(_record(outside, 0, seed=3))  # never outside the folder
    page = write_contact_sheet(folder, records).read_text("utf-8")
    # same index: by name
    assert re.findall(r'<img src="([^"]+)"', page) == ["a.png", "b.png", "sub/c.png"]
    assert "escape.png" not in page


def test_incremental_sheet_matches_a_full_one_and_renders_each_card_once(sheet_folder, monkeypatch):
    from sdgen.output import contact_sheet

    rendered = []
    real_card = contact_sheet._card
    monkeypatch.setattr(contact_sheet, "_card", lambda r: rendered.append(r) or real_card(r))
    sheet = ContactSheet(sheet_folder)
    assert sheet.update().read_text("utf-8") == render_full(sheet_folder)
    for n in range(3):  # this run's images, one by one, in other shards' files too
        name = f"new-{n}.png"
        Image.new("RGB", (64, 48), (n, n, n)).save(sheet_folder / name)
        append_manifest(sheet_folder, _record(name, 10 + n, seed=n), shard=(n % 2 + 1, 2))
        before = len(rendered)
        page = sheet.update().read_text("utf-8")
        assert [r["file"] for r in rendered[before:]] == [name]  # only the new card
        assert page == render_full(sheet_folder)
    assert re.findall(r'<img src="([^"]+)"', (sheet_folder / "index.html").read_text())[-3:] == [
        "new-0.png",
        "new-1.png",
        "new-2.png",
    ]


def render_full(folder) -> str:
    """The page ``write_contact_sheet`` makes from the whole manifest."""
    write_contact_sheet(folder)
    return (folder / "index.html").read_text("utf-8")


def test_a_page_written_over_another_shards_newer_one_is_written_again(sheet_folder, monkeypatch):
    """Shard 2 saves an image and writes its page while shard 1 is between reading the
    manifests and writing its own: shard 1 notices the manifest grew and writes again."""
    from sdgen.output import contact_sheet

    sheet = ContactSheet(sheet_folder)
    real_write = contact_sheet.write_atomically
    writes = []

    def another_shard_meanwhile(path, data, overwrite=False):
        if not writes:
            Image.new("RGB", (64, 48), (9, 9, 9)).save(sheet_folder / "theirs.png")
            append_manifest(sheet_folder, _record("theirs.png", 7, seed=7), shard=(2, 2))
        writes.append(data)
        real_write(path, data, overwrite)

    monkeypatch.setattr(contact_sheet, "write_atomically", another_shard_meanwhile)
    page = sheet.update().read_text("utf-8")
    assert len(writes) == 2 and b"theirs.png" not in writes[0]
    assert 'src="theirs.png"' in page and "4 images" in page


# -- a real browser ------------------------------------------------------------------------


def test_contact_sheet_loads_in_chromium(sheet_folder, tmp_path, chromium):
    sheet = write_contact_sheet(sheet_folder)
    shown = len(re.findall(r"<img ", sheet.read_text("utf-8")))
    assert shown == 3

    # The check page is test scaffolding, not part of the product: it loads the sheet in
    # an iframe and reports how many of its images actually decoded.
    assert images_loaded(chromium, sheet, tmp_path) == f"LOADED {shown}/{shown}"

    screenshot = tmp_path / "sheet.png"
    result = run_chromium(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1200,900",
        sheet.as_uri(),
    )
    assert screenshot.is_file(), (
        f"no screenshot\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    with Image.open(screenshot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1200, 900)
        colours = {colour for _, colour in rgb.getcolors(maxcolors=rgb.width * rgb.height)}
    assert len(colours) > 1, "the screenshot is a single colour"
    # the solid-colour thumbnails were painted
    for colour, _ in COLOURS.values():
        assert colour in colours, f"thumbnail colour {colour} not in the screenshot"


def test_file_names_are_url_quoted(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    name = "a#b?c&d 'e\".png"
    Image.new("RGB", (8, 8)).save(folder / name)
    page = write_contact_sheet(folder, [_record(name, 0, seed=1)]).read_text("utf-8")
    assert f'src="{quote(name)}"' in page
    assert f'href="{quote(name)}"' in page

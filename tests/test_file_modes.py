"""What sdgen writes takes the modes the umask asks for, as a plain ``open()`` would:
images, grids, the contact sheet, manifests and the model store; with umask 022 others
can read them, with 077 they cannot."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import RandomPixelsExecutor

from sdgen import store
from sdgen.batch.plan import plan
from sdgen.batch.run import Saved, run
from sdgen.batch.work import Job, OutputOptions
from sdgen.config import GenerationConfig
from sdgen.output import files
from sdgen.output.contact_sheet import ContactSheet, write_contact_sheet
from sdgen.output.files import apply_umask, current_umask, default_mode
from sdgen.output.png import save_png

UMASKS = [0o022, 0o077, 0o002]


@pytest.fixture(params=UMASKS, ids=lambda umask: f"umask-{umask:03o}")
def umask(request):
    """The process umask set to the parameter for the test, and restored after it."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run_with_grid(folder: Path) -> list[Path]:
    config = GenerationConfig("a cat", width=64, height=64, steps=1, seed=3, num_images=2)
    output = OutputOptions(outdir=folder, grid=True)
    the_plan = plan([Job(config, "tiny")], output)
    saved = [
        event for event in run(the_plan, output, RandomPixelsExecutor()) if isinstance(event, Saved)
    ]
    assert len(saved) == 2
    return [event.image.path for event in saved] + [the_plan.grid_path]


def test_a_run_writes_images_grid_manifest_and_contact_sheet_as_the_umask_says(umask, hermetic):
    folder = hermetic / "outputs"
    made = _run_with_grid(folder)
    sheet = ContactSheet(folder).update()
    written = [*made, folder / "manifest.jsonl", sheet]
    assert len(written) == 5 and all(path.is_file() for path in written)
    assert {path.name: oct(_mode(path)) for path in written} == {
        path.name: oct(0o666 & ~umask) for path in written
    }
    assert _mode(folder) == 0o777 & ~umask
    readable = all(_mode(path) & stat.S_IROTH for path in written)
    assert readable == (umask == 0o022 or umask == 0o002)


def test_a_rewritten_contact_sheet_and_a_replaced_image_take_the_umask_too(umask, hermetic):
    path = hermetic / "x.png"
    pixels = np.zeros((8, 8, 3), np.uint8)
    save_png(path, pixels, "first")
    path.chmod(0o600)  # as earlier versions of sdgen left every image
    save_png(path, pixels, "second", overwrite=True)
    assert _mode(path) == 0o666 & ~umask
    sheet = write_contact_sheet(hermetic)
    assert _mode(sheet) == 0o666 & ~umask


def test_a_model_in_the_store_is_readable_as_the_umask_says(umask, hermetic):
    def build(folder: Path) -> None:
        # the converter writes into a mkdtemp folder of its own and renames it (0700)
        inner = Path(tempfile.mkdtemp(dir=folder.parent))
        descriptor, name = tempfile.mkstemp(dir=inner)  # 0600
        os.write(descriptor, b"weights")
        os.close(descriptor)
        os.rename(name, inner / "unet.h5")
        folder.rmdir()
        os.replace(inner, folder)

    target = store.install("mine", build, {"family": "sd-v1", "default_size": 64})
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "unet.h5") == 0o666 & ~umask
    assert _mode(target / store.METADATA) == 0o666 & ~umask
    assert _mode(store.store_dir()) == 0o777 & ~umask
    assert store.imported_spec("mine") is not None


def test_apply_umask_gives_temporaries_the_mode_of_a_plain_open(umask, tmp_path):
    descriptor, name = tempfile.mkstemp(dir=tmp_path)
    os.close(descriptor)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    assert _mode(Path(name)) == 0o600 and _mode(folder) == 0o700
    apply_umask(name)
    apply_umask(folder)
    assert _mode(Path(name)) == 0o666 & ~umask == default_mode()
    assert _mode(folder) == 0o777 & ~umask == default_mode(is_dir=True)


def test_the_umask_is_read_without_proc_too(umask, monkeypatch):
    assert current_umask() == umask

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(files, "open", no_proc, raising=False)
    assert current_umask() == umask
    assert os.umask(umask) == umask  # and it is left as it was


def test_a_filesystem_without_modes_still_gets_the_file(hermetic, monkeypatch):
    """gcsfuse, s3fs and SMB refuse chmod; the image is written all the same."""

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(files.os, "chmod", refuse)
    path = hermetic / "y.png"
    save_png(path, np.zeros((8, 8, 3), np.uint8), "text")
    assert path.is_file()

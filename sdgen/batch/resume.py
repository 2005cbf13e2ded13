"""What an earlier run already made: its seeds, its finished files, its numbers.

An image is finished when the folder's manifests hold a record of its identity
(:mod:`sdgen.batch.identity`) whose file is there with the recorded sha256, wherever
that file is (in ``--outdir``; ``--out`` names its file), or when the PNG at its path
says so in its infotext (its manifest line was lost to a kill between the two writes).

Every image made in ``--outdir`` gets a folder-wide number, its run index plus the
run's *base*; each record keeps its ``number`` and the ``run_images`` of its run, so a
run's base (``number - index``) tells its images apart from other runs' and its block
of numbers ``[base, base + run_images)`` stays reserved until it is finished. A new run
starts after every block, number and numbered file of the folder (``next_number``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import OutputExistsError
from ..output.manifest import read_manifest
from ..output.png import parse_infotext, read_infotext
from ..weights import sha256_of
from . import identity
from .naming import leading_number, template_fields
from .work import Job, OutputOptions, PlannedImage

#: Where a record stands in the folder's manifests, oldest first (added on reading).
_POSITION = "_position"


@dataclass(frozen=True)
class Run:
    """An earlier run of the request being planned.

    base: its images' numbers less their run index. size: the images it holds, all
    shards together. seeds: the seed it chose for each job it recorded, by the job's
    first run index.
    """

    base: int
    size: int
    seeds: dict[int, int]


@dataclass
class EarlierRun:
    """The records of an output folder's manifests, indexed for planning: the latest
    record of each file, by identity and by run index, and the numbered image files in
    ``--outdir`` that no record names."""

    by_file: dict[str, dict] = field(default_factory=dict)
    by_identity: dict[tuple, list[dict]] = field(default_factory=dict)
    by_index: dict[int, list[dict]] = field(default_factory=dict)
    unrecorded: list[tuple[int, Path]] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path, outdir: Path | None = None) -> EarlierRun:
        """The records of ``folder``; with ``outdir``, also its numbered files."""
        earlier = cls()
        for position, record in enumerate(read_manifest(folder)):  # oldest first
            if isinstance(record.get("file"), str):
                earlier.by_file.pop(record["file"], None)
                earlier.by_file[record["file"]] = {**record, _POSITION: position}
        # newest first: the latest record of an identity or an index wins
        for record in reversed(earlier.by_file.values()):
            earlier.by_identity.setdefault(identity.identity(record), []).append(record)
            if isinstance(record.get("index"), int) and isinstance(record.get("seed"), int):
                earlier.by_index.setdefault(record["index"], []).append(record)
        if outdir is not None:
            earlier.unrecorded = _unrecorded_numbers(outdir, set(earlier.by_file))
        return earlier

    def find_run(self, jobs: list[tuple[int, Job]]) -> Run | None:
        """The latest earlier run of this request: of ``(first run index, job)`` pairs,
        whose jobs' images it recorded at the same run index, with the same identity (a
        job without a seed: any seed). None if there is none."""
        found = []  # (position, base, first index, seed) of each matching record
        for start, job in jobs:
            wanted = identity.identity(PlannedImage(start, 0, job, Path()).parameters(), False)
            seed = job.config.seed
            for k in range(job.config.num_images):
                for record in self.by_index.get(start + k, ()):
                    if seed is not None and record["seed"] != seed + k:
                        continue
                    if identity.identity(record, with_seed=False) == wanted:
                        found.append((record[_POSITION], _base(record), start, record["seed"] - k))
        if not found:
            return None
        base = max(found)[1]
        seeds: dict[int, int] = {}
        for _, record_base, start, seed in sorted(found, reverse=True):
            if record_base == base:
                seeds.setdefault(start, seed)
        size = max(
            _reserved(record) - base for record in self.by_file.values() if _base(record) == base
        )
        return Run(base, size, seeds)

    def next_number(self, jobs: Iterable[Job]) -> int:
        """The first number after every run's block, every recorded number and every
        numbered file of the folder: where a new run of ``jobs`` starts.

        A numbered file no record names counts too (A1111's outputs, a deleted
        manifest), unless it is sdgen's image of one of ``jobs``: one that a
        concurrent shard of this run has just renamed into place and not yet recorded,
        so that every shard of a new run starts at the same number."""
        reserved = [_reserved(record) for record in self.by_file.values()]
        following = max(reserved, default=0)
        expected = None
        for number, path in sorted(self.unrecorded, reverse=True):
            if number < following:
                break
            if expected is None:
                expected = [_without_seed(_expected_infotext(job)) for job in jobs]
            if _without_seed(_infotext_of(path)) not in expected:
                following = number + 1
                break
        return following

    def finished(self, image: PlannedImage, output: OutputOptions) -> PlannedImage | None:
        """``image`` marked ``done`` at the file of the latest record of its identity
        that is there and intact (with ``--out``, only at its own path); else None."""
        key = identity.identity(image.parameters())
        if output.out is not None:
            record = self.by_file.get(image.path.relative_to(output.folder).as_posix())
            candidates = [record] if record is not None else []
            candidates = [r for r in candidates if identity.identity(r) == key]
        else:
            candidates = self.by_identity.get(key, [])
        for record in candidates:
            if not _inside(record["file"]):
                continue
            path = output.folder / record["file"]
            if path.is_file() and (sha256 := sha256_of(path)) == record.get("sha256"):
                number = record.get("number")
                return replace(image, path=path, done=True, sha256=sha256, number=number)
        return None


def check_free(image: PlannedImage, output: OutputOptions) -> PlannedImage:
    """``image`` (not finished by the manifest) as it may be made at its path: as is
    where nothing is there (or ``--overwrite``), ``done`` and ``recover`` where the PNG
    there is this very image whose manifest line was lost. Raises
    ``OutputExistsError`` for any other file there; the message suggests
    ``--overwrite`` only for ``--out``, a file the user named."""
    path = image.path
    if not path.exists():
        return image
    parameters = image.parameters()
    if _infotext_of(path) == _parsed(identity.infotext(parameters)):
        return replace(image, done=True, recover=True, sha256=sha256_of(path))
    if output.overwrite:
        return image
    if output.out is not None:
        raise OutputExistsError(
            f"{path} already exists and was not made by sdgen with these settings; "
            "pass --overwrite to replace it"
        )
    if "index" in template_fields(output.name_template):
        way_out = "use another --outdir"
    else:
        way_out = "add {index} to --name-template or use another --outdir"
    raise OutputExistsError(f"{path} already exists and holds another image; {way_out}")


def _base(record: dict) -> int:
    """The record's run base: its number less its run index (0 for records written
    before numbers, whose names held the run index itself)."""
    index = record.get("index")
    number = record.get("number")
    if not isinstance(index, int):
        return 0
    return number - index if isinstance(number, int) else 0


def _reserved(record: dict) -> int:
    """The first number after the record's own and its run's block."""
    index = record.get("index")
    if not isinstance(index, int):
        return 0
    base = _base(record)
    size = record.get("run_images")
    return max(base + index + 1, base + size if isinstance(size, int) else 0)


def _inside(name: str) -> bool:
    """Whether a manifest's file name stays inside its folder."""
    return not (Path(name).is_absolute() or ".." in Path(name).parts)


def _unrecorded_numbers(outdir: Path, recorded: set[str]) -> list[tuple[int, Path]]:
    try:
        entries = list(os.scandir(outdir))
    except OSError:
        return []
    found = []
    for entry in entries:
        number = leading_number(entry.name)
        if number is not None and entry.name not in recorded and entry.is_file():
            found.append((number, Path(entry.path)))
    return found


def _expected_infotext(job: Job) -> dict:
    probe = replace(job, config=replace(job.config, seed=0))
    return _parsed(identity.infotext(PlannedImage(0, 0, probe, Path()).parameters()))


def _parsed(text: str | None) -> dict | None:
    """The settings of an infotext without sdgen's version (not part of what an image
    is); None if there is none."""
    if not text:
        return None
    found = parse_infotext(text)
    found.pop("Version", None)
    return found


def _infotext_of(path: Path) -> dict | None:
    """The parsed infotext of the image at ``path``, if sdgen wrote it."""
    try:
        text = read_infotext(path) or ""
    except (OSError, SyntaxError, ValueError, AttributeError):
        return None
    if "Version: sdgen" not in text:
        return None
    return _parsed(text)


def _without_seed(settings: dict | None) -> dict | None:
    if settings is None:
        return None
    return {key: value for key, value in settings.items() if key != "Seed"}

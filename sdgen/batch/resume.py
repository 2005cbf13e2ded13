"""What an earlier run already made: its seeds, its finished files, its lost lines.

An image counts as finished when the folder's manifests hold a record for its file with
the same identity (:mod:`sdgen.batch.identity`) and the file's sha256, or when the PNG's
own infotext says so (its manifest line was lost to a kill between the two writes).
Anything else at an image's path is refused unless ``--overwrite``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import OutputExistsError
from ..output.manifest import read_manifest
from ..output.png import parse_infotext, read_infotext
from ..weights import sha256_of
from . import identity
from .work import Job, OutputOptions, PlannedImage


@dataclass
class EarlierRun:
    """The records of an output folder's manifests, indexed for planning: the latest
    record of each file, and the records of each run index (to find earlier seeds)."""

    by_file: dict[str, dict] = field(default_factory=dict)
    by_index: dict[int, list[dict]] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> EarlierRun:
        earlier = cls()
        for record in read_manifest(folder):
            earlier.by_file[record.get("file")] = record
        for record in earlier.by_file.values():
            index = record.get("index")
            if isinstance(index, int) and isinstance(record.get("seed"), int):
                earlier.by_index.setdefault(index, []).append(record)
        return earlier

    def seed(self, job: Job, first_index: int) -> int | None:
        """The seed an earlier run chose for ``job`` (whose images start at run index
        ``first_index``), so a resumed run without --seed makes the same images instead
        of new ones; None if no finished image of it is recorded."""
        wanted = None
        for k in range(job.config.num_images):
            for record in self.by_index.get(first_index + k, ()):
                if wanted is None:  # the job's identity, its seed left out
                    probe = PlannedImage(first_index, 0, job, Path())
                    wanted = identity.identity(probe.parameters(), with_seed=False)
                if identity.identity(record, with_seed=False) == wanted:
                    return record["seed"] - k
        return None


def status(image: PlannedImage, earlier: EarlierRun, output: OutputOptions) -> PlannedImage:
    """``image`` marked ``done`` (with its ``sha256``) if an earlier run finished it, and
    ``recover`` too if only its PNG says so. Raises ``OutputExistsError`` for another
    file at its path, unless ``output.overwrite``."""
    path = image.path
    if output.force or not path.exists():
        return image
    parameters = image.parameters()
    record = earlier.by_file.get(path.relative_to(output.folder).as_posix())
    same = record is not None and identity.identity(record) == identity.identity(parameters)
    if same:
        sha256 = sha256_of(path)
        if record.get("sha256") == sha256:
            return replace(image, done=True, sha256=sha256)
    elif _infotext_matches(path, parameters):
        return replace(image, done=True, recover=True, sha256=sha256_of(path))
    if output.overwrite:
        return image
    raise OutputExistsError(
        f"{path} already exists and was not made by sdgen with these settings; "
        "pass --overwrite to replace it"
    )


def _infotext_matches(path: Path, parameters: dict) -> bool:
    try:
        found = parse_infotext(read_infotext(path) or "")
    except (OSError, SyntaxError, ValueError):
        return False
    expected = parse_infotext(identity.infotext(parameters))
    found.pop("Version", None)
    expected.pop("Version", None)
    return found == expected

"""A sweep's cells: one job per combination of its axes' values, in index order (X
fastest, then Y, then Z, as A1111's X/Y/Z plot fills its grid).

Every cell is an ordinary job: its images get their own files, manifest lines and
infotext, and resume as any batch does. A cell's job carries a :class:`SweepCell`
naming its sweep and its place in it, which the manifest records (not part of an
image's identity: the same image made outside a sweep is the same work) and from which
the grids and the contact sheet's tables are laid out. The cells of a sweep share one
seed; without ``--seed`` the planner chooses it once for the whole sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace

from ..errors import SdgenError, UsageError
from .axes import PROMPT_SR, Axis

#: More images than this need ``--yes`` (in a terminal, a question instead).
CONFIRM_ABOVE = 1000


class SweepTooLargeError(UsageError):
    """A sweep makes more than ``CONFIRM_ABOVE`` images and ``yes`` was not given."""

    def __init__(self, images: int):
        self.images = images
        super().__init__(
            f"this sweep makes {images} images, more than {CONFIRM_ABOVE}; "
            "add --yes to make them (or fewer values)"
        )


@dataclass(frozen=True)
class SweepCell:
    """Where a job sits in its sweep.

    sweep_id: the same for every cell of one sweep of one prompt (and again in a rerun).
    axes: the sweep's axes, X first. position: the index along each axis.
    """

    sweep_id: str
    axes: tuple[Axis, ...]
    position: tuple[int, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """``("Steps: 20", "CFG scale: 7")``: this cell's value on each axis."""
        return tuple(axis.cell_label(p) for axis, p in zip(self.axes, self.position, strict=True))

    def record(self) -> dict:
        """The manifest's ``sweep`` field."""
        return {
            "id": self.sweep_id,
            "axes": [axis.label for axis in self.axes],
            "cell": list(self.position),
            "labels": list(self.labels),
        }


def cell_count(axes: tuple[Axis, ...]) -> int:
    """How many cells ``axes`` make."""
    count = 1
    for axis in axes:
        count *= len(axis.values)
    return count


def positions(axes: tuple[Axis, ...]):
    """Every cell's position, X fastest."""
    for reversed_position in itertools.product(*(range(len(a.values)) for a in reversed(axes))):
        yield tuple(reversed(reversed_position))


def expand(job, axes: tuple[Axis, ...]) -> list:
    """The cells of ``job`` (a ``sdgen.batch.work.Job``) over ``axes``; ``UsageError``
    for a cell whose settings do not go together (naming it), or a ``prompt-sr`` text
    the prompt lacks."""
    if not axes:
        return [job]
    sweep_id = _sweep_id(job, axes)
    cells = []
    for position in positions(axes):
        config, model = job.config, job.model
        changes: dict = {}
        for axis, index in zip(axes, position, strict=True):
            value = axis.values[index]
            if axis.field == "model":
                model = value
            elif axis.field == "size":
                changes.update(width=value[0], height=value[1])
            elif axis.field == PROMPT_SR:
                changes.update(_replaced(config, axis.values[0], value, changes))
            else:
                changes[axis.field] = value
        cell = SweepCell(sweep_id, axes, position)
        try:
            config = replace(config, **changes)
        except SdgenError as error:
            raise UsageError(f"sweep cell {', '.join(cell.labels)}: {error}") from None
        cells.append(replace(job, config=config, model=model, sweep=cell))
    return cells


def _replaced(config, find: str, put: str, changes: dict) -> dict:
    prompt = changes.get("prompt", config.prompt)
    negative = changes.get("negative_prompt", config.negative_prompt)
    if find not in prompt and find not in negative:
        raise UsageError(f"prompt-sr: {find!r} is not in the prompt {prompt!r}")
    return {"prompt": prompt.replace(find, put), "negative_prompt": negative.replace(find, put)}


def _sweep_id(job, axes: tuple[Axis, ...]) -> str:
    """A name for this sweep of this job, the same in a rerun of the same request."""
    config = job.config
    described = [
        [(axis.key, list(axis.value_labels)) for axis in axes],
        config.prompt,
        config.negative_prompt,
        job.model,
        job.line_number,
    ]
    text = json.dumps(described, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

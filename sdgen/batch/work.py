"""The units of a batch as plain data: a job, its output options, a planned image, a
failure and a plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import GenerationConfig
from .naming import NAME_TEMPLATE

if TYPE_CHECKING:
    from ..text.dynamic import PromptTemplate

#: Exit status of a run that finished but could not make every image.
EXIT_SOME_FAILED = 3


@dataclass(frozen=True)
class Job:
    """One prompt's worth of work: a config (its seed may be unset) and a model name.

    embeddings: ``(name, sha256)`` of each textual-inversion embedding its prompts use,
        found when the job was checked (``sdgen.service.read_jobs``), for its identity.
    loras: the ``sdgen.adapters.lora.uses.LoraUse`` of each LoRA it merges (its config's and
        its prompt's tags), found and read when the job was checked.
    sweep: where the job sits in a sweep (a ``sdgen.sweep.SweepCell``), or None.
    template: the dynamic prompt its prompts were expanded from (None: plain text). With
        ``template.per_image``, ``config`` holds the template itself and each image
        expands it with its own seed when the batch is planned (``sdgen.batch.plan``).
    """

    config: GenerationConfig
    model: str
    line_number: int | None = None
    embeddings: tuple[tuple[str, str], ...] = ()
    loras: tuple = ()
    sweep: object | None = None
    template: PromptTemplate | None = None

    @property
    def per_image(self) -> bool:
        """Whether each image of this job expands its template with its own seed."""
        return self.template is not None and self.template.per_image


@dataclass(frozen=True)
class OutputOptions:
    """Where images go and what happens to existing ones.

    out: one file for a single image; with several, ``NAME-0.png``, ``NAME-1.png``, ...
    outdir: the folder for templated names when ``out`` is not given [outputs].
    name_template: ``str.format`` template for names in ``outdir`` [NAME_TEMPLATE].
    overwrite: replace existing files that were made with other settings [False].
    force: regenerate every image, even those an earlier run finished [False].
    grid: also save one image showing all images of the run [False].
    shard: (K, N): make only the images whose index is K-1 modulo N [(1, 1)].
    """

    outdir: Path = Path("outputs")
    out: Path | None = None
    name_template: str = NAME_TEMPLATE
    overwrite: bool = False
    force: bool = False
    grid: bool = False
    shard: tuple[int, int] = (1, 1)

    @property
    def folder(self) -> Path:
        """The folder that holds the manifest: where ``out`` points, or ``outdir``."""
        return self.out.parent if self.out is not None else self.outdir


@dataclass(frozen=True)
class PlannedImage:
    """Image ``k`` of ``job`` (whose config has its seed set), number ``index`` of the
    run. ``done``: an earlier run made it with the same parameters; ``recover``: its PNG
    is finished but its manifest line was lost (a kill between the two). ``sha256``: the
    finished file's hash, when ``done``. ``number``: its number in ``--outdir`` (what
    ``{index}`` in its name became; None for ``--out``)."""

    index: int
    k: int
    job: Job
    path: Path
    done: bool = False
    recover: bool = False
    sha256: str | None = None
    number: int | None = None

    @property
    def seed(self) -> int | None:
        """The image's seed: the job's plus ``k`` (None while the plan has not chosen
        the job's seed yet)."""
        seed = self.job.config.seed
        return None if seed is None else seed + self.k

    def parameters(self) -> dict:
        """The image's manifest fields, from every identity contributor."""
        from .identity import parameters

        return parameters(self)


@dataclass(frozen=True)
class Failure:
    """A line or an image that could not be made, and why."""

    message: str
    line_number: int | None = None
    indices: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        """How many images this failure costs (a bad line counts as one)."""
        return max(1, len(self.indices))

    def __str__(self) -> str:
        where = []
        if self.line_number is not None:
            where.append(f"line {self.line_number}")
        if self.indices:
            noun = "image" if len(self.indices) == 1 else "images"
            where.append(f"{noun} {', '.join(str(i) for i in self.indices)}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class Plan:
    """Every image of a run (of this shard), the lines and images already known to fail,
    where the grid goes (None: no grid), and how many images the run has in all shards
    (recorded with each image, so the run's block of numbers stays reserved).
    ``sweep_grids``: the labelled grids of its sweeps (``sdgen.sweep.SweepGrid``)."""

    images: list[PlannedImage]
    failures: list[Failure] = field(default_factory=list)
    grid_path: Path | None = None
    run_images: int = 0
    sweep_grids: list = field(default_factory=list)

    @property
    def todo(self) -> list[PlannedImage]:
        return [image for image in self.images if not image.done]


@dataclass(frozen=True)
class JobFailure:
    """What an executor yields for images ``ks`` of a job that could not be made."""

    ks: list[int]
    message: str

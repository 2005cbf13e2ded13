"""The service layer: a generate request in; jobs planned, run, and summed up.

The CLI (and later a server) only translates its options into a ``GenerateRequest``
and reports what a ``Generation`` yields. The rules live here: which jobs a request
makes, what is refused before any weights load, where images are made, and which exit
status a run ends with.

    request = GenerateRequest(prompt="a red apple", model="tiny", settings={"steps": 4})
    generation = start_generation(request)
    for event in generation.events():  # Saved or Failed, as images finish
        ...
    summary = generation.summary
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__
from .batch.checks import TextSources
from .batch.executors import LoadOptions
from .batch.expand import expander, jobs_of
from .batch.run import Failed, Saved
from .batch.work import EXIT_SOME_FAILED, Failure, Job, OutputOptions, Plan
from .config import GenerationConfig
from .errors import SdgenError, UsageError

#: ``say(message)``: one progress line for a person (the CLI prints it on stderr).
Say = Callable[[str], None]


@dataclass(frozen=True)
class GenerateRequest:
    """Everything one ``sdgen generate`` asks for.

    prompt / prompts_file: exactly one of them.
    settings: ``GenerationConfig`` fields for every image (a prompts-file line's own
        values win).
    model: the model's name; ``checkpoint``: a checkpoint file or folder to use instead,
        converted into the store on first use.
    output, load: where images go, and how models are loaded.
    ray_address, ray_workers: run on Ray (``"local"`` starts a local instance).
    sweep: ``KEY=V1,V2,...`` axes (X, Y, Z; see :mod:`sdgen.sweep`): every job becomes
        one job per combination of values, with labelled grids.
    yes: make a sweep of more than ``CONFIRM_ABOVE`` images without refusing.
    prompt_mode: ``plain``, ``random`` or ``combinatorial``: how ``{a|b}`` and
        ``__wildcard__`` in the prompts are read (see :mod:`sdgen.text.dynamic`);
        wildcards_dir: where ``__name__`` finds ``name.txt`` [``$SDGEN_HOME/wildcards``].
    """

    prompt: str | None = None
    prompts_file: Path | None = None
    settings: Mapping[str, object] = field(default_factory=dict)
    model: str = "sd-v1.4"
    checkpoint: Path | None = None
    output: OutputOptions = field(default_factory=OutputOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    ray_address: str | None = None
    ray_workers: int | None = None
    sweep: tuple[str, ...] = ()
    yes: bool = False
    prompt_mode: str = "plain"
    wildcards_dir: Path | None = None


@dataclass
class Summary:
    """What a run did, for the report and ``--json``."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    records: list[dict] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    grid: Path | None = None
    grids: list[Path] = field(default_factory=list)
    load_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    device: object | None = None  # the DeviceSettings of the first model loaded

    @property
    def exit_code(self) -> int:
        """0; 1 when every image failed; ``EXIT_SOME_FAILED`` when only some did."""
        if not self.failed:
            return 0
        return EXIT_SOME_FAILED if self.done or self.skipped else 1

    def as_json(self) -> dict:
        summary = {
            "version": __version__,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "models": self.models,
            "load_seconds": {k: round(v, 3) for k, v in self.load_seconds.items()},
            "total_seconds": round(self.seconds, 3),
            "grid": str(self.grid) if self.grid else None,
            "grids": [str(path) for path in self.grids],
            "images": self.records,
        }
        if self.device is not None:
            summary.update(
                device=self.device.device,
                runtime=self.device.runtime,
                xla=self.device.xla,
                mixed_precision=self.device.mixed_precision,
            )
        return summary


def read_jobs(request: GenerateRequest, say: Say | None = None) -> tuple[list[Job], list[Failure]]:
    """The jobs of ``request`` and the prompts-file lines that could not become one.

    A bad single prompt raises (``SdgenError``); a bad line of a prompts file becomes a
    ``Failure`` naming its line, so the other lines still run, except for a dynamic
    prompt that cannot be expanded (``DynamicPromptError``, naming its line): a missing
    wildcard is rarely one line's mistake. A combinatorial template makes a job per
    expansion; a random one, a job whose images expand it when it is planned (see
    :mod:`sdgen.batch.plan`)."""
    jobs, failures, _ = _read_jobs(request, say)
    return jobs, failures


def _warned(jobs: list[Job], request: GenerateRequest, say: Say | None) -> list[Job]:
    """``jobs``, after a warning for each negative prompt's LoRA tags, which are ignored
    (as in A1111). Both runtimes merge LoRAs, so none is refused here."""
    from .adapters.lora.uses import negative_warnings

    for warning in negative_warnings(jobs) if say is not None else ():
        say(warning)
    return jobs


def _read_jobs(request: GenerateRequest, say: Say | None):
    """``read_jobs``, and the ``expand(job, seed)`` that ``plan`` gives each image of a
    random template."""
    if (request.prompt is None) == (request.prompts_file is None):
        raise UsageError("give either a PROMPT or --prompts-file, not both or neither")
    from .runtimes import RUNTIMES

    if request.load.runtime not in RUNTIMES:  # before any weight is resolved
        raise UsageError(
            f"unknown runtime {request.load.runtime!r}; choose one of: {', '.join(RUNTIMES)}"
        )
    if request.load.weights_dir is not None:  # a mistyped folder, not missing files
        from .weights import check_weights_dir

        check_weights_dir(request.load.weights_dir)
    if request.load.runtime == "openvino":  # refuse before any work, not per image
        from .runtimes.openvino import check_options

        check_options(request.load.xla, request.load.mixed_precision)
    model = request.model
    if request.checkpoint is not None:
        from .store import checkpoint_model

        if say is not None:
            say(f"using checkpoint {request.checkpoint} ...")
        model = checkpoint_model(request.checkpoint).name
    from .batch.image_task import read_images

    settings = read_images(request.settings)  # once: every job and sweep cell shares them
    from .adapters.lora.uses import LoraFinder
    from .adapters.textual_inversion import EmbeddingLibrary
    from .sweep import parse_axes
    from .text.dynamic import DynamicPrompts

    axes = parse_axes(request.sweep, settings)  # every value checked before any line
    sources = TextSources(
        EmbeddingLibrary(request.load.embeddings_dir), LoraFinder(request.load.lora_dir)
    )
    dynamic = DynamicPrompts(request.prompt_mode, request.wildcards_dir)
    expand = expander(dynamic, sources)
    if request.prompts_file is None:
        job = Job(GenerationConfig(prompt=request.prompt, **settings), model)
        jobs = _warned(jobs_of(job, axes, dynamic, sources), request, say)
        return _confirmed(jobs, request), [], expand
    jobs, failures = _file_jobs(request, settings, model, (axes, dynamic, sources))
    return _confirmed(_warned(jobs, request, say), request), failures, expand


def _file_jobs(request: GenerateRequest, settings: dict, model: str, expansion):
    """The checked jobs of each line of ``request.prompts_file`` and the lines that
    failed. A line whose image cannot be read stops the run (``ImageInputError``, naming
    the file and line), as a dynamic prompt that cannot be expanded does."""
    from .batch.prompts_file import read_prompts_file
    from .errors import DynamicPromptError
    from .images.source import ImageInputError

    axes, dynamic, sources = expansion
    jobs, failures = [], []
    for line in read_prompts_file(request.prompts_file):
        if line.error and line.fatal:  # an image that cannot be read: before any work
            raise ImageInputError(f"{request.prompts_file}, {line.error}")
        if line.error:
            failures.append(Failure(line.error.split(": ", 1)[1], line.line_number))
            continue
        overrides = {**settings, **line.overrides}
        line_model = overrides.pop("model", model)
        try:
            job = Job(
                GenerationConfig(prompt=line.prompt, **overrides), line_model, line.line_number
            )
            jobs += jobs_of(job, axes, dynamic, sources)
        except DynamicPromptError as error:
            raise DynamicPromptError(f"line {line.line_number}: {error}") from None
        except SdgenError as error:
            failures.append(Failure(str(error), line.line_number))
    return jobs, failures


def _confirmed(jobs: list[Job], request: GenerateRequest) -> list[Job]:
    """``jobs``, unless they are a sweep of more images than ``CONFIRM_ABOVE`` that
    ``request.yes`` does not allow (``SweepTooLargeError``)."""
    from .sweep import CONFIRM_ABOVE, SweepTooLargeError

    images = sum(job.config.num_images for job in jobs)
    if request.sweep and images > CONFIRM_ABOVE and not request.yes:
        raise SweepTooLargeError(images)
    return jobs


def make_executor(request: GenerateRequest, say: Say | None = None, download_progress=None):
    """Where images are made: this process, or Ray actors."""
    if request.ray_address is not None:
        from .batch.executors import RayExecutor

        if say is not None:
            say(f"starting Ray ({request.ray_address}) ...")
        return RayExecutor(request.load, address=request.ray_address, workers=request.ray_workers)
    from .batch.executors import LocalExecutor

    return LocalExecutor(request.load, say=say, download_progress=download_progress)


@dataclass
class Generation:
    """A planned request: iterate ``events()`` once to make its images; ``summary`` is
    complete when they end. The contact sheet of the output folder is kept up to date
    as images are saved (not for ``--out``, a single named file)."""

    plan: Plan
    output: OutputOptions
    executor: object
    progress: Callable | None = None
    started: float = field(default_factory=time.perf_counter)
    summary: Summary = field(default_factory=Summary)

    @property
    def already_made(self) -> int:
        return len(self.plan.images) - len(self.plan.todo)

    def events(self) -> Iterator[Saved | Failed]:
        from .batch.run import run

        summary = self.summary
        summary.total = len(self.plan.images)
        summary.models = sorted({image.job.model for image in self.plan.images})
        sheet = None
        if self.output.out is None:
            from .output.contact_sheet import ContactSheet

            sheet = ContactSheet(self.output.outdir)
        try:
            the_plan = self._without_missing_models()
            on_saved = None if sheet is None else (lambda _folder: sheet.update())
            for event in run(the_plan, self.output, self.executor, self.progress, on_saved):
                if isinstance(event, Failed):
                    summary.failed += event.failure.count
                else:
                    record = {**event.record, "path": str(event.image.path)}
                    summary.records.append({**record, "skipped": event.skipped})
                    summary.skipped += event.skipped
                    summary.done += not event.skipped
                yield event
        finally:
            self.executor.close()
        if sheet is not None and summary.records:  # also when every image was there
            sheet.update()
        if self.plan.grid_path is not None and summary.records:
            summary.grid = self.plan.grid_path
        summary.grids = [grid.path for grid in self.plan.sweep_grids if grid.path.exists()]
        summary.load_seconds = dict(self.executor.load_seconds)
        devices = [p.device for p in getattr(self.executor, "pipelines", {}).values()]
        summary.device = devices[0] if devices else None
        summary.seconds = time.perf_counter() - self.started

    def _without_missing_models(self) -> Plan:
        """The plan less the images of models whose weights are missing, each such model
        failing once, as one ``Failure`` for all its images (before, every line of a
        prompts file reported the same missing file). When that model is the whole run,
        its ``WeightsError`` is raised instead: the run ends with one message and exit
        status 1, with no ``image 0:`` in front."""
        prepare = getattr(self.executor, "prepare", None)  # tests inject bare executors
        if prepare is None:
            return self.plan
        todo = self.plan.todo
        failed: dict[str, SdgenError] = {}
        for model in dict.fromkeys(image.job.model for image in todo):
            try:
                prepare(model)
            except SdgenError as error:
                failed[model] = error
        if not failed:
            return self.plan
        if (
            len(failed) == 1
            and not self.plan.failures
            and all(image.job.model in failed for image in self.plan.images)
        ):
            raise next(iter(failed.values()))
        failures = list(self.plan.failures)
        for model, error in failed.items():
            lost = [image for image in todo if image.job.model == model]
            lines = {image.job.line_number for image in lost}
            line = lines.pop() if len(lines) == 1 else None
            failures.append(Failure(str(error), line, tuple(image.index for image in lost)))
        kept = [i for i in self.plan.images if i.done or i.job.model not in failed]
        return replace(self.plan, images=kept, failures=failures)


def start_generation(
    request: GenerateRequest,
    *,
    say: Say | None = None,
    progress: Callable[[int, int], Callable] | None = None,
    download_progress=None,
) -> Generation:
    """Read, check and plan ``request`` and choose its executor. Nothing is loaded, and
    TensorFlow is not imported: every usage error that needs no network is raised here,
    at once; ``events()`` then finds each model's weights and loads a model when its
    first image needs it (a run that only skips loads none).

    progress: ``progress(images, steps)`` makes the step callback for the run, or None.
    """
    from .batch.plan import plan

    started = time.perf_counter()
    jobs, failures, expand = _read_jobs(request, say)
    from .batch.image_task import check_image_tasks

    notes = check_image_tasks(jobs)
    the_plan = plan(jobs, request.output, failures, expand)
    for note in notes if say is not None else ():
        say(note)
    executor = make_executor(request, say, download_progress)
    if isinstance(getattr(executor, "said", None), set):  # the pipeline's notes: not twice
        executor.said.update(notes)
    todo = the_plan.todo
    steps = max((image.job.config.steps for image in todo), default=1)
    callback = progress(len(todo), steps) if progress is not None else None
    return Generation(the_plan, request.output, executor, callback, started)

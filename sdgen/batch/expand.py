"""One request's job made into the jobs it stands for: one per expansion of a
combinatorial dynamic prompt, each one per cell of a sweep, every one checked
(``check_text``); and the ``expand(job, seed)`` that gives each image of a random
template its own job when the batch is planned."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..errors import UsageError
from .checks import check_text
from .work import Job


def expander(dynamic, sources) -> Callable[[Job, int], Job]:
    """``expand(job, seed)``: the checked job of the image of ``seed`` of a job whose
    random template each image expands (a prompt it makes that cannot be used raises,
    naming the line and the seed)."""

    def expand(job: Job, seed: int) -> Job:
        try:
            prompt, negative = dynamic.expand(job.template, seed)
            config = replace(job.config, prompt=prompt, negative_prompt=negative)
            template = replace(job.template, per_image=False)
            return check_text(replace(job, config=config, template=template), sources)
        except UsageError as error:
            where = f"line {job.line_number}, " if job.line_number is not None else ""
            raise type(error)(f"{where}seed {seed}: {error}") from None

    return expand


def _dynamic_jobs(job: Job, dynamic, sources) -> list[Job]:
    """``job`` checked (``check_text``); with a dynamic prompt, one checked job per
    expansion of a combinatorial template, or ``job`` with its random template, which
    each image expands with its seed when the batch is planned."""
    config = job.config
    template = dynamic.template(config.prompt, config.negative_prompt)
    if template is None:
        return [check_text(job, sources)]
    if template.per_image:
        return [replace(check_text(job, sources), template=template)]
    return [
        check_text(
            replace(job, config=replace(config, prompt=p, negative_prompt=n), template=template),
            sources,
        )
        for p, n in dynamic.combinations(template)
    ]


def jobs_of(job: Job, axes, dynamic, sources) -> list[Job]:
    """The checked jobs of ``job``: one per expansion of its dynamic prompt
    (``_dynamic_jobs``), and each of those one per cell of the sweep ``axes``."""
    from ..sweep import expand as sweep_cells

    jobs = []
    for expanded in _dynamic_jobs(job, dynamic, sources):
        cells = sweep_cells(expanded, axes)
        jobs += [check_text(cell, sources) for cell in cells] if axes else cells
    return jobs


__all__ = ["expander", "jobs_of"]

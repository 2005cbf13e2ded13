"""Plan a batch: every image's seed, file name and status, before any model is loaded.

``plan()`` is cheap and needs no model: it fixes every image's seed and file name, works
out which images an earlier run already made (same file, same identity: they are
skipped), and refuses to touch files it did not make, before any weight is loaded.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from ..catalog import get_model_spec
from ..config import MAX_SEED, GenerationConfig
from ..errors import ConfigError, OutputExistsError
from ..output.files import ensure_writable_folder, slugify
from .naming import check_template, image_path
from .resume import EarlierRun, status
from .work import Failure, Job, OutputOptions, Plan, PlannedImage


def plan(jobs: list[Job], output: OutputOptions, failures: list[Failure] | None = None) -> Plan:
    """Seeds, sizes, names and status of every image of ``jobs``; see the module doc.

    ``failures`` (bad lines found earlier) are carried into the plan. Raises
    ``ConfigError`` for a bad name template or shard, ``OutputError`` for an output
    folder that cannot be written, and ``OutputExistsError`` for an existing file that
    is not a finished sdgen image of the same parameters (unless ``overwrite``).
    """
    check_template(output.name_template)
    shard, shards = output.shard
    total = sum(job.config.num_images for job in jobs)
    earlier = EarlierRun.read(output.folder)
    sizes: dict[str, int] = {}  # model -> default size, looked up once per model
    images, failures, index = [], list(failures or []), 0
    for job in jobs:
        if job.model not in sizes:
            sizes[job.model] = get_model_spec(job.model).default_size
        config = job.config
        if config.width is None or config.height is None:
            size = sizes[job.model]
            config = replace(config, width=config.width or size, height=config.height or size)
            job = replace(job, config=config)
        if config.seed is None:
            seed = earlier.seed(job, index) or _random_seed(config)
            job = replace(job, config=replace(config, seed=seed))
        slug = slugify(config.prompt) if output.out is None else None
        for k in range(config.num_images):
            path = image_path(output, index, total, job, k, slug)
            if index % shards == shard - 1:
                images.append(PlannedImage(index, k, job, path))
            index += 1
    paths = [image.path for image in images]
    if len(set(paths)) != len(paths):
        raise ConfigError(
            "two images of this run would get the same file name; see --name-template"
        )
    for folder in sorted({path.parent for path in paths}):
        ensure_writable_folder(folder)
    images = [status(image, earlier, output) for image in images]
    grid_path = None
    if output.grid and images:
        first = images[0].path
        grid_path = first.with_name(f"{first.stem}-grid{first.suffix}")
        if grid_path.exists() and not (output.overwrite or output.force):
            raise OutputExistsError(f"{grid_path} already exists; pass --overwrite to replace it")
    return Plan(images, failures, grid_path)


def _random_seed(config: GenerationConfig) -> int:
    return secrets.randbelow(MAX_SEED - config.num_images + 2)

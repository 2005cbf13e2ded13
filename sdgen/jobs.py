"""Plan and run a generation: seeds, output names, the manifest and the grid.

``plan()`` is cheap and needs no model: it fixes every image's seed and file name and
checks the outputs before any weight is loaded. ``run()`` then generates with a loaded
pipeline and saves each image as soon as it is decoded.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .config import MAX_SEED, GenerationConfig
from .errors import ConfigError, OutputExistsError
from .output import (
    append_manifest,
    ensure_writable_folder,
    format_infotext,
    grid_image,
    save_png,
    slugify,
    write_atomically,
)
from .registry import ModelSpec
from .samplers import get_sampler

#: How a file is named when ``--out`` is not given.
NAME_TEMPLATE = "{index:05d}-{seed}-{slug}.png"


@dataclass(frozen=True)
class OutputOptions:
    """Where images go.

    out: one file for a single image; with several images, ``NAME-0.png``,
        ``NAME-1.png``, ... are derived from it (numbered by image index).
    outdir: the folder for generated names when ``out`` is not given [outputs].
    overwrite: replace existing files instead of refusing [False].
    grid: also save one image showing all images of the run [False].
    """

    outdir: Path = Path("outputs")
    out: Path | None = None
    overwrite: bool = False
    grid: bool = False


@dataclass(frozen=True)
class PlannedImage:
    """One image to make: ``config`` has its seed set; image ``k`` of it is ``index`` in
    the run and uses seed ``config.seed + k``."""

    index: int
    k: int
    config: GenerationConfig
    path: Path

    @property
    def seed(self) -> int:
        return self.config.seed + self.k


@dataclass
class Plan:
    images: list[PlannedImage]
    grid_path: Path | None
    configs: list[GenerationConfig] = field(default_factory=list)


@dataclass(frozen=True)
class SavedImage:
    """An image on disk and its manifest record."""

    path: Path
    record: dict


def plan(configs: list[GenerationConfig], spec: ModelSpec, output: OutputOptions) -> Plan:
    """Fix seeds, sizes and file names for every image of ``configs`` and check the
    outputs can be written: existing files are refused unless ``output.overwrite``."""
    resolved = [
        config.with_defaults(spec.default_size, spec.default_size, _random_seed(config))
        for config in configs
    ]
    total = sum(config.num_images for config in resolved)
    images = []
    for config in resolved:
        for k in range(config.num_images):
            index = len(images)
            path = _image_path(output, index, total, config.seed + k, config.prompt)
            images.append(PlannedImage(index, k, config, path))
    paths = [image.path for image in images]
    grid_path = None
    if output.grid:
        first = paths[0]
        grid_path = first.with_name(f"{first.stem}-grid{first.suffix}")
        paths.append(grid_path)
    if len(set(paths)) != len(paths):
        raise ConfigError("two outputs of this run would get the same file name")
    for folder in sorted({path.parent for path in paths}):
        ensure_writable_folder(folder)
    if not output.overwrite:
        for path in paths:
            if path.exists():
                raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    return Plan(images, grid_path, resolved)


def _random_seed(config: GenerationConfig) -> int:
    return secrets.randbelow(MAX_SEED - config.num_images + 2)


def _image_path(output: OutputOptions, index: int, total: int, seed: int, prompt: str) -> Path:
    if output.out is not None:
        out = output.out
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out} must end in .png")
        return out if total == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
    return output.outdir / NAME_TEMPLATE.format(index=index, seed=seed, slug=slugify(prompt))


def run(
    pipeline,
    the_plan: Plan,
    output: OutputOptions,
    callback: Callable | None = None,
    load_seconds: float = 0.0,
) -> Iterator[SavedImage]:
    """Generate every planned image with ``pipeline`` and save each as it is finished:
    PNG with infotext, then its manifest line. Yields the saved images in order."""
    by_config: dict[int, list[PlannedImage]] = {}
    for image in the_plan.images:
        by_config.setdefault(id(image.config), []).append(image)
    saved_pixels = []
    for planned in by_config.values():
        config = planned[0].config
        for generated in pipeline.generate_iter(config, callback):
            target = planned[generated.index]
            saved = _save(pipeline, target, generated, output, load_seconds)
            saved_pixels.append(generated.pixels)
            yield saved
    if the_plan.grid_path is not None and saved_pixels:
        from .output import png_bytes

        write_atomically(
            the_plan.grid_path, png_bytes(grid_image(saved_pixels), "sdgen grid"), output.overwrite
        )


def _save(pipeline, target: PlannedImage, generated, output, load_seconds) -> SavedImage:
    config = target.config
    parameters = {
        "prompt": config.prompt,
        "negative_prompt": config.negative_prompt,
        "steps": config.steps,
        "sampler": get_sampler(config.sampler).name,
        "sampler_label": get_sampler(config.sampler).label,
        "guidance_scale": config.guidance_scale,
        "seed": generated.seed,
        "width": config.width,
        "height": config.height,
        "model": pipeline.model_name,
        "version": __version__,
    }
    sha256 = save_png(target.path, generated.pixels, format_infotext(parameters), output.overwrite)
    record = {
        **parameters,
        "file": target.path.name,
        "sha256": sha256,
        "index": target.index,
        "batch_size": config.batch_size,
        "seconds": round(generated.seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    append_manifest(target.path.parent, record)
    return SavedImage(target.path, record)

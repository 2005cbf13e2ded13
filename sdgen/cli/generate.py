"""``sdgen generate`` (also ``sdgen PROMPT``): its options, translated into a
:class:`sdgen.service.GenerateRequest`, and the report of what the service did."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from ..batch.executors import LoadOptions
from ..batch.run import Failed
from ..batch.work import OutputOptions
from ..errors import SdgenError
from ..output.files import no_empty_folder_left
from ..presets import load_preset, preset_names
from ..service import GenerateRequest, start_generation
from ..sweep import SweepTooLargeError
from .options import (
    IMAGE_TASK_PARAMS,
    embeddings_option,
    emphasis_option,
    guidance_option,
    image_task_options,
    lora_dir_option,
    model_option,
    noise_options,
    parse_batch_size,
    parse_shard,
    prompt_options,
    reporting_options,
    runtime_option,
    sampler_option,
    size_options,
    steps_option,
    sweep_options,
)
from .report import (
    SectionedCommand,
    download_progress,
    failure_json,
    interrupts_noted,
    reporter,
    step_progress,
    tensorflow_logs,
)


def _apply_preset(ctx: click.Context, _param, value):
    """Eager ``--config``: fill click's default_map so explicit flags still win."""
    if value is None:
        return value
    allowed = {p.name for p in ctx.command.params if p.name not in _NOT_IN_PRESETS}
    try:
        settings = load_preset(value, allowed)
    except SdgenError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=_param) from error
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


_NOT_IN_PRESETS = {
    "prompt",
    "config",
    "debug",
    "prompts_file",
    "out",
    "shard",
    "ray_address",
    "checkpoint",
    "init_image",  # files: given for a run, never by a preset
    "mask",
}


#: The headings of ``sdgen generate --help`` and the options under each.
HELP_SECTIONS = {
    "Prompt and text": (
        "prompts_file",
        "prompt_mode",
        "wildcards_dir",
        "negative_prompt",
        "emphasis",
        "clip_skip",
        "embeddings_dir",
        "loras",
        "lora_dir",
    ),
    "Sampling": (
        "steps",
        "sampler",
        "guidance_scale",
        "seed",
        "rng",
        "subseed",
        "subseed_strength",
        "seed_resize_from",
        "width",
        "height",
        "num_images",
        "config",
    ),
    "Start from an image": IMAGE_TASK_PARAMS,
    "Sweeps": ("sweep", "yes"),
    "Output": ("out", "outdir", "name_template", "grid", "overwrite", "force"),
    "Model and weights": ("model", "checkpoint", "weights_dir", "offline"),
    "Batch and distribution": ("batch_size", "shard", "ray_address", "ray_workers"),
    "Runtime": ("runtime", "xla", "mixed_precision"),
    "Reporting": ("quiet", "as_json", "debug", "help"),
}


@click.command(cls=SectionedCommand, sections=HELP_SECTIONS)
@click.argument("prompt", required=False)
@prompt_options
@click.option("--negative-prompt", default="", show_default=False, help="What to steer away from.")
@steps_option
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the first image; image k uses seed+k.  [default: random, always printed and recorded]",
)
@noise_options
@sweep_options
@guidance_option
@size_options
@click.option("--num-images", type=int, default=1, show_default=True, help="Images per prompt.")
@click.option(
    "--batch-size",
    default="1",
    show_default=True,
    callback=parse_batch_size,
    help="Images denoised together; changes speed and memory, never pixels. 'auto': as many "
    "as free GPU memory holds (1 on a CPU, where bigger batches are slower).",
)
@sampler_option
@image_task_options
@emphasis_option(
    "How (word:1.2) weights apply: original (A1111's default: weighted, then each chunk's mean restored), no-norm, ignore (brackets parsed, weights dropped) or off (brackets are plain text)."
)
@click.option(
    "--clip-skip",
    type=int,
    default=1,
    show_default=True,
    help="A1111's Clip skip: 1 uses the text encoder's last layer, 2 the one before it (diffusers' clip_skip=1), ...",
)
@embeddings_option(
    "Folder of textual-inversion embeddings (.pt, .safetensors, .bin) that prompts use by file name, or as embedding:NAME.  [default: $SDGEN_HOME/embeddings]"
)
@click.option(
    "--lora",
    "loras",
    multiple=True,
    metavar="NAME_OR_PATH[:WEIGHT]",
    help="Merge a LoRA (or LyCORIS LoHa/LoKr) file, found by name in --lora-dir or by path; WEIGHT [1] multiplies it, NAME:TE:UNET gives the text encoder and U-Net their own. Repeat for more. Prompts may also say <lora:NAME:WEIGHT>.",
)
@lora_dir_option(
    "Folder of LoRA files (.safetensors, .pt, .ckpt) that --lora and <lora:NAME> find by file name.  [default: $SDGEN_HOME/loras]"
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Output PNG for one image; with several, NAME-0.png, NAME-1.png, ... are derived from it.",
)
@click.option(
    "--outdir",
    type=click.Path(path_type=Path),
    default=Path("outputs"),
    show_default=True,
    help="Output folder when --out is not given; files are named INDEX-SEED-SLUG.png.",
)
@click.option("--grid", is_flag=True, help="Also save one PNG showing all images of the run.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing files that sdgen did not make with these settings, instead of refusing.",
)
@click.option(
    "--force", is_flag=True, help="Regenerate every image, even those an earlier run made."
)
@click.option(
    "--name-template",
    default="{index:05d}-{seed}-{slug}.png",
    show_default=True,
    help="File names in --outdir; fields: index, seed, slug, line, k, model, sampler, steps, width, height.",
)
@click.option(
    "--shard",
    callback=parse_shard,
    metavar="K/N",
    help="Make only shard K of N (K from 1), for job arrays: image i is in shard (i mod N) + 1.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray: a local instance, or the cluster at ADDRESS (HOST:PORT, ray://HOST:10001 or auto). Needs the ray extra.",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Ray actors to start.  [default: one per GPU of the cluster, else one per 2 CPUs]",
)
@model_option
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Use an SD 1.x/2.x .safetensors/.ckpt file or diffusers folder directly; it is converted into the model store on first use.",
)
@click.option(
    "--weights",
    "weights_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with kcv_encoder.h5, kcv_diffusion_model.h5 and kcv_decoder.h5.",
)
@click.option(
    "--offline", is_flag=True, help="Never download; fail with the name of a missing file."
)
@click.option(
    "--xla/--no-xla", default=None, help="Compile with XLA.  [default: on for GPU, off for CPU]"
)
@click.option(
    "--mixed-precision/--no-mixed-precision",
    default=None,
    help="Run in mixed_float16.  [default: on for GPUs with compute capability 7.0+, off for CPU]",
)
@runtime_option
@click.option(
    "--config",
    callback=_apply_preset,
    is_eager=True,
    expose_value=False,
    metavar="NAME|PATH",
    help=f"Preset from configs/*.toml ({', '.join(preset_names())}) or a .toml file; explicit flags win.",
)
@reporting_options
def generate(prompt, prompts_file, quiet, as_json, debug, **options):
    """Generate images for PROMPT (or every line of --prompts-file).

    Runs are resumable: images that an earlier run already made with the same settings
    are skipped. A run where some images failed exits with 3.
    """
    say = reporter(quiet)
    request = GenerateRequest(
        prompt=prompt,
        prompts_file=prompts_file,
        settings={key: options[key] for key in _CONFIG_OPTIONS},
        model=options["model"],
        checkpoint=options["checkpoint"],
        output=OutputOptions(
            outdir=options["outdir"],
            out=options["out"],
            name_template=options["name_template"],
            overwrite=options["overwrite"],
            force=options["force"],
            grid=options["grid"],
            shard=options["shard"],
        ),
        load=LoadOptions(
            weights_dir=options["weights_dir"],
            offline=options["offline"],
            xla=options["xla"],
            mixed_precision=options["mixed_precision"],
            runtime=options["runtime"],
            embeddings_dir=options["embeddings_dir"],
            lora_dir=options["lora_dir"],
        ),
        ray_address=options["ray_address"],
        ray_workers=options["ray_workers"],
        sweep=tuple(options["sweep"]),
        yes=options["yes"],
        prompt_mode=options["prompt_mode"],
        wildcards_dir=options["wildcards_dir"],
    )
    run_and_report(request, say, quiet, as_json, debug, prompts_file is not None)


def run_and_report(
    request: GenerateRequest, say, quiet: bool, as_json: bool, debug: bool, from_file: bool = False
):
    """Plan and run ``request``, reporting each image as it is saved or fails, then the
    summary; exits with the run's status. An output folder the run made and left empty
    is removed (not a shard's: another shard may be about to write there)."""
    sharded = request.output.shard[1] > 1
    with contextlib.nullcontext() if sharded else no_empty_folder_left(request.output.folder):
        _run(request, say, quiet, as_json, debug, from_file)


def _run(request: GenerateRequest, say, quiet: bool, as_json: bool, debug: bool, from_file: bool):
    runtime = request.load.runtime
    with tensorflow_logs(debug, runtime):
        try:
            generation = _start(request, say, quiet)
        except SweepTooLargeError as error:  # in a terminal, ask; in a script, refuse
            if quiet or not _interactive():
                raise
            click.confirm(f"This sweep makes {error.images} images. Make them?", abort=True)
            generation = _start(replace(request, yes=True), say, quiet)
    if generation.already_made:
        say(f"{generation.already_made} image(s) already made by an earlier run: skipped")
    summary = generation.summary
    # [k/n]: the k-th of the n images this run makes (this shard's, less those made before)
    to_make, made = len(generation.plan.todo), 0
    failures = []
    with tensorflow_logs(debug, runtime), interrupts_noted() as interrupted:
        for event in generation.events():
            if isinstance(event, Failed) and interrupted:
                raise KeyboardInterrupt  # a Ctrl-C that TensorFlow turned into an error
            if isinstance(event, Failed):
                click.echo(f"Error: {event.failure}", err=True)
                failures.append(failure_json(event.failure, generation.plan))
                made += len(event.failure.indices)
            elif not event.skipped:
                made += 1
                say(
                    f"[{made}/{to_make}] {event.image.path}  "
                    f"seed {event.record['seed']}  {event.record['seconds']:.1f} s"
                )
    for grid in [summary.grid] if summary.grid is not None else summary.grids:
        say(f"grid {grid}")
    if from_file or summary.skipped or (summary.failed and summary.done):
        say(f"done {summary.done}, skipped {summary.skipped}, failed {summary.failed}")
    if as_json:
        report = {**summary.as_json(), "failures": failures}
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    if summary.exit_code:
        raise SystemExit(summary.exit_code)


def _start(request: GenerateRequest, say, quiet: bool):
    return start_generation(
        request,
        say=say,
        progress=lambda images, steps: step_progress(quiet, images, steps),
        download_progress=None if quiet else download_progress(),
    )


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


_CONFIG_OPTIONS = (
    "negative_prompt",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "seed",
    "num_images",
    "batch_size",
    "sampler",
    "emphasis",
    "clip_skip",
    "rng",
    "subseed",
    "subseed_strength",
    "seed_resize_from",
    "loras",
    *IMAGE_TASK_PARAMS,
)

"""``sdgen again IMAGE``: make an image again from the infotext it holds, with any
generation option given here winning (:mod:`sdgen.again`)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from ..batch.executors import LoadOptions
from ..batch.work import OutputOptions
from .generate import run_and_report
from .options import (
    IMAGE_TASK_PARAMS,
    embeddings_option,
    emphasis_option,
    guidance_option,
    image_task_options,
    lora_dir_option,
    model_option,
    noise_options,
    reporting_options,
    runtime_option,
    sampler_option,
    size_options,
    steps_option,
)
from .report import reporter

#: The options that override the image's settings when given.
_OVERRIDES = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "sampler",
    "rng",
    "subseed",
    "subseed_strength",
    "seed_resize_from",
    "emphasis",
    "clip_skip",
    "num_images",
    *IMAGE_TASK_PARAMS,
)


@click.command("again")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--prompt", default=None, help="Use this prompt instead of the image's.")
@click.option("--negative-prompt", default=None, help="Use this negative prompt instead.")
@click.option(
    "--seed",
    default=None,
    metavar="N|+N",
    help="Seed to use instead of the image's; +N: the image's seed plus N.",
)
@steps_option
@guidance_option
@size_options
@sampler_option
@noise_options
@emphasis_option()
@image_task_options
@click.option("--clip-skip", type=int, default=1, help="A1111's Clip skip, instead of the image's.")
@click.option("--num-images", type=int, default=1, show_default=True, help="Images to make.")
@model_option
@embeddings_option("Folder of textual-inversion embeddings.  [default: $SDGEN_HOME/embeddings]")
@lora_dir_option(
    "Folder of LoRAs the prompt's <lora:NAME> tags find.  [default: $SDGEN_HOME/loras]"
)
@click.option("--out", type=click.Path(path_type=Path), help="Output image file.")
@click.option(
    "--outdir",
    type=click.Path(path_type=Path),
    default=Path("outputs"),
    show_default=True,
    help="Output folder when --out is not given.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--offline", is_flag=True, help="Never download.")
@runtime_option
@reporting_options
@click.pass_context
def again_command(ctx, image, quiet, as_json, debug, **options):
    """Make IMAGE again from the parameters it holds (an sdgen, AUTOMATIC1111 or
    stable-diffusion.cpp infotext). Options given here win over the image's; what the
    image asks for that sdgen cannot do is listed on stderr ("ignored: ...").
    The defaults below apply only where the image gives no value. An image made from
    an init image (and mask) needs them again: --init-image PATH (--mask PATH); the
    infotext holds only their hashes, which are checked.

    \b
      sdgen again outputs/00000-42-a-cat.png --out same.png
      sdgen again a1111.png --seed +1 --steps 30
    """
    from ..again import again_request

    given = {
        name
        for name in (*_OVERRIDES, "model")
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    again = again_request(
        image,
        {name: options[name] for name in _OVERRIDES if name in given},
        model=options["model"] if "model" in given else None,
        output=OutputOptions(
            outdir=options["outdir"],
            out=options["out"],
            overwrite=options["overwrite"],
            force=True,  # again means make it, even where an earlier run did
        ),
        load=LoadOptions(
            offline=options["offline"],
            runtime=options["runtime"],
            embeddings_dir=options["embeddings_dir"],
            lora_dir=options["lora_dir"],
        ),
    )
    say = reporter(quiet)
    if again.ignored:
        say(f"ignored: {', '.join(again.ignored)}")
    run_and_report(again.request, say, quiet, as_json, debug)

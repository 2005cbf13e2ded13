"""``sdgen info``: the generation parameters an image file holds."""

from __future__ import annotations

import json

import click

from ..output.info import read_parameters


@click.command("info")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(image, as_json):
    """Print the prompt, negative prompt and settings stored in IMAGE (a PNG
    'parameters' chunk or JPEG/WebP EXIF, from sdgen, AUTOMATIC1111 or sd.cpp).

    \b
      sdgen info outputs/00000-42-a-cat.png
      sdgen info photo.webp --json
    """
    parameters = read_parameters(image)
    if as_json:
        click.echo(json.dumps(parameters.as_json(), indent=2, ensure_ascii=False))
        return
    click.echo(f"Prompt: {parameters.prompt}")
    click.echo(f"Negative prompt: {parameters.negative_prompt}")
    for key, value in parameters.settings:
        click.echo(f"{key}: {value}")

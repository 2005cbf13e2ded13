"""``sdgen import`` (a checkpoint into the model store) and ``sdgen models``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import UsageError
from ..registry import model_specs
from .report import reporter, tensorflow_logs


@click.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--name", required=True, help="Name to use with --model; letters, digits, '.', '_', '-'."
)
@click.option("--overwrite", is_flag=True, help="Replace a model of the same name.")
@click.option(
    "--prediction-type",
    type=click.Choice(["epsilon", "v_prediction"]),
    help="Override the detected prediction type (SD 2.x 768-v models use v_prediction).",
)
@click.option(
    "--size", "default_size", type=int, help="Override the detected default size in pixels."
)
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
def import_command(path, name, overwrite, prediction_type, default_size, quiet, debug):
    """Convert an SD 1.x/2.x checkpoint (.safetensors, .ckpt or a diffusers folder) into
    keras_cv weights in the model store, for `sdgen --model NAME`."""
    say = reporter(quiet)
    from ..config import SIZE_MULTIPLE
    from ..store import check_name, import_checkpoint

    check_name(name)
    if default_size is not None and (default_size < 64 or default_size % SIZE_MULTIPLE):
        raise UsageError(f"--size {default_size} must be a multiple of {SIZE_MULTIPLE}")
    began = time.perf_counter()
    say(f"converting {path} ...")
    with tensorflow_logs(debug):
        spec = import_checkpoint(path, name, overwrite, prediction_type, default_size)
    say(
        f"imported {name} in {time.perf_counter() - began:.1f} s: {spec.family}, "
        f"{spec.prediction_type}, {spec.default_size} px, in {spec.weights_dir}"
    )


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models_command(as_json):
    """List the models `--model` accepts: built in and imported."""
    from ..store import imported_specs

    rows = []
    for spec in [*model_specs().values(), *imported_specs().values()]:
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "prediction_type": spec.prediction_type,
                "default_size": spec.default_size,
                "imported": spec.weights_dir is not None,
                "description": spec.description,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['name']:24} {row['family']:6} {row['prediction_type']:13} "
            f"{row['default_size']:5}  {row['description']}"
        )

"""``sdgen import`` (a checkpoint into the model store) and ``sdgen models``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import UsageError
from ..registry import model_specs
from .options import embeddings_option, lora_dir_option
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
@embeddings_option("Folder of textual-inversion embeddings to list [$SDGEN_HOME/embeddings].")
@lora_dir_option("Folder of LoRAs to list [$SDGEN_HOME/loras].")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def models_command(embeddings_dir, lora_dir, as_json):
    """List the models `--model` accepts (built in and imported), whether their
    weights are here or what a first run downloads, and the textual-inversion
    embeddings a prompt can name.

    With --json: an object with "models" (a list, one object per model: its
    "availability" is "generated", "present", "partial" or "download", and
    "download_bytes" what its first run downloads, null where unknown),
    "embeddings_folder" and "embeddings" (one object per file: name, path, vectors,
    width, sha256, the families whose text encoder is as wide, and an error for a file
    that cannot be used), "loras_folder" and "loras" (name, path, format, family, rank,
    and an error for a file that cannot be used).
    """
    from ..adapters.textual_inversion import EmbeddingLibrary
    from ..families import FAMILIES
    from ..provision import availability
    from ..store import imported_specs

    rows = []
    for spec in [*model_specs().values(), *imported_specs().values()]:
        have = availability(spec)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "prediction_type": spec.prediction_type,
                "default_size": spec.default_size,
                "imported": spec.weights_dir is not None,
                "description": spec.description,
                "availability": have.state,
                "download_bytes": have.download_bytes,
                "first_run": have.describe(),
            }
        )
    library = EmbeddingLibrary(embeddings_dir)
    embeddings = library.describe()
    for embedding in embeddings:
        embedding["families"] = [  # an inpainting variant takes its base family's
            name
            for name, family in FAMILIES.items()
            if family.widths.text == embedding["width"] and not family.inpainting
        ]
    loras_folder, loras = _loras(lora_dir)
    if as_json:
        data = {"models": rows, "embeddings_folder": str(library.folder), "embeddings": embeddings}
        data.update(loras_folder=str(loras_folder), loras=loras)
        click.echo(json.dumps(data, indent=2))
        return
    # as wide as the widest family (``sd-v1-inpainting``), so the columns stay aligned
    family_width = max([6, *(len(row["family"]) for row in rows)])
    line = f"{{:16}} {{:{family_width}}} {{:13}} {{:>4}}  {{:30}} {{}}".format
    click.echo(line("model", "family", "prediction", "size", "first run", "description"))
    for row in rows:
        click.echo(
            line(
                row["name"],
                row["family"],
                row["prediction_type"],
                row["default_size"],
                row["first_run"],
                row["description"],
            )
        )
    click.echo()
    if not embeddings:
        missing = "" if library.folder.is_dir() else " (the folder does not exist)"
        click.echo(f"no embeddings in {library.folder}{missing}")
    else:
        click.echo(f"embeddings in {library.folder}:")
        for embedding in embeddings:
            click.echo(f"{embedding['name']:24} {_embedding_summary(embedding)}")
    click.echo()
    if not loras:
        missing = "" if Path(loras_folder).is_dir() else " (the folder does not exist)"
        click.echo(f"no LoRAs in {loras_folder}{missing}")
        return
    click.echo(f"LoRAs in {loras_folder}:")
    for lora in loras:
        click.echo(f"{lora['name']:24} {_lora_summary(lora)}")


def _loras(folder) -> tuple[Path, list[dict]]:
    """The LoRA folder and ``describe()`` of its LoRAs."""
    from ..adapters.lora.uses import library

    found = library(folder)
    return Path(found.folder), found.describe()


def _lora_summary(lora: dict) -> str:
    """``lora (kohya), sd-v1, rank 8``, or the reason a file cannot be used."""
    if lora.get("error"):
        return f"unusable: {lora['error']}"
    rank = lora.get("rank")
    ranked = f", rank {rank}" if rank is not None else ""
    return f"{lora.get('format')}, {lora.get('family') or 'unknown family'}{ranked}"


def _embedding_summary(embedding: dict) -> str:
    """``2 vectors x 768 (sd-v1)``, or the reason a file cannot be used."""
    if embedding["error"] is not None:
        return f"unusable: {embedding['error']}"
    vectors = embedding["vectors"]
    fits = ", ".join(embedding["families"]) or "no known model"
    return (
        f"{vectors} vector{'s' if vectors > 1 else ''} x {embedding['width']} ({fits}), "
        f"shorthash {embedding['sha256'][:12]}"
    )

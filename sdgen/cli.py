"""The ``sdgen`` command: click only. Options -> config -> library call -> report.

TensorFlow is imported only when a command needs it, so ``sdgen --help`` answers at once.
Every error is one line on stderr; usage errors exit with 2, failures with 1 and an
interrupt with 130.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import click

from . import __version__
from .catalog import get_model_spec
from .config import AUTO_BATCH, GenerationConfig, load_preset, preset_names
from .errors import SdgenError, UsageError
from .registry import model_specs
from .runtimes import RUNTIMES

EXIT_INTERRUPTED = 130
_state = {"debug": False}


class DefaultCommandGroup(click.Group):
    """A group where ``sdgen "prompt" ...`` means ``sdgen generate "prompt" ...``."""

    default_command = "generate"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "--version"):
            # a prompt that happens to be a command name needs `sdgen generate "models"`
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultCommandGroup,
    context_settings={"help_option_names": ["--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="sdgen", message="%(prog)s %(version)s")
def cli():
    """Generate images from text with Stable Diffusion on keras-cv.

    \b
      sdgen "photograph of an astronaut riding a horse" --steps 50 --out astronaut.png
      sdgen --model tiny "smoke test" --width 128 --height 128 --steps 4 --outdir out

    `sdgen PROMPT ...` is short for `sdgen generate PROMPT ...`; see `sdgen generate --help`.
    """


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
}


def _parse_shard(_ctx, _param, value):
    if value is None:
        return (1, 1)
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise click.BadParameter(
            f"{value!r}: K counts from 1 to N (e.g. 1/2 and 2/2), so 1 <= K <= N"
        )
    return (k, n)


def _parse_batch_size(_ctx, _param, value):
    if value is None or isinstance(value, int) or value == AUTO_BATCH:
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or '{AUTO_BATCH}'") from None


@cli.command()
@click.argument("prompt", required=False)
@click.option(
    "--prompts-file",
    type=click.Path(path_type=Path),
    help="Read requests from a UTF-8 file, one per line: a plain prompt, AUTOMATIC1111's '--prompt ... --steps 30' syntax, or a JSON object; blank lines and # comments are skipped.",
)
@click.option("--negative-prompt", default="", show_default=False, help="What to steer away from.")
@click.option("--steps", type=int, default=50, show_default=True, help="Denoising steps (>= 1).")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the first image; image k uses seed+k.  [default: random, always printed and recorded]",
)
@click.option(
    "--guidance-scale",
    type=float,
    default=7.5,
    show_default=True,
    help="Classifier-free guidance scale (>= 0; 1 turns guidance off).",
)
@click.option(
    "--width",
    type=int,
    default=None,
    help="Width in pixels, a multiple of 64.  [default: the model's, 512 for sd-v1.4]",
)
@click.option(
    "--height",
    type=int,
    default=None,
    help="Height in pixels, a multiple of 64.  [default: the model's, 512 for sd-v1.4]",
)
@click.option("--num-images", type=int, default=1, show_default=True, help="Images per prompt.")
@click.option(
    "--batch-size",
    default="1",
    show_default=True,
    callback=_parse_batch_size,
    help="Images denoised together; changes speed and memory, never pixels. 'auto': as many "
    "as free GPU memory holds (1 on a CPU, where bigger batches are slower).",
)
@click.option(
    "--sampler",
    default="ddim",
    show_default=True,
    help="Sampler: ddim, euler, euler-a, dpmpp-2m or dpmpp-2m-karras (AUTOMATIC1111 labels such as 'Euler a' work too).",
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
    callback=_parse_shard,
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
@click.option(
    "--model", default="sd-v1.4", show_default=True, help=f"Model: {', '.join(model_specs())}."
)
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
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=lambda: os.environ.get("SDGEN_RUNTIME", "tensorflow"),
    show_default="tensorflow, or $SDGEN_RUNTIME",
    help="What runs the networks: TensorFlow, or OpenVINO on the CPU (faster; converts each model and size once into the cache; needs the openvino extra).",
)
@click.option(
    "--config",
    callback=_apply_preset,
    is_eager=True,
    expose_value=False,
    metavar="NAME|PATH",
    help=f"Preset from configs/*.toml ({', '.join(preset_names())}) or a .toml file; explicit flags win.",
)
@click.option("--quiet", is_flag=True, help="Print nothing but errors (and --json).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
def generate(prompt, prompts_file, quiet, as_json, debug, **options):
    """Generate images for PROMPT (or every line of --prompts-file).

    Runs are resumable: images that an earlier run already made with the same settings
    are skipped. A run where some images failed exits with 3.
    """
    _state["debug"] = debug
    say = _reporter(quiet)
    from .batch.plan import plan
    from .batch.run import Failed
    from .batch.work import EXIT_SOME_FAILED, Failure, Job, OutputOptions

    if (prompt is None) == (prompts_file is None):
        raise UsageError("give either a PROMPT or --prompts-file, not both or neither")
    if options["runtime"] == "openvino":  # refuse before any work, not per image
        from .runtimes.openvino import check_options

        check_options(options["xla"], options["mixed_precision"])
    if options["checkpoint"] is not None:
        from .store import checkpoint_model

        say(f"using checkpoint {options['checkpoint']} ...")
        with _tensorflow_logs(debug):
            options["model"] = checkpoint_model(options["checkpoint"]).name
    defaults = {key: options[key] for key in _CONFIG_OPTIONS}
    jobs, failures = [], []
    if prompts_file is None:
        jobs.append(Job(GenerationConfig(prompt=prompt, **defaults), options["model"]))
    else:
        from .batch.prompts_file import read_prompts_file

        for line in read_prompts_file(prompts_file):
            if line.error:
                failures.append(Failure(line.error.split(": ", 1)[1], line.line_number))
                continue
            settings = {**defaults, **line.overrides}
            model = settings.pop("model", options["model"])
            try:
                config = GenerationConfig(prompt=line.prompt, **settings)
                get_model_spec(model)
            except SdgenError as error:
                failures.append(Failure(str(error), line.line_number))
                continue
            jobs.append(Job(config, model, line.line_number))
    output = OutputOptions(
        outdir=options["outdir"],
        out=options["out"],
        name_template=options["name_template"],
        overwrite=options["overwrite"],
        force=options["force"],
        grid=options["grid"],
        shard=options["shard"],
    )
    if prompts_file is None:
        get_model_spec(options["model"])

    started = time.perf_counter()
    with _tensorflow_logs(debug, options["runtime"]):
        from .text.tokenizer import encode_prompt, load_tokenizer

        tokenizer = load_tokenizer()
        checked = []
        for job in jobs:  # refuse long prompts before loading any weights
            try:
                encode_prompt(tokenizer, job.config.prompt)
                encode_prompt(tokenizer, job.config.negative_prompt, "negative prompt")
            except SdgenError as error:
                if prompts_file is None:
                    raise
                failures.append(Failure(str(error), job.line_number))
                continue
            checked.append(job)
        the_plan = plan(checked, output, failures)
        executor = _executor(options, quiet, say)

    from .batch.run import run

    todo = the_plan.todo
    if len(todo) < len(the_plan.images):
        say(f"{len(the_plan.images) - len(todo)} image(s) already made by an earlier run: skipped")
    total = len(the_plan.images)
    steps = max((image.job.config.steps for image in todo), default=1)
    progress = _step_progress(quiet, len(todo), steps)
    on_saved = None if options["out"] is not None else _contact_sheet_writer()
    records, failed, made = [], 0, 0
    try:
        with _tensorflow_logs(debug, options["runtime"]):
            for event in run(the_plan, output, executor, progress, on_saved):
                if isinstance(event, Failed):
                    failed += event.failure.count
                    click.echo(f"Error: {event.failure}", err=True)
                    continue
                record = {**event.record, "path": str(event.image.path)}
                records.append({**record, "skipped": event.skipped})
                if not event.skipped:
                    made += 1
                    say(
                        f"[{event.image.index + 1}/{total}] {event.image.path}  "
                        f"seed {record['seed']}  {record['seconds']:.1f} s"
                    )
    finally:
        executor.close()
    if on_saved is not None and records:  # also when every image was already there
        on_saved(output.outdir)
    if the_plan.grid_path is not None and (made or records):
        say(f"grid {the_plan.grid_path}")
    skipped = sum(1 for record in records if record["skipped"])
    if prompts_file is not None or skipped or (failed and made):
        say(f"done {made}, skipped {skipped}, failed {failed}")
    if as_json:
        summary = {
            "version": __version__,
            "done": made,
            "skipped": skipped,
            "failed": failed,
            "models": sorted({image.job.model for image in the_plan.images}),
            "load_seconds": {k: round(v, 3) for k, v in executor.load_seconds.items()},
            "total_seconds": round(time.perf_counter() - started, 3),
            "grid": str(the_plan.grid_path) if the_plan.grid_path else None,
            "images": records,
        }
        devices = {m: p.device for m, p in getattr(executor, "pipelines", {}).items()}
        if devices:
            device = next(iter(devices.values()))
            summary.update(
                device=device.device,
                runtime=device.runtime,
                xla=device.xla,
                mixed_precision=device.mixed_precision,
            )
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    if failed:
        raise SystemExit(EXIT_SOME_FAILED if made or skipped else 1)


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
)


def _executor(options, quiet, say):
    from .batch.executors import LoadOptions, LocalExecutor

    load = LoadOptions(
        weights_dir=options["weights_dir"],
        offline=options["offline"],
        xla=options["xla"],
        mixed_precision=options["mixed_precision"],
        runtime=options["runtime"],
    )
    if options["ray_address"] is not None:
        from .batch.executors import RayExecutor

        say(f"starting Ray ({options['ray_address']}) ...")
        return RayExecutor(load, address=options["ray_address"], workers=options["ray_workers"])

    return LocalExecutor(load, say=say, download_progress=None if quiet else _download_progress())


def _contact_sheet_writer():
    from .output.contact_sheet import ContactSheet

    sheets = {}

    def write(folder):
        sheets.setdefault(folder, ContactSheet(folder)).update()

    return write


@cli.command("import")
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
    _state["debug"] = debug
    say = _reporter(quiet)
    from .config import SIZE_MULTIPLE
    from .store import check_name, import_checkpoint

    check_name(name)
    if default_size is not None and (default_size < 64 or default_size % SIZE_MULTIPLE):
        raise UsageError(f"--size {default_size} must be a multiple of {SIZE_MULTIPLE}")
    began = time.perf_counter()
    say(f"converting {path} ...")
    with _tensorflow_logs(debug):
        spec = import_checkpoint(path, name, overwrite, prediction_type, default_size)
    say(
        f"imported {name} in {time.perf_counter() - began:.1f} s: {spec.family}, "
        f"{spec.prediction_type}, {spec.default_size} px, in {spec.weights_dir}"
    )


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models_command(as_json):
    """List the models `--model` accepts: built in and imported."""
    from .store import imported_specs

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


def _reporter(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    return say


def _download_progress():
    interactive = sys.stderr.isatty()
    last = {"reported": -1}

    def progress(name: str, done: int, total: int | None) -> None:
        if total:
            percent = done * 100 // total
            if interactive:
                click.echo(
                    f"\rdownloading {name}: {done / 1e6:,.0f}/{total / 1e6:,.0f} MB ({percent}%)",
                    err=True,
                    nl=done >= total,
                )
            elif percent // 10 != last["reported"]:
                last["reported"] = percent // 10
                click.echo(f"downloading {name}: {percent}%", err=True)

    return progress


def _step_progress(quiet: bool, total: int, steps: int):
    if quiet:
        return None
    from .batch.progress import Progress

    return Progress(total, steps, stream=sys.stderr)


@contextlib.contextmanager
def _tensorflow_logs(debug: bool, runtime: str = "tensorflow"):
    """Keep TensorFlow's start-up chatter (absl and C++ logs written straight to file
    descriptor 2 before any log level applies) off the terminal unless ``--debug``.
    The OpenVINO runtime imports TensorFlow only to convert a network (quietly too)."""
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if runtime == "tensorflow":
        from .runtimes.tensorflow import import_tensorflow

        import_tensorflow(quiet=not debug)
    yield


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sdgen`` script and ``python -m sdgen``."""
    _state["debug"] = False
    try:
        code = cli.main(args=argv, prog_name="sdgen", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        code = error.exit_code
    except SdgenError as error:
        if _state["debug"]:
            traceback.print_exc()
        click.echo(f"Error: {error}", err=True)
        code = error.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("\nError: interrupted; finished images were kept", err=True)
        code = EXIT_INTERRUPTED
    except Exception as error:  # a bug: still one line unless --debug
        if _state["debug"]:
            traceback.print_exc()
        click.echo(
            f"Error: unexpected {type(error).__name__}: {error} (run with --debug for details)",
            err=True,
        )
        code = 1
    sys.exit(code or 0)

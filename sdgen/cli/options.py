"""Options that several commands share, declared once."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import click

from ..config import (
    AUTO_BATCH,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    HIRES_UPSCALERS,
    INPAINT_AREAS,
    INPAINT_FILLS,
    RESIZE_MODES,
    GenerationConfig,
)
from ..noise import DEFAULT_RNG, RNG_KINDS
from ..registry import model_specs
from ..runtimes import RUNTIMES
from ..text.dynamic import DEFAULT_PROMPT_MODE, PROMPT_MODES
from ..text.prompt_syntax import DEFAULT_EMPHASIS, EMPHASIS_MODES


def emphasis_option(help_text: str | None = None):
    """``--emphasis MODE``: how ``(word:1.2)`` weights apply."""
    return click.option(
        "--emphasis",
        default=DEFAULT_EMPHASIS,
        show_default=True,
        help=help_text
        or f"How (word:1.2) weights apply: {', '.join(EMPHASIS_MODES)} (A1111's labels work too).",
    )


def embeddings_option(help_text: str):
    """``--embeddings DIR`` (the parameter ``embeddings_dir``): the textual-inversion
    folder [``$SDGEN_HOME/embeddings``]."""
    return click.option(
        "--embeddings",
        "embeddings_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=help_text,
    )


def lora_dir_option(help_text: str):
    """``--lora-dir DIR`` (the parameter ``lora_dir``): the LoRA folder
    [``$SDGEN_HOME/loras``]."""
    return click.option(
        "--lora-dir",
        "lora_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=help_text,
    )


def noise_options(command):
    """``--rng``, ``--subseed``, ``--subseed-strength`` and ``--seed-resize-from``."""
    for option in reversed(_NOISE_OPTIONS):
        command = option(command)
    return command


_NOISE_OPTIONS = (
    click.option(
        "--rng",
        type=click.Choice(RNG_KINDS),
        default=DEFAULT_RNG,
        show_default=True,
        help="Where the noise comes from: sdgen's own (NumPy PCG64); torch-cpu for the same "
        "starting noise as ComfyUI, diffusers or A1111's CPU RNG with the same seed; "
        "torch-cuda for A1111's default GPU RNG (torch.randn on CUDA, computed here).",
    ),
    click.option(
        "--subseed",
        type=int,
        default=None,
        help="Variation seed (A1111's): mixed into the seed's noise by --subseed-strength; "
        "image k uses subseed+k.",
    ),
    click.option(
        "--subseed-strength",
        type=float,
        default=0.0,
        show_default=True,
        help="How far towards the variation seed's noise (0 to 1; slerp).",
    ),
    click.option(
        "--seed-resize-from",
        metavar="WxH",
        default=None,
        help="Draw the noise at this size and centre it, to keep a seed's composition at a new "
        "--width/--height.",
    ),
)


def sweep_options(command):
    """``--sweep KEY=VALUES`` (up to three) and ``--yes``."""
    command = click.option(
        "--yes",
        is_flag=True,
        help="Make a sweep of more than 1000 images without asking.",
    )(command)
    return click.option(
        "--sweep",
        multiple=True,
        metavar="KEY=V1,V2,...",
        help="Sweep a setting (repeat for the Y and Z axes): every combination is an image, "
        "and each Z value gets a labelled grid. Keys: steps, guidance-scale, sampler, seed, "
        "clip-skip, width, height, size, model, negative-prompt, subseed-strength, rng, "
        "prompt-sr (FROM,TO1,TO2: replace FROM in the prompt), strength, hires-denoise, "
        "hires-scale, ...; ranges: 10-40:10, 3-9(4).",
    )(command)


def parse_shard(_ctx, _param, value):
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


def parse_batch_size(_ctx, _param, value):
    if value is None or isinstance(value, int) or value == AUTO_BATCH:
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or '{AUTO_BATCH}'") from None


def prompt_options(command):
    """``--prompts-file``, ``--prompt-mode`` and ``--wildcards`` (the parameter
    ``wildcards_dir``)."""
    for option in reversed(_PROMPT_OPTIONS):
        command = option(command)
    return command


_PROMPT_OPTIONS = (
    click.option(
        "--prompts-file",
        type=click.Path(path_type=Path),
        help="Read requests from a UTF-8 file, one per line: a plain prompt, AUTOMATIC1111's "
        "'--prompt ... --steps 30' syntax, or a JSON object; blank lines and # comments are "
        "skipped.",
    ),
    click.option(
        "--prompt-mode",
        type=click.Choice(PROMPT_MODES),
        default=DEFAULT_PROMPT_MODE,
        show_default=True,
        help="Dynamic prompts: plain reads {a|b} and __name__ as text; random picks one choice "
        "per image, from the image's seed; combinatorial makes every combination (at most "
        "1000). Applies to the prompt, the negative prompt and each prompts-file line.",
    ),
    click.option(
        "--wildcards",
        "wildcards_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Folder of wildcard files: __name__ is a line of name.txt, __dir/name__ of "
        "dir/name.txt.  [default: $SDGEN_HOME/wildcards]",
    ),
)


def steps_option(command):
    """``--steps N``."""
    return click.option(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        show_default=True,
        help="Denoising steps (>= 1).",
    )(command)


def guidance_option(command):
    """``--guidance-scale`` (also ``--cfg``, A1111's "CFG scale")."""
    return click.option(
        "--guidance-scale",
        "--cfg",
        "guidance_scale",
        type=float,
        default=7.5,
        show_default=True,
        help="Classifier-free guidance scale (>= 0; 1 turns guidance off).",
    )(command)


def size_options(command):
    """``--width`` and ``--height``."""
    for name in ("height", "width"):
        command = click.option(
            f"--{name}",
            type=int,
            default=None,
            help=f"{name.title()} in pixels, a multiple of 64.  "
            "[default: the model's, 512 for sd-v1.4]",
        )(command)
    return command


def sampler_option(command):
    """``--sampler NAME``."""
    return click.option(
        "--sampler",
        default=DEFAULT_SAMPLER,
        show_default=True,
        help="Sampler: dpmpp-2m-karras, dpmpp-2m, euler, euler-a or ddim (AUTOMATIC1111 labels "
        "such as 'Euler a' work too); --config keras-cv gives keras_cv's DDIM at 50 steps.",
    )(command)


def model_option(command):
    """``--model NAME``."""
    return click.option(
        "--model", default="sd-v1.4", show_default=True, help=f"Model: {', '.join(model_specs())}."
    )(command)


def runtime_option(command):
    """``--runtime NAME`` [``$SDGEN_RUNTIME``, else tensorflow]."""
    return click.option(
        "--runtime",
        type=click.Choice(RUNTIMES),
        default=lambda: os.environ.get("SDGEN_RUNTIME", "tensorflow"),
        show_default="tensorflow, or $SDGEN_RUNTIME",
        help="What runs the networks: TensorFlow, or OpenVINO on the CPU (faster; converts each "
        "model and size once into the cache; needs the openvino extra).",
    )(command)


def reporting_options(command):
    """``--quiet``, ``--json`` (the parameter ``as_json``) and ``--debug``."""
    for option in reversed(_REPORTING_OPTIONS):
        command = option(command)
    return command


_REPORTING_OPTIONS = (
    click.option("--quiet", is_flag=True, help="Print nothing but errors (and --json)."),
    click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout."
    ),
    click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks."),
)


def image_task_options(command):
    """The options of the image tasks (img2img, inpainting, outpainting, hires fix):
    ``--init-image``, ``--strength``, ``--resize``, ``--mask``, ``--mask-blur``,
    ``--inpaint-fill``, ``--inpaint-area``, ``--inpaint-padding``, ``--outpaint``,
    ``--hires``, ``--hires-scale``, ``--hires-upscaler``, ``--hires-steps`` and
    ``--hires-denoise``, declared once for ``generate`` and ``again``. Their defaults are
    ``GenerationConfig``'s; the config checks the values."""
    for option in reversed(_IMAGE_TASK_OPTIONS):
        command = option(command)
    return command


#: ``GenerationConfig``'s defaults, which the options show.
_DEFAULT = {field.name: field.default for field in fields(GenerationConfig)}

_IMAGE_TASK_OPTIONS = (
    click.option(
        "--init-image",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        metavar="PATH",
        help="Start from this image (img2img): PNG, JPEG, WebP, ...; EXIF orientation, "
        "alpha, greyscale and 16-bit are converted. Without --width/--height its size "
        "rounded to multiples of 64 is used.",
    ),
    click.option(
        "--strength",
        type=float,
        default=_DEFAULT["strength"],
        show_default=True,
        help="img2img denoising strength in (0, 1]: the share of the steps run from the "
        "noised image (A1111's Denoising strength).",
    ),
    click.option(
        "--resize",
        type=click.Choice(RESIZE_MODES),
        default=_DEFAULT["resize"],
        show_default=True,
        help="How an init image of another size is brought to --width/--height: crop "
        "(cover, cut the overflow evenly), fit (fit inside, fill the border from the "
        "edges) or stretch.",
    ),
    click.option(
        "--mask",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        metavar="PATH",
        help="Inpaint: white is repainted, black is kept. Needs --init-image; a mask of "
        "another size is resized with the image's geometry (--resize).",
    ),
    click.option(
        "--mask-blur",
        type=int,
        default=_DEFAULT["mask_blur"],
        show_default=True,
        help="Blur radius of the mask in pixels.",
    ),
    click.option(
        "--inpaint-fill",
        type=click.Choice(INPAINT_FILLS),
        default=_DEFAULT["inpaint_fill"],
        show_default=True,
        help="What the masked region starts from: the image, fresh noise, or zero latents.",
    ),
    click.option(
        "--inpaint-area",
        type=click.Choice(INPAINT_AREAS),
        default=_DEFAULT["inpaint_area"],
        show_default=True,
        help="full: denoise the whole picture; masked: cut out the region around the mask, "
        "denoise it at the full size and paste it back (A1111's Only masked).",
    ),
    click.option(
        "--inpaint-padding",
        type=int,
        default=_DEFAULT["inpaint_padding"],
        show_default=True,
        help="Pixels around the mask that --inpaint-area masked takes.",
    ),
    click.option(
        "--outpaint",
        default=None,
        metavar="L,T,R,B",
        help="Extend the init image by these pixels on the left, top, right and bottom, "
        "and paint the border.",
    ),
    click.option(
        "--hires/--no-hires",
        default=False,
        help="Hires fix: generate at --width/--height, enlarge by --hires-scale, then "
        "an img2img pass at the larger size.",
    ),
    click.option(
        "--hires-scale",
        type=float,
        default=_DEFAULT["hires_scale"],
        show_default=True,
        help="How much hires fix enlarges (1 to 8; the result must be multiples of 64).",
    ),
    click.option(
        "--hires-upscaler",
        type=click.Choice(HIRES_UPSCALERS),
        default=_DEFAULT["hires_upscaler"],
        show_default=True,
        help="Enlarge the latents (bilinear or nearest), or the pixels with Lanczos.",
    ),
    click.option(
        "--hires-steps",
        type=int,
        default=None,
        help="Steps of the hires pass.  [default: --steps]",
    ),
    click.option(
        "--hires-denoise",
        type=float,
        default=_DEFAULT["hires_denoise"],
        show_default=True,
        help="Denoising strength of the hires pass, in (0, 1].",
    ),
)


def _names(options) -> tuple[str, ...]:
    def bare():
        pass

    for option in options:
        option(bare)
    return tuple(param.name for param in bare.__click_params__)


#: The parameter names of ``image_task_options``, in help order.
IMAGE_TASK_PARAMS = _names(_IMAGE_TASK_OPTIONS)

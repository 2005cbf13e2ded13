"""Reading prompts files: UTF-8, one request per line, blank lines and ``#`` comments skipped.

A line is one of three kinds, and each may override the command's options for itself:

1. a plain prompt: ``a castle at dusk``;
2. AUTOMATIC1111's "prompts from file" syntax, a line starting with ``--``::

       --prompt "a castle at dusk" --negative_prompt blurry --seed 42 --steps 30
       --cfg_scale 7 --width 512 --height 512 --sampler_name "Euler a" --batch_size 2
       --n_iter 3 --model sd-v1.4 --clip_skip 2 --emphasis "No norm"
       --lora style:0.8 detail:0.5

   (on one line). As in AUTOMATIC1111, values may be quoted or not: a tag's value is
   every following word up to the next one starting with ``--``. ``--n_iter`` batches of
   ``--batch_size`` images make ``n_iter * batch_size`` images; ``--seed -1`` means a
   random seed; ``--lora`` (sdgen's, not A1111's: A1111 takes only the prompt's
   ``<lora:...>`` tags, which work here too) takes one or more ``NAME[:WEIGHT]``;
   ``--init_image PATH``, ``--mask PATH`` and ``--denoising_strength S`` (sdgen's too:
   A1111's script uses the img2img tab's image) start the line from an image;
3. JSON Lines, a line starting with ``{``: an object whose keys are ``GenerationConfig``
   field names plus ``model``, e.g. ``{"prompt": "a cat", "seed": 3, "clip_skip": 2}``.
   ``null`` is accepted for ``seed``, ``width`` and ``height`` (random seed, the model's
   size). ``loras`` (or ``lora``) is a list of ``"NAME:WEIGHT"`` strings or
   ``{"name": ..., "weight": ...}`` objects (``te``/``unet`` for separate weights).
   The image tasks take ``init_image``, ``mask``, ``strength``, ``resize``,
   ``mask_blur``, ``inpaint_fill``, ``inpaint_area``, ``inpaint_padding``, ``outpaint``
   (``"L,T,R,B"`` or ``[l, t, r, b]``), ``hires`` (true/false), ``hires_scale``,
   ``hires_upscaler``, ``hires_steps`` and ``hires_denoise``.

An image path (``init_image``, ``mask``) is taken from the prompts file's folder when it
is relative, and the image is read when the file is: a missing or unreadable one comes
back as a ``fatal`` line, which stops the run before any image is made.

A bad line does not stop the file from being read: it comes back with ``error`` set, so
a batch can report it and carry on with the other lines.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import GenerationConfig
from ..errors import ConfigError, PromptsFileError, UsageError


@dataclass(frozen=True)
class PromptLine:
    """One line of a prompts file.

    line_number: the 1-based line it came from.
    prompt: the prompt text; "" only when ``error`` is set.
    overrides: the ``GenerationConfig`` keys (and ``"model"``) this line sets, with typed,
        validated values; ``{}`` for a plain prompt. Never holds ``"prompt"``.
    error: a one-line message starting with ``"line N: "`` when the line is bad, when
        ``prompt`` may be "" and ``overrides`` is ``{}``; else None.
    fatal: the error is an image that cannot be read (``ImageInputError``): the run
        stops before any work, rather than carrying on with the other lines.
    """

    line_number: int
    prompt: str
    overrides: dict = field(default_factory=dict)
    error: str | None = None
    fatal: bool = False


#: Keys a JSON line may hold: the fields of ``GenerationConfig`` plus ``model``.
CONFIG_KEYS = tuple(f.name for f in fields(GenerationConfig))
JSON_KEYS = (*CONFIG_KEYS, "model")

_INT_KEYS = {
    "steps",
    "width",
    "height",
    "seed",
    "num_images",
    "batch_size",
    "clip_skip",
    "subseed",
    "mask_blur",
    "inpaint_padding",
    "hires_steps",
}
_STR_KEYS = {
    "prompt",
    "negative_prompt",
    "sampler",
    "emphasis",
    "model",
    "rng",
    "init_image",
    "mask",
    "resize",
    "inpaint_fill",
    "inpaint_area",
    "hires_upscaler",
}
_NUMBER_KEYS = {"guidance_scale", "subseed_strength", "strength", "hires_scale", "hires_denoise"}
_BOOL_KEYS = {"hires"}
_SIZE_KEYS = {"seed_resize_from", "outpaint"}  # "WxH" / "L,T,R,B", or a list of numbers
_LIST_KEYS = {"loras"}  # "NAME:WEIGHT", or a list of those or of {"name": ..., "weight": ...}
#: None means "random" / "the model's size" / "none"
_NULLABLE_KEYS = {
    "seed",
    "width",
    "height",
    "subseed",
    "seed_resize_from",
    "init_image",
    "mask",
    "outpaint",
    "hires_steps",
}

#: AUTOMATIC1111 tags: tag -> (GenerationConfig key, value type). ``n_iter`` is not a
#: config key: it multiplies ``batch_size`` into ``num_images``.
A1111_TAGS = {
    "prompt": ("prompt", str),
    "negative_prompt": ("negative_prompt", str),
    "seed": ("seed", int),
    "steps": ("steps", int),
    "cfg_scale": ("guidance_scale", float),
    "width": ("width", int),
    "height": ("height", int),
    "sampler_name": ("sampler", str),
    "batch_size": ("batch_size", int),
    "n_iter": ("n_iter", int),
    "model": ("model", str),
    "clip_skip": ("clip_skip", int),
    "emphasis": ("emphasis", str),
    "subseed": ("subseed", int),
    "subseed_strength": ("subseed_strength", float),
    "seed_resize_from_w": ("seed_resize_from_w", int),
    "seed_resize_from_h": ("seed_resize_from_h", int),
    "lora": ("loras", list),
    "init_image": ("init_image", str),
    "mask": ("mask", str),
    "denoising_strength": ("strength", float),
}
_SUPPORTED_TAGS = ", ".join(f"--{tag}" for tag in A1111_TAGS)

#: AUTOMATIC1111 names that people put in JSON lines, and the sdgen key meant.
_JSON_ALIASES = {
    "cfg_scale": "guidance_scale",
    "sampler_name": "sampler",
    "n_iter": "num_images",
    "negative": "negative_prompt",
    "denoising_strength": "strength",
    "init_images": "init_image",
}

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class _LineError(Exception):
    """A problem with one line; its message lacks the ``line N: `` prefix."""


def read_prompts_file(path: str | Path) -> list[PromptLine]:
    """The lines of ``path`` that hold a request, parsed with ``parse_line``.

    A UTF-8 byte-order mark and CRLF line endings are accepted. A bad line comes back
    with ``error`` set rather than raising. Raises ``PromptsFileError`` if the file is
    missing, unreadable, not UTF-8, or holds no prompt line at all.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise PromptsFileError(f"prompts file {path} does not exist") from error
    except IsADirectoryError as error:
        raise PromptsFileError(f"prompts file {path} is a folder, not a file") from error
    except OSError as error:
        raise PromptsFileError(
            f"cannot read prompts file {path}: {error.strerror or error}"
        ) from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise PromptsFileError(
            f"prompts file {path} is not UTF-8 (bad byte at line {line}); save it as UTF-8"
        ) from error
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            prompts.append(parse_line(stripped, number, path.parent))
    if not prompts:
        what = "is empty" if not text.strip() else "has only comments and blank lines"
        raise PromptsFileError(f"prompts file {path} {what}; write one prompt per line")
    return prompts


def parse_line(text: str, line_number: int, folder: Path | None = None) -> PromptLine:
    """One line of a prompts file (not a blank or ``#`` comment line, which
    ``read_prompts_file`` skips). Never raises for a bad line: the result has ``error``
    set instead (and ``fatal`` for an image that cannot be read). Relative image paths
    are taken from ``folder`` [the working folder]; the images are read here, so the
    line's ``overrides`` hold ``ImageInput``s."""
    from ..images.source import ImageInputError
    from .image_task import read_images

    try:
        stripped = text.strip()
        if stripped.startswith("--"):
            settings = _parse_a1111(stripped)
        elif stripped.startswith("{"):
            settings = _parse_json(stripped)
        else:
            settings = {"prompt": stripped}
        prompt = settings.pop("prompt", None)
        if prompt is None or not prompt.strip():
            raise _LineError("no prompt")
        prompt = prompt.strip()
        try:
            settings = read_images(settings, folder)
        except ImageInputError as error:
            message = " ".join(str(error).split())
            return PromptLine(line_number, "", {}, f"line {line_number}: {message}", True)
        _validate(prompt, settings)
    except _LineError as error:
        message = " ".join(str(error).split())  # always one line
        return PromptLine(line_number, "", {}, f"line {line_number}: {message}")
    return PromptLine(line_number, prompt, settings)


def _parse_a1111(text: str) -> dict:
    """The settings of an AUTOMATIC1111 ``--tag value ...`` line, keyed like
    ``GenerationConfig``."""
    try:
        words = shlex.split(text)
    except ValueError as error:  # "No closing quotation", "No escaped character"
        raise _LineError(f"cannot split the line into words: {error}") from None
    return _typed_a1111_settings(_a1111_values(words))


def _a1111_values(words: list[str]) -> dict[str, str]:
    """``{tag: value}`` of a line's words; a value runs to the next ``--tag``."""
    values: dict[str, str] = {}
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        if not word.startswith("--"):  # only the first word can get here
            raise _LineError(f"expected a --tag, got {word!r}")
        tag, has_equals, value = word[2:].partition("=")
        if tag not in A1111_TAGS:
            raise _LineError(
                f"unknown tag --{tag}{_suggest(tag, A1111_TAGS)}; supported: {_SUPPORTED_TAGS}"
            )
        parts = [value] if has_equals else []
        while position < len(words) and not words[position].startswith("--"):
            parts.append(words[position])
            position += 1
        if not parts:
            raise _LineError(f"--{tag} needs a value")
        values[tag] = " ".join(parts)  # a repeated tag: the last one wins, as in A1111
    return values


def _typed_a1111_settings(values: dict[str, str]) -> dict:
    """Tag values as ``GenerationConfig`` settings: numbers checked, AUTOMATIC1111's
    seed -1 as a random seed, ``n_iter`` x ``batch_size`` as the number of images."""
    settings: dict = {}
    for tag, value in values.items():
        key, kind = A1111_TAGS[tag]
        settings[key] = _typed_value(tag, kind, value)
    if settings.get("seed") == -1:  # AUTOMATIC1111's "random seed"
        settings["seed"] = None
    resize = settings.pop("seed_resize_from_w", None), settings.pop("seed_resize_from_h", None)
    if any(number is not None and number > 0 for number in resize):  # A1111: 0 or -1 is off
        if None in resize:
            raise _LineError("--seed_resize_from_w and --seed_resize_from_h go together")
        settings["seed_resize_from"] = resize
    n_iter = settings.pop("n_iter", None)
    for tag, number in (("n_iter", n_iter), ("batch_size", settings.get("batch_size"))):
        if number is not None and number < 1:
            raise _LineError(f"--{tag} must be at least 1, got {number}")
    if n_iter is not None or "batch_size" in settings:
        settings["num_images"] = (n_iter or 1) * settings.get("batch_size", 1)
    return settings


def _typed_value(tag: str, kind: type, value: str):
    """A tag's value as ``kind``: a checked number, a list of words, or the text."""
    if kind is int:
        if not _WHOLE_NUMBER.fullmatch(value.strip()):
            raise _LineError(f"--{tag} needs a whole number, got {value!r}")
        return int(value)
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise _LineError(f"--{tag} needs a number, got {value!r}") from None
    if kind is list:  # words: NAME[:WEIGHT] each
        return value.split()
    return value


def _singular_lora(data: dict) -> dict:
    """``data`` with a ``lora`` key (as ``--lora`` is spelled) read as ``loras``."""
    if "lora" in data:
        if "loras" in data:
            raise _LineError("give 'loras' or 'lora', not both")
        data["loras"] = data.pop("lora")
    return data


def _json_type(key: str, value) -> tuple[bool, str]:
    """Whether ``value`` has the JSON type of ``key``, and that type in words."""
    if key in _INT_KEYS:
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif key in _STR_KEYS:
        ok, expected = isinstance(value, str), "a string"
    elif key in _BOOL_KEYS:
        ok, expected = isinstance(value, bool), "true or false"
    elif key in _NUMBER_KEYS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    elif key in _LIST_KEYS:
        ok, expected = isinstance(value, str | list | dict), "LoRAs (NAME:WEIGHT or a list)"
    elif key in _SIZE_KEYS:
        ok = isinstance(value, str | list)
        expected = (
            '"L,T,R,B" or [l, t, r, b]'
            if key == "outpaint"
            else 'a "WxH" string or [width, height]'
        )
    else:  # a GenerationConfig field this table has not met yet: its own check decides
        ok, expected = True, ""
    return ok, expected


def _parse_json(text: str) -> dict:
    """The settings of a JSON line, with each value checked for its JSON type."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _LineError(f"invalid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise _LineError("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise _LineError(f"a JSON line must be an object, got {type(data).__name__}")
    for key, value in _singular_lora(data).items():
        if key not in JSON_KEYS:
            hint = (
                f" (did you mean {_JSON_ALIASES[key]!r}?)"
                if key in _JSON_ALIASES
                else _suggest(key, JSON_KEYS, quote=True)
            )
            raise _LineError(f"unknown key {key!r}{hint}; allowed: {', '.join(JSON_KEYS)}")
        if value is None and key in _NULLABLE_KEYS:
            continue
        ok, expected = _json_type(key, value)
        if not ok:
            raise _LineError(f"{key!r} must be {expected}, got {json.dumps(value)}")
    return dict(data)


def _validate(prompt: str, settings: dict) -> None:
    """Check the typed values as ``GenerationConfig`` and the model registry do."""
    if "model" in settings:
        from ..catalog import get_model_spec

        if not settings["model"].strip():
            raise _LineError("the model name is empty")
        try:
            get_model_spec(settings["model"])
        except ConfigError as error:
            raise _LineError(str(error)) from None
    try:
        GenerationConfig(prompt=prompt, **{k: v for k, v in settings.items() if k != "model"})
    except UsageError as error:  # ConfigError or PromptError
        raise _LineError(str(error)) from None


def _suggest(name: str, choices, quote: bool = False) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ""."""
    match = difflib.get_close_matches(name, list(choices), n=1)
    if not match:
        return ""
    return f" (did you mean {match[0]!r}?)" if quote else f" (did you mean --{match[0]}?)"

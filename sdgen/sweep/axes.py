"""The axes of a sweep: ``--sweep KEY=V1,V2,...`` read into typed, checked values.

Values are split on commas as CSV, so a value holding a comma is quoted
(``prompt-sr=cat,"dog, running"``). Numeric keys also take ranges:

- ``10-40:10`` (and A1111's ``10-40 (+10)``): from 10 to 40 in steps of 10, both ends in;
- ``3-9(4)`` (and A1111's ``3-9 [4]``): 4 values evenly spaced from 3 to 9.

``lora=style:0.2,style:0.8,none`` gives each cell that one LoRA (``NAME[:WEIGHT]``, as
``--lora`` takes it) instead of ``--lora``'s, or none; the prompt's ``<lora:...>`` tags
still apply.

The image tasks' settings sweep too: ``strength=0.3,0.5,0.7`` (img2img's denoising
strength), ``hires-denoise=0.4-0.7(4)``, ``hires-scale``, ``hires-steps``,
``hires-upscaler``, ``mask-blur``, ``inpaint-fill``, ``inpaint-padding``, ``resize``.

``prompt-sr=FROM,TO1,TO2`` is A1111's prompt search and replace: its cells use the
prompt as written, then with ``FROM`` replaced by ``TO1``, ``TO2``, ... in the prompt
and the negative prompt.

Each value is checked as the option it sets would be (a ``GenerationConfig`` is built
with it), so a bad one is refused, naming it, before anything is planned.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass

from ..config import GenerationConfig, parse_size
from ..errors import SdgenError, UsageError

#: A sweep has an X, a Y and a Z axis at most, as A1111's X/Y/Z plot.
MAX_AXES = 3
#: A range that would hold more values than this is refused before it is expanded.
MAX_RANGE_VALUES = 100_000
#: The axis that replaces text in the prompts.
PROMPT_SR = "prompt-sr"


@dataclass(frozen=True)
class _Key:
    """A sweep key: the setting it changes, how a value is read, and its label."""

    field: str  # a GenerationConfig field, "model", "size" or "prompt-sr"
    kind: type  # int, float or str
    label: str


_KEYS = {
    "steps": _Key("steps", int, "Steps"),
    "guidance-scale": _Key("guidance_scale", float, "CFG scale"),
    "sampler": _Key("sampler", str, "Sampler"),
    "seed": _Key("seed", int, "Seed"),
    "subseed": _Key("subseed", int, "Variation seed"),
    "subseed-strength": _Key("subseed_strength", float, "Variation strength"),
    "seed-resize-from": _Key("seed_resize_from", str, "Seed resize from"),
    "rng": _Key("rng", str, "RNG"),
    "clip-skip": _Key("clip_skip", int, "Clip skip"),
    "emphasis": _Key("emphasis", str, "Emphasis"),
    "negative-prompt": _Key("negative_prompt", str, "Negative prompt"),
    "width": _Key("width", int, "Width"),
    "height": _Key("height", int, "Height"),
    "size": _Key("size", str, "Size"),
    "model": _Key("model", str, "Model"),
    "lora": _Key("loras", str, "LoRA"),
    PROMPT_SR: _Key(PROMPT_SR, str, "Prompt S/R"),
    # the image tasks (A1111's labels)
    "strength": _Key("strength", float, "Denoising strength"),
    "resize": _Key("resize", str, "Resize mode"),
    "mask-blur": _Key("mask_blur", int, "Mask blur"),
    "inpaint-fill": _Key("inpaint_fill", str, "Masked content"),
    "inpaint-padding": _Key("inpaint_padding", int, "Masked area padding"),
    "hires-scale": _Key("hires_scale", float, "Hires upscale"),
    "hires-steps": _Key("hires_steps", int, "Hires steps"),
    "hires-upscaler": _Key("hires_upscaler", str, "Hires upscaler"),
    "hires-denoise": _Key("hires_denoise", float, "Hires denoise"),
}
#: Other spellings people use (A1111's labels, the GenerationConfig field names).
_ALIASES = {
    "cfg": "guidance-scale",
    "cfg-scale": "guidance-scale",
    "variation-seed": "subseed",
    "variation-seed-strength": "subseed-strength",
    "prompt-s/r": PROMPT_SR,
    "checkpoint": "model",
    "loras": "lora",
    "denoising-strength": "strength",
    "denoise": "strength",
    "hires-upscale": "hires-scale",
}
SWEEP_KEYS = tuple(_KEYS)

_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER = rf"[+-]?{_UNSIGNED}"
_RANGE = re.compile(
    rf"^\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*"
    rf"(?::\s*(?P<step>{_NUMBER})|\(\s*(?P<signed>[+-]{_UNSIGNED})\s*\)"
    r"|\(\s*(?P<count>\d+)\s*\)|\[\s*(?P<count2>\d+)\s*\])?\s*$"
)


@dataclass(frozen=True)
class Axis:
    """One axis: its key (``steps``), label (``Steps``), the setting it changes, its
    values (typed: ``(width, height)`` for ``size``; for ``prompt-sr`` the texts, the
    first being what is searched for) and each value's label as drawn on a grid."""

    key: str
    label: str
    field: str
    values: tuple
    value_labels: tuple[str, ...]

    def cell_label(self, position: int) -> str:
        """``Steps: 20`` (the plain text for ``prompt-sr``, as A1111 labels it)."""
        value = self.value_labels[position]
        return value if self.field == PROMPT_SR else f"{self.label}: {value}"


def parse_axes(specs: tuple[str, ...] | list[str], base: dict | None = None) -> tuple[Axis, ...]:
    """The axes of ``--sweep`` values ``KEY=VALUES``, X first; ``UsageError`` naming the
    bad part. Each value is checked by building a ``GenerationConfig`` from ``base``
    (the request's other settings) with it."""
    specs = list(specs)
    if len(specs) > MAX_AXES:
        raise UsageError(f"a sweep has at most {MAX_AXES} axes (X, Y, Z); got {len(specs)}")
    axes: list[Axis] = []
    for spec in specs:
        axis = parse_axis(spec, base or {})
        taken = {name for other in axes for name in _settings(other.field)}
        if taken & set(_settings(axis.field)):
            raise UsageError(f"--sweep {spec}: {axis.key} is swept twice")
        axes.append(axis)
    return tuple(axes)


def _settings(field: str) -> tuple[str, ...]:
    """The settings an axis changes (``size``: width and height)."""
    return ("width", "height") if field == "size" else (field,)


def parse_axis(spec: str, base: dict) -> Axis:
    """One ``KEY=VALUES`` (see the module doc)."""
    name, sep, text = spec.partition("=")
    wanted = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = _ALIASES.get(wanted, wanted)
    if not sep or not name.strip():
        raise UsageError(f"--sweep {spec!r}: write KEY=V1,V2,... (e.g. steps=10,20,30)")
    if key not in _KEYS:
        raise UsageError(
            f"--sweep {spec}: {name.strip()!r} is not an option that can be swept; "
            f"keys: {', '.join(SWEEP_KEYS)}"
        )
    info = _KEYS[key]
    raw = _split(text)
    if not raw:
        raise UsageError(f"--sweep {spec}: no values")
    if info.kind in (int, float):
        values = [v for item in raw for v in _numbers(spec, item, info.kind)]
    else:
        values = raw
    if key == PROMPT_SR and len(values) < 2:
        raise UsageError(
            f"--sweep {spec}: prompt-sr takes the text to find, then what to put in its "
            "place, e.g. prompt-sr=cat,dog,fox"
        )
    checked = tuple(_checked(spec, info, value, base) for value in values)
    labels = tuple(_label(value, info.field) for value in checked)
    return Axis(key, info.label, info.field, checked, labels)


def _split(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], skipinitialspace=True))
    except csv.Error as error:
        raise UsageError(f"--sweep values {text!r}: {error}") from None
    return [item.strip() for item in (rows[0] if rows else []) if item.strip()]


def _numbers(spec: str, item: str, kind: type) -> list:
    """``item`` as one number or the numbers of its range."""
    match = _RANGE.match(item)
    if match is None:
        try:
            return [_typed(item, kind)]
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise UsageError(f"--sweep {spec}: {item!r} is not {noun} or a range") from None
    start, end = float(match["start"]), float(match["end"])
    step, count = match["step"] or match["signed"], match["count"] or match["count2"]
    if count is not None:
        count = int(count)
        if not 1 <= count <= MAX_RANGE_VALUES:
            raise UsageError(f"--sweep {spec}: {item!r} asks for {count} values")
        if count == 1:
            numbers = [start]
        else:
            numbers = [start + (end - start) * i / (count - 1) for i in range(count)]
        if kind is int:
            numbers = [round(n) for n in numbers]
    else:
        step = float(step) if step is not None else (1.0 if end >= start else -1.0)
        if step == 0 or (end - start) * step < 0:
            raise UsageError(f"--sweep {spec}: the step of {item!r} never reaches its end")
        size = math.floor((end - start) / step + 1e-9) + 1
        if size > MAX_RANGE_VALUES:
            raise UsageError(f"--sweep {spec}: {item!r} holds {size} values")
        numbers = [start + i * step for i in range(size)]
    out = []
    for number in numbers:
        number = round(number, 10)
        if kind is int:
            if not float(number).is_integer():
                raise UsageError(f"--sweep {spec}: {item!r} gives {number}, not a whole number")
            out.append(int(number))
        else:
            out.append(float(number))
    return out


def _typed(text: str, kind: type):
    if kind is int:
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def _checked(spec: str, info: _Key, value, base: dict):
    """``value`` as its setting takes it, after checking it as that setting would be."""
    try:
        if info.field == "model":
            from ..catalog import get_model_spec

            get_model_spec(value)
            return value
        if info.field == PROMPT_SR:
            return value
        if info.field == "loras" and value.strip().lower() == "none":
            return ()
        probe = {key: item for key, item in base.items() if key != "prompt"}
        if info.field == "size":
            width, height = parse_size(value)
            probe.update(width=width, height=height)
            GenerationConfig(prompt="probe", **probe)
            return (width, height)
        probe[info.field] = value
        config = GenerationConfig(prompt="probe", **probe)
        return getattr(config, info.field)
    except SdgenError as error:
        raise UsageError(f"--sweep {spec}: {value!r}: {error}") from None


def _label(value, field: str) -> str:
    if field == "loras":
        return ", ".join(request.text for request in value) or "none"
    if field == "sampler":
        from ..samplers import get_sampler

        return get_sampler(value).label
    if isinstance(value, tuple):
        return "x".join(str(part) for part in value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)

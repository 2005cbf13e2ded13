"""What each key of a LoRA file means: which network module it changes, and which part of
the change (``down``, ``up``, ``alpha``, ``hada_w1_a``, ...) it holds.

Module names are never guessed from underscores: kohya's flat names
(``lora_unet_input_blocks_1_1_proj_in``) are looked up in a table built from
:func:`sdgen.convert.name_index` of both checkpoint layouts (LDM and diffusers) and both
families (SD 1.x, SD 2.x), each weight's key with its network prefix and ``.weight``
removed and ``.`` turned into ``_``. Dotted names (diffusers/PEFT) are looked up in the
same table without the underscore step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

#: The networks a LoRA changes, and the checkpoint-key prefixes of their weights.
_PREFIXES = {
    "text_encoder": (
        "text_encoder.",
        "cond_stage_model.transformer.",
        "cond_stage_model.model.",
    ),
    "diffusion_model": ("unet.", "model.diffusion_model."),
}
#: kohya's prefix of each network's module names.
KOHYA_PREFIXES = {"lora_te_": "text_encoder", "lora_unet_": "diffusion_model"}
#: kohya prefixes of SDXL's two text encoders: an SDXL LoRA, refused by name.
SDXL_KOHYA_PREFIXES = ("lora_te1_", "lora_te2_")

#: The parts of one module in kohya/LyCORIS files (after ``MODULE.``), by the algorithm
#: that uses them. ``alpha`` belongs to all three.
KOHYA_PARTS = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_mid.weight": "mid",
    "alpha": "alpha",
    "hada_w1_a": "hada_w1_a",
    "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a",
    "hada_w2_b": "hada_w2_b",
    "hada_t1": "hada_t1",
    "hada_t2": "hada_t2",
    "lokr_w1": "lokr_w1",
    "lokr_w1_a": "lokr_w1_a",
    "lokr_w1_b": "lokr_w1_b",
    "lokr_w2": "lokr_w2",
    "lokr_w2_a": "lokr_w2_a",
    "lokr_w2_b": "lokr_w2_b",
    "lokr_t2": "lokr_t2",
}
#: Parts of DoRA (weight-decomposed LoRA), which rescales whole weights: refused by name.
DORA_PARTS = ("dora_scale", "lora_magnitude_vector")

#: Dotted (diffusers/PEFT) key endings -> the part they hold; first match wins.
_DOTTED_PARTS = (
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),  # LoRACompatibleLinear/Conv
    (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"),  # older text-encoder LoRA
    (".lora_linear_layer.up.weight", "up"),
    (".alpha", "alpha"),
)
#: The older attention-processor form: ``….attn1.processor.to_q_lora.down.weight``.
_PROCESSOR = re.compile(
    r"^(?P<base>.*?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$"
)
#: The text encoder's projections under the attention-processor names.
_TEXT_PROJECTIONS = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
#: First components of a diffusers U-Net module path (keys saved without ``unet.``).
_UNET_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.")


@dataclass(frozen=True)
class Target:
    """The weight a LoRA module changes: its network ``role`` and its checkpoint ``key``
    (as :func:`sdgen.convert.name_index` of the SD 1.x or SD 2.x tables names it)."""

    role: str
    key: str


@dataclass(frozen=True)
class Part:
    """What one key of a LoRA file is: ``part`` (``down``, ``alpha``, ``hada_w1_a``, ...)
    of the module ``module`` (the key without the part), which changes ``target``."""

    module: str
    part: str
    target: Target


def _module_path(key: str) -> tuple[str, str] | None:
    """``(role, dotted module path)`` of a weight key of the name index; None for a key
    that no LoRA changes (biases, norms, embeddings, the decoder)."""
    if not key.endswith(".weight"):
        return None
    for role, prefixes in _PREFIXES.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                return role, key[len(prefix) : -len(".weight")]
    return None


@cache
def module_tables() -> tuple[dict[str, Target], dict[tuple[str, str], Target]]:
    """``(by kohya name, by (role, dotted path))``: every dense or convolution weight of
    the text encoder and U-Net of SD 1.x and SD 2.x, in both layouts. A kohya name that
    both layouts spell alike (SD 1.x's text encoder) goes to the diffusers key."""
    from ...convert.mapping import name_index

    kohya: dict[str, Target] = {}
    dotted: dict[tuple[str, str], Target] = {}
    for layout in ("diffusers", "ldm"):
        for family in ("sd-v1", "sd-v2"):
            for key, slots in name_index(layout, family).items():
                if slots[0].param.kind not in ("dense", "conv"):
                    continue
                found = _module_path(key)
                if found is None or found[0] != slots[0].role:
                    continue
                role, path = found
                target = Target(role, key)
                short = "lora_te_" if role == "text_encoder" else "lora_unet_"
                kohya.setdefault(short + path.replace(".", "_"), target)
                dotted.setdefault((role, path), target)
    return kohya, dotted


def kohya_part(key: str) -> Part | None:
    """The module and part of a kohya/LyCORIS key (``lora_unet_…``/``lora_te_…``), or
    None when its module or part is unknown."""
    module, dot, ending = key.partition(".")
    if not dot or ending not in KOHYA_PARTS:
        return None
    target = module_tables()[0].get(module)
    return None if target is None else Part(module, KOHYA_PARTS[ending], target)


def dotted_part(key: str) -> Part | None:
    """The module and part of a diffusers/PEFT key (``unet.….lora_A.weight``,
    ``text_encoder.….lora_B.weight``, ``….processor.to_q_lora.down.weight``, keys
    without the ``unet.`` prefix), or None when it names nothing sdgen knows."""
    role, rest = _dotted_role(key)
    if role is None:
        return None
    match = _PROCESSOR.match(rest)
    if match:
        projection = match.group("proj")
        if role == "text_encoder":
            projection = _TEXT_PROJECTIONS[projection]
        elif projection == "to_out":
            projection = "to_out.0"
        path, part = f"{match.group('base')}.{projection}", match.group("part")
    else:
        for ending, name in _DOTTED_PARTS:
            if rest.endswith(ending):
                path, part = rest[: -len(ending)], name
                break
        else:
            return None
    target = module_tables()[1].get((role, path))
    if target is None:
        return None
    return Part(("unet." if role == "diffusion_model" else "text_encoder.") + path, part, target)


def _dotted_role(key: str) -> tuple[str | None, str]:
    for prefix in ("base_model.model.",):  # PEFT's own wrapper
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith("unet."):
        return "diffusion_model", key[len("unet.") :]
    if key.startswith("text_encoder."):
        rest = key[len("text_encoder.") :]
        if rest.startswith(("encoder.", "embeddings.", "final_layer_norm.")):
            rest = "text_model." + rest  # saved from transformers 5's CLIPTextModel
        return "text_encoder", rest
    if key.startswith("text_model."):
        return "text_encoder", key
    if key.startswith(_UNET_ROOTS):
        return "diffusion_model", key
    return None, key

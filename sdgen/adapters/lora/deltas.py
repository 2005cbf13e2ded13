"""The weight change of each LoRA module, and the summed change of a set of LoRAs in the
keras layout of the networks it applies to.

The formulas (ADAPTERS.md, with the trainers' own definitions):

- LoRA (kohya, LoCon, PEFT): ``ΔW = (alpha/r)·(up @ down)``, ``r`` = ``down``'s rows,
  reshaped for convolutions; with LoCon's CP ``mid``,
  ``ΔW[o,i,h,w] = Σ up[o,a]·mid[a,b,h,w]·down[b,i]``. PEFT's rank-stabilised LoRA uses
  ``alpha/sqrt(r)``. No alpha means a scale of 1 (diffusers gives PEFT
  ``lora_alpha = r`` then).
- LoHa: ``ΔW = (w1a @ w1b) ⊙ (w2a @ w2b)·alpha/dim``, ``dim`` = ``w1b``'s rows; with
  Tucker cores, each factor is ``Σ t[i,j,h,w]·wa[i,p]·wb[j,r]`` (LyCORIS).
- LoKr: ``ΔW = kron(w1, w2)``, each factor whole or ``a @ b`` (``w2`` also Tucker);
  ``alpha/dim`` only when a factor is factorised, else 1 (A1111's ``network_lokr``).

Every ``W' = W + Σ m·ΔW``, ``m`` the text-encoder or U-Net multiplier of each file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .errors import LoraError
from .files import LoraFile, LoraModule

#: The networks a LoRA changes, as ``name_index`` names them.
ROLES = ("text_encoder", "diffusion_model")


def _tucker(core: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LyCORIS' ``rebuild_tucker``: ``Σ core[i,j,…]·a[i,p]·b[j,r]`` -> ``[p, r, …]``."""
    return np.einsum("ij...,ip,jr->pr...", core, a, b, optimize=True)


def _scale(alpha: float | None, rank: int | None, rslora: bool = False) -> float:
    if alpha is None or rank is None:
        return 1.0
    return alpha / (math.sqrt(rank) if rslora else rank)


def module_delta(module: LoraModule, shape: tuple[int, ...], multiplier: float = 1.0) -> np.ndarray:
    """``module``'s ``ΔW`` times its scale and ``multiplier``, in torch's layout ``shape``
    (``(out, in)`` or ``(out, in, kh, kw)``), float32. Raises :class:`LoraError` when
    its size does not fit ``shape``.

    The scale goes into the smallest factor, and a linear LoRA's product is computed as
    ``(down.T @ up.T).T``, whose transpose (the keras layout) is contiguous already: a
    full-size LoRA's changes are a gigabyte, and each pass over them costs seconds.
    """
    t = module.tensors
    if module.algorithm == "lora":
        factor = np.float32(multiplier * _scale(module.alpha, module.rank, module.rslora))
        down, up = t["down"], t["up"]
        up2 = up.reshape(up.shape[0], -1) * factor
        down2 = down.reshape(down.shape[0], -1)
        if "mid" in t:
            # up·mid, then ·down: two BLAS contractions, not one naive sum over all five axes
            outer = np.tensordot(up2, t["mid"], axes=(1, 0))  # [out, r, kh, kw]
            delta = np.tensordot(outer, down2, axes=(1, 0))
            delta = np.moveaxis(delta, -1, 1)  # [out, kh, kw, in] -> [out, in, kh, kw]
        elif len(shape) == 2:
            delta = (down2.T @ up2.T).T
        else:
            delta = up2 @ down2
    elif module.algorithm == "loha":
        factor = np.float32(multiplier * _scale(module.alpha, module.rank))
        w1a = t["hada_w1_a"] * factor
        if "hada_t1" in t:
            w1 = _tucker(t["hada_t1"], w1a, t["hada_w1_b"])
            w2 = _tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
        else:
            w1 = w1a @ t["hada_w1_b"]
            w2 = t["hada_w2_a"] @ t["hada_w2_b"]
        delta = w1 * w2
    else:
        factor = np.float32(multiplier * _scale(module.alpha, module.rank))
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        w1 = w1 * factor
        if "lokr_w2" in t:
            w2 = t["lokr_w2"]
        elif "lokr_t2" in t:
            w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
        else:
            w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
        if w2.ndim == 4 and w1.ndim == 2:
            w1 = w1[:, :, None, None]
        delta = np.kron(w1, w2)
    if delta.size != math.prod(shape):
        raise LoraError(
            f"module {module.name} makes a change of shape {tuple(delta.shape)}, which does "
            f"not fit the weight's {tuple(shape)}"
        )
    return np.asarray(delta.reshape(shape), dtype=np.float32)


def _fitted_delta(module: LoraModule, shape: tuple[int, ...], multiplier: float) -> np.ndarray:
    """:func:`module_delta` in ``shape``; for an inpainting U-Net's conv_in (9 input
    channels) changed by a LoRA made for a text-to-image model (4), the change zero-padded
    to 9 inputs, so the mask and masked-image channels keep their weights (as A1111
    pads it)."""
    from ...families import INPAINTING_CHANNELS
    from ...networks.layouts import LATENT_CHANNELS

    try:
        return module_delta(module, shape, multiplier)
    except LoraError:
        if len(shape) != 4 or shape[1] != INPAINTING_CHANNELS:
            raise
        narrow = (shape[0], LATENT_CHANNELS, *shape[2:])
        try:
            delta = module_delta(module, narrow, multiplier)
        except LoraError:
            raise LoraError(  # the error about the model's own shape, not the narrow one
                f"module {module.name} does not fit the weight's {tuple(shape)}"
            ) from None
    padding = ((0, 0), (0, INPAINTING_CHANNELS - LATENT_CHANNELS), (0, 0), (0, 0))
    return np.pad(delta, padding)


@lru_cache(maxsize=8)
def _indexes(family: str, widths) -> tuple[dict, dict]:
    from ...convert.mapping import name_index

    return name_index("diffusers", family, widths), name_index("ldm", family, widths)


def _torch_shape(slots) -> tuple[int, ...]:
    """The torch layout of the checkpoint tensor behind ``slots`` (all parts of it)."""
    param = slots[0].param
    if param.kind == "dense":
        shape = (param.shape[1], param.shape[0])
    else:  # conv: HWIO -> OIHW
        shape = (param.shape[3], param.shape[2], param.shape[0], param.shape[1])
    if param.ldm_part is not None and slots[0].source == param.ldm:
        shape = (shape[0] * param.ldm_part[1], *shape[1:])
    return shape


def _to_keras(slot, delta: np.ndarray) -> np.ndarray:
    """``slot.to_keras(delta)``, without its copy for a whole linear weight: there the
    keras layout is the transpose, which :func:`module_delta` made contiguous (a copy of
    a full-size LoRA's changes takes seconds)."""
    param = slot.param
    if param.kind == "dense" and param.ldm_part is None and delta.ndim == 2:
        value = delta.T
        if value.shape == param.shape and value.flags.c_contiguous:
            return value
    return slot.to_keras(delta)


def lora_deltas(
    items: Sequence[tuple[LoraFile, float, float]], family: str, widths=None
) -> dict[tuple[str, int], np.ndarray]:
    """The summed weight change of ``items`` (each ``(lora, te_multiplier,
    unet_multiplier)``) on a model of ``family`` (``"sd-v1"``, ``"sd-v2"``, ``"tiny"``, or
    an inpainting variant: a 4-channel conv_in change is zero-padded to its 9) at
    ``widths`` (None: the family's own).

    Returns ``{(role, position): ΔW}``: ``role`` ``"text_encoder"`` or
    ``"diffusion_model"``, ``position`` the index into that keras network's
    ``model.weights`` (:class:`sdgen.convert.Slot`), ``ΔW`` float32 in that weight's keras
    layout. A module whose multiplier is 0 adds nothing. Raises :class:`LoraError`,
    naming the file, when a module is not in this model or its shape does not fit (a
    LoRA for another family or size).
    """
    from ...convert.errors import CheckpointError

    diffusers_index, ldm_index = _indexes(family, widths)
    deltas: dict[tuple[str, int], np.ndarray] = {}
    for lora, te_multiplier, unet_multiplier in items:
        for module in lora.modules:
            role = module.target.role
            multiplier = te_multiplier if role == "text_encoder" else unet_multiplier
            if multiplier == 0:
                continue
            key = module.target.key
            slots = diffusers_index.get(key) or ldm_index.get(key)
            if not slots:
                raise LoraError(_another(lora, family, f"the model has no {module.name}"))
            try:
                delta = _fitted_delta(module, _torch_shape(slots), multiplier)
                converted = [(slot, _to_keras(slot, delta)) for slot in slots]
            except (LoraError, CheckpointError) as error:
                raise LoraError(_another(lora, family, str(error))) from error
            for slot, value in converted:
                place = (slot.role, slot.position)
                if place in deltas:
                    deltas[place] += value  # an array of this call's own
                else:
                    deltas[place] = value
    return deltas


def _another(lora: LoraFile, family: str, detail: str) -> str:
    said = f" (it says {lora.family})" if lora.family and lora.family != family else ""
    return (
        f"LoRA {lora.path} is for another model family or size than this {family} "
        f"model{said}: {detail}"
    )

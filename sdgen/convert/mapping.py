"""Map a checkpoint's tensors onto keras_cv's weight lists: pure, no I/O, no models.

:func:`resolve_keys` finds the checkpoint key of every keras weight of the tables in
:mod:`sdgen.convert.tables`; :func:`map_weights` converts the tensors into the keras
layout (:func:`to_keras`), in the order of ``model.weights``. Every tensor of the
checkpoint is either used or named in an explicit ignore list; a missing tensor, a
left-over one or a shape mismatch raises :class:`CheckpointError` naming the key.
:func:`name_index` goes the other way: from a checkpoint key to the keras weight(s) it
becomes, for code (LoRA merging) that changes single tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError
from .tables import OPTIONAL_NETWORKS, PARAMS_BY_FAMILY, Param, Widths, family_tables

#: Keys of single-file (CompVis/LDM) checkpoints that are not weights of the networks:
#: the training-time noise schedule, EMA bookkeeping and CLIP's position ids.
IGNORED_KEYS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "text_encoder.text_model.embeddings.position_ids",
        # SD 2.x (OpenCLIP ViT-H/14 text tower): the pooled-output projection and CLIP's
        # logit scale are not used for conditioning; the causal mask is rebuilt by keras.
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.logit_scale",
        "cond_stage_model.model.attn_mask",
    }
)
#: Key prefixes ignored as a whole: EMA copies of the U-Net, and the VAE's training loss
#: (its discriminator). The VAE's encoder is converted (image-to-image tasks use it).
IGNORED_PREFIXES = (
    "model_ema.",
    "first_stage_model.loss.",
    # SD 2.x conditions on OpenCLIP's penultimate layer: its last block (of 24) is unused,
    # as in diffusers' converter (SD_2_TEXT_ENCODER_KEYS_TO_IGNORE).
    "cond_stage_model.model.transformer.resblocks.23.",
)


def is_ignored(key: str) -> bool:
    """Whether the checkpoint tensor ``key`` is none of the networks' weights, by the
    ignore lists above."""
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def to_keras(key: str, value: np.ndarray, param: Param) -> np.ndarray:
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError(f"tensor {key} has dtype {value.dtype}, expected floats")
    if param.ldm_part is not None and key == param.ldm:
        index, count = param.ldm_part
        if value.ndim == 0 or value.shape[0] % count:
            raise CheckpointError(
                f"tensor {key} has shape {value.shape}: cannot split its first axis in {count}"
            )
        size = value.shape[0] // count
        value = value[index * size : (index + 1) * size]
    value = value.astype(np.float32)
    if param.kind == "dense" and value.ndim == 4 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]  # a 1x1 convolution stored where a linear layer is
    if param.kind == "dense" and value.ndim == 2:
        value = value.T
    elif param.kind == "conv":
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2 and param.shape[:2] == (1, 1):
            value = value.T[None, None]
    if value.shape != param.shape:
        raise CheckpointError(
            f"tensor {key} has shape {tuple(np.shape(value))} after conversion to keras "
            f"layout, expected {param.shape}"
        )
    return np.ascontiguousarray(value)


def resolve_keys(
    tensors: dict[str, np.ndarray], layout: str, family: str = "sd-v1", params=None
) -> dict[str, list[tuple[str, Param]]]:
    """For each network of ``family``, the checkpoint key of each keras weight, in keras
    order. ``params`` replaces the family's weight tables (``{network: () -> [Param]}``).
    A network of :data:`OPTIONAL_NETWORKS` (the VAE encoder) of which the checkpoint
    holds no tensor at all is left out of the result.

    Raises :class:`CheckpointError` naming the first missing tensor, or the tensors
    that are neither used nor in the ignore lists.
    """
    if layout not in ("ldm", "diffusers"):
        raise ValueError(f"unknown layout {layout!r}")
    if family not in PARAMS_BY_FAMILY:
        raise ValueError(f"unknown family {family!r}")
    used = set()
    result = {}
    for network, make in (params or PARAMS_BY_FAMILY[family]).items():
        keys = []
        table = make()
        if network in OPTIONAL_NETWORKS and not any(
            _candidates(param, layout) & tensors.keys() for param in table
        ):
            continue
        for param in table:
            candidates = (param.ldm,) if layout == "ldm" else (param.diffusers, *param.aliases)
            key = next((k for k in candidates if k in tensors), None)
            if key is None:
                raise CheckpointError(
                    f"checkpoint lacks {candidates[0]} (needed for the {network})"
                )
            used.add(key)
            keys.append((key, param))
        result[network] = keys
    left_over = sorted(k for k in tensors if k not in used and not is_ignored(k))
    if left_over:
        shown = ", ".join(left_over[:5])
        if len(left_over) > 5:
            shown += f" and {len(left_over) - 5} more"
        raise CheckpointError(
            f"checkpoint has tensors sdgen does not know what to do with: {shown}"
        )
    return result


def _candidates(param: Param, layout: str) -> set[str]:
    return {param.ldm} if layout == "ldm" else {param.diffusers, *param.aliases}


def map_weights(
    tensors: dict[str, np.ndarray],
    layout: str,
    family: str = "sd-v1",
    *,
    consume: bool = False,
    params=None,
) -> dict[str, list[np.ndarray]]:
    """The keras_cv weight lists of a detected checkpoint of ``family``, by network
    (without ``encoder`` for a checkpoint that has no VAE encoder).

    Every key is resolved (see :func:`resolve_keys`) before any tensor is converted; a
    tensor whose shape does not fit raises :class:`CheckpointError` naming it. With
    ``consume``, each tensor is removed from ``tensors`` once converted, so that the
    checkpoint and its conversion are not held in memory side by side.
    """
    resolved = resolve_keys(tensors, layout, family, params)
    last_use = {
        key: (network, i) for network, keys in resolved.items() for i, (key, _) in enumerate(keys)
    }
    weights = {}
    for network, keys in resolved.items():
        weights[network] = []
        for i, (key, param) in enumerate(keys):
            weights[network].append(to_keras(key, tensors[key], param))
            if consume and last_use[key] == (network, i):
                del tensors[key]
    return weights


@dataclass(frozen=True)
class Slot:
    """Where one checkpoint tensor goes: position ``position`` of the keras weight list
    of network ``role``, converted from the tensor named ``source`` as ``param`` says."""

    role: str
    position: int
    param: Param
    source: str

    def to_keras(self, value: np.ndarray) -> np.ndarray:
        """``value`` (the tensor ``source``, or one of its shape) in the keras layout of
        this weight, as :func:`map_weights` converts it."""
        return to_keras(self.source, value, self.param)


def name_index(
    layout: str, family: str = "sd-v1", widths: Widths | None = None
) -> dict[str, tuple[Slot, ...]]:
    """For each checkpoint key a checkpoint of ``family`` in ``layout`` (``"ldm"`` or
    ``"diffusers"``) may hold, the keras weights it becomes, in keras order.

    The tables are the family's own (:data:`PARAMS_BY_FAMILY`), or those at ``widths``.
    Most keys become one weight; an SD 2.x single file's fused ``attn.in_proj_*``
    tensors become three (q, k and v). A diffusers weight is listed under its name and
    under its older aliases, of which a checkpoint holds one. Ignored keys are absent.
    """
    if layout not in ("ldm", "diffusers"):
        raise ValueError(f"unknown layout {layout!r}")
    if family not in PARAMS_BY_FAMILY:
        raise ValueError(f"unknown family {family!r}")
    tables = PARAMS_BY_FAMILY[family] if widths is None else family_tables(family, widths)
    index: dict[str, list[Slot]] = {}
    for role, make in tables.items():
        for position, param in enumerate(make()):
            names = (param.ldm,) if layout == "ldm" else (param.diffusers, *param.aliases)
            for name in names:
                index.setdefault(name, []).append(Slot(role, position, param, name))
    return {name: tuple(slots) for name, slots in index.items()}

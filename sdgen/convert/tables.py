"""The weight tables: for each keras_cv network, its weights in ``model.weights`` order.

Each weight is a :class:`Param`: its keras shape, how the torch tensor's layout turns
into keras' (``kind``), and the tensor's name in a single file (CompVis/LDM naming) and
in a diffusers folder. The tables are written at any :class:`Widths`, so the tests can
convert networks of SD's layout at tiny widths with the same tables. ``TextEncoder``,
``DiffusionModel`` and ``Decoder`` make up SD 1.x; ``TextEncoderV2``,
``DiffusionModelV2`` and the same ``Decoder`` SD 2.x; both share the VAE's encoder
(``ImageEncoder``), which image-to-image tasks use.
"""

from __future__ import annotations

from collections.abc import Callable

from ..families import FAMILIES
from ..networks.layouts import SD1_WIDTHS, SD2_WIDTHS, Widths
from .params import Param, _Walk
from .vae_tables import decoder_params, encoder_params


def text_encoder_params(widths: Widths = SD1_WIDTHS) -> list[Param]:
    """keras_cv ``TextEncoder`` (CLIP ViT-L/14 text model) weights, in keras order."""
    w = _Walk("cond_stage_model.transformer.text_model.", "text_encoder.text_model.")
    width = widths.text
    w._add(
        "embeddings.token_embedding.weight",
        "embeddings.token_embedding.weight",
        (49408, width),
        "copy",
    )
    w._add(
        "embeddings.position_embedding.weight",
        "embeddings.position_embedding.weight",
        (77, width),
        "copy",
    )
    for i in range(widths.text_layers):
        p = f"encoder.layers.{i}."
        w.norm(p + "layer_norm1", p + "layer_norm1", width)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.dense(p + "self_attn." + proj, p + "self_attn." + proj, width, width)
        w.norm(p + "layer_norm2", p + "layer_norm2", width)
        w.dense(p + "mlp.fc1", p + "mlp.fc1", width, 4 * width)
        w.dense(p + "mlp.fc2", p + "mlp.fc2", 4 * width, width)
    w.norm("final_layer_norm", "final_layer_norm", width)
    return w.params


def text_encoder_v2_params(widths: Widths = SD2_WIDTHS) -> list[Param]:
    """keras_cv ``TextEncoderV2`` (OpenCLIP ViT-H/14 text tower, 23 of its 24 blocks)
    weights, in keras order.

    Single files hold OpenCLIP's names (``cond_stage_model.model.*``) with q, k and v
    fused in ``attn.in_proj_*``; diffusers folders hold a 23-layer ``CLIPTextModel``.
    SD 2.x conditions on the penultimate block's output followed by ``ln_final``, which
    is what keras_cv's 23 layers and final LayerNormalization compute.
    """
    w = _Walk("cond_stage_model.model.", "text_encoder.text_model.")
    width = widths.text
    w._add("token_embedding.weight", "embeddings.token_embedding.weight", (49408, width), "copy")
    w._add("positional_embedding", "embeddings.position_embedding.weight", (77, width), "copy")
    for i in range(widths.text_layers):
        ldm, diff = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        w.norm(ldm + "ln_1", diff + "layer_norm1", width)
        for index, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            part = (index, 3)
            w._add(
                ldm + "attn.in_proj_weight",
                diff + f"self_attn.{proj}.weight",
                (width, width),
                "dense",
                ldm_part=part,
            )
            w._add(
                ldm + "attn.in_proj_bias",
                diff + f"self_attn.{proj}.bias",
                (width,),
                "copy",
                ldm_part=part,
            )
        w.dense(ldm + "attn.out_proj", diff + "self_attn.out_proj", width, width)
        w.norm(ldm + "ln_2", diff + "layer_norm2", width)
        w.dense(ldm + "mlp.c_fc", diff + "mlp.fc1", width, 4 * width)
        w.dense(ldm + "mlp.c_proj", diff + "mlp.fc2", 4 * width, width)
    w.norm("ln_final", "final_layer_norm", width)
    return w.params


def diffusion_model_params(  # noqa: C901 (the U-Net's table follows its blocks level by level, as keras_cv builds them)
    widths: Widths = SD1_WIDTHS, linear_projection: bool = False, in_channels: int = 4
) -> list[Param]:
    """keras_cv ``DiffusionModel`` (SD 1.x U-Net) weights, in keras order; with
    ``SD2_WIDTHS, linear_projection=True``, ``DiffusionModelV2``'s (SD 2.x: its
    SpatialTransformers project in and out with Dense layers, ``fully_connected=True``).
    The number of heads does not change any weight's shape; ``in_channels`` (9 for an
    inpainting U-Net) changes conv_in's."""
    w = _Walk("model.diffusion_model.", "unet.")
    context_dim = widths.context
    first, time_dim = widths.unet[0], 4 * widths.unet[0]

    def res_block(ldm, diffusers, n_in, n_out):
        w.norm(f"{ldm}.in_layers.0", f"{diffusers}.norm1", n_in)
        w.conv(f"{ldm}.in_layers.2", f"{diffusers}.conv1", n_in, n_out)
        w.dense(f"{ldm}.emb_layers.1", f"{diffusers}.time_emb_proj", time_dim, n_out)
        w.norm(f"{ldm}.out_layers.0", f"{diffusers}.norm2", n_out)
        w.conv(f"{ldm}.out_layers.3", f"{diffusers}.conv2", n_out, n_out)
        if n_in != n_out:
            w.conv(f"{ldm}.skip_connection", f"{diffusers}.conv_shortcut", n_in, n_out, 1)

    def transformer(ldm, diffusers, c):
        w.norm(f"{ldm}.norm", f"{diffusers}.norm", c)
        if linear_projection:
            w.dense(f"{ldm}.proj_in", f"{diffusers}.proj_in", c, c)
        else:
            w.conv(f"{ldm}.proj_in", f"{diffusers}.proj_in", c, c, 1)
        b_ldm, b_diff = f"{ldm}.transformer_blocks.0", f"{diffusers}.transformer_blocks.0"
        for n, attn, ctx in ((1, "attn1", c), (2, "attn2", context_dim)):
            w.norm(f"{b_ldm}.norm{n}", f"{b_diff}.norm{n}", c)
            w.dense(f"{b_ldm}.{attn}.to_q", f"{b_diff}.{attn}.to_q", c, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_k", f"{b_diff}.{attn}.to_k", ctx, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_v", f"{b_diff}.{attn}.to_v", ctx, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_out.0", f"{b_diff}.{attn}.to_out.0", c, c)
        w.norm(f"{b_ldm}.norm3", f"{b_diff}.norm3", c)
        w.dense(f"{b_ldm}.ff.net.0.proj", f"{b_diff}.ff.net.0.proj", c, c * 8)
        w.dense(f"{b_ldm}.ff.net.2", f"{b_diff}.ff.net.2", c * 4, c)
        if linear_projection:
            w.dense(f"{ldm}.proj_out", f"{diffusers}.proj_out", c, c)
        else:
            w.conv(f"{ldm}.proj_out", f"{diffusers}.proj_out", c, c, 1)

    # keras lists the layers of a functional model in topological order: the first
    # time-embedding Dense, conv_in, the second Dense, then the U-Net.
    w.dense("time_embed.0", "time_embedding.linear_1", first, time_dim)
    w.conv("input_blocks.0.0", "conv_in", in_channels, first)
    w.dense("time_embed.2", "time_embedding.linear_2", time_dim, time_dim)

    skips = [first]
    channels = first
    for level, width in enumerate(widths.unet):
        for j in range(2):
            block = 3 * level + j + 1
            res_block(
                f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}", channels, width
            )
            channels = width
            if level < 3:
                transformer(f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{j}", width)
            skips.append(channels)
        if level < 3:
            w.conv(
                f"input_blocks.{3 * level + 3}.0.op",
                f"down_blocks.{level}.downsamplers.0.conv",
                width,
                width,
            )
            skips.append(channels)

    last = widths.unet[-1]
    res_block("middle_block.0", "mid_block.resnets.0", last, last)
    transformer("middle_block.1", "mid_block.attentions.0", last)
    res_block("middle_block.2", "mid_block.resnets.1", last, last)

    for level, width in enumerate(reversed(widths.unet)):
        for j in range(3):
            block = 3 * level + j
            n_in = channels + skips.pop()
            res_block(f"output_blocks.{block}.0", f"up_blocks.{level}.resnets.{j}", n_in, width)
            channels = width
            if level > 0:
                transformer(f"output_blocks.{block}.1", f"up_blocks.{level}.attentions.{j}", width)
        if level < 3:
            index = 1 if level == 0 else 2
            w.conv(
                f"output_blocks.{3 * level + 2}.{index}.conv",
                f"up_blocks.{level}.upsamplers.0.conv",
                width,
                width,
            )

    w.norm("out.0", "conv_norm_out", first)
    w.conv("out.2", "conv_out", first, 4)
    return w.params


_TEXT_TABLES = {"clip": text_encoder_params, "openclip": text_encoder_v2_params}
#: Per family: the text encoder's table, whether the U-Net's SpatialTransformers project
#: in and out with Dense layers, the family's own widths (from its record) and its
#: U-Net's input channels.
_FAMILIES = {
    family.name: (
        _TEXT_TABLES[family.checkpoint_text],
        family.attention.fully_connected,
        family.widths,
        family.in_channels,
    )
    for family in FAMILIES.values()
}


def family_tables(
    family: str, widths: Widths | None = None
) -> dict[str, Callable[[], list[Param]]]:
    """The weight tables of ``family`` (``"sd-v1"``, ``"sd-v2"``, ``"tiny"`` or an
    inpainting variant, ``"sd-v1-inpainting"``: conv_in takes 9 channels), by network
    (``text_encoder``, ``diffusion_model``, ``decoder`` and the VAE ``encoder``, which
    a checkpoint may lack: see :data:`OPTIONAL_NETWORKS`), each a function that returns
    its :class:`Param` list; at ``widths``, or the family's own widths when ``None``."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    text, linear_projection, own, in_channels = _FAMILIES[family]
    widths = own if widths is None else widths
    return {
        "text_encoder": lambda: text(widths),
        "diffusion_model": lambda: diffusion_model_params(
            widths, linear_projection=linear_projection, in_channels=in_channels
        ),
        "decoder": lambda: decoder_params(widths),
        "encoder": lambda: encoder_params(widths),
    }


#: Networks a checkpoint may lack as a whole: the VAE encoder, which only image-to-image
#: tasks use. A checkpoint with none of its tensors converts without it; one with some
#: of them must have them all.
OPTIONAL_NETWORKS = ("encoder",)


#: The weight tables of every family at its own widths (``{family: {network: () ->
#: [Param]}}``); ``PARAMS`` holds SD 1.x's.
PARAMS_BY_FAMILY = {family: family_tables(family) for family in _FAMILIES}
PARAMS = PARAMS_BY_FAMILY["sd-v1"]

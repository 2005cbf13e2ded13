"""The weight tables of the VAE: keras_cv's ``Decoder`` (with post_quant_conv) and
``ImageEncoder`` (with quant_conv), in ``model.weights`` order (see :mod:`.tables`).
Both are built of the same resnet blocks and one mid-block attention."""

from __future__ import annotations

from ..networks.layouts import SD1_WIDTHS, Widths
from .params import Param, _Walk


def _resnet(w: _Walk, ldm: str, diffusers: str, n_in: int, n_out: int) -> None:
    w.norm(f"{ldm}.norm1", f"{diffusers}.norm1", n_in)
    w.conv(f"{ldm}.conv1", f"{diffusers}.conv1", n_in, n_out)
    w.norm(f"{ldm}.norm2", f"{diffusers}.norm2", n_out)
    w.conv(f"{ldm}.conv2", f"{diffusers}.conv2", n_out, n_out)
    if n_in != n_out:
        w.conv(f"{ldm}.nin_shortcut", f"{diffusers}.conv_shortcut", n_in, n_out, 1)


def _mid(w: _Walk, side: str, width: int) -> None:
    """The mid block of ``side`` (``encoder`` or ``decoder``): resnet, attention, resnet.
    The attention's 1x1 convs have older diffusers names (``query``, ...) too."""
    _resnet(w, f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", width, width)
    a_ldm, a_diff = f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0"
    w.norm(f"{a_ldm}.norm", f"{a_diff}.group_norm", width)
    for ldm, new, old in (
        ("q", "to_q", "query"),
        ("k", "to_k", "key"),
        ("v", "to_v", "value"),
        ("proj_out", "to_out.0", "proj_attn"),
    ):
        w.conv(f"{a_ldm}.{ldm}", f"{a_diff}.{new}", width, width, 1, aliases=(f"{a_diff}.{old}",))
    _resnet(w, f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", width, width)


def decoder_params(widths: Widths = SD1_WIDTHS) -> list[Param]:
    """keras_cv ``Decoder`` (the VAE decoder, with post_quant_conv) weights, in keras order."""
    w = _Walk("first_stage_model.", "vae.")
    mid = widths.decoder[0]
    w.conv("post_quant_conv", "post_quant_conv", 4, 4, 1)
    w.conv("decoder.conv_in", "decoder.conv_in", 4, mid)
    _mid(w, "decoder", mid)
    channels = mid
    for level, width in enumerate(widths.decoder):
        ldm_level = 3 - level
        for j in range(3):
            _resnet(
                w,
                f"decoder.up.{ldm_level}.block.{j}",
                f"decoder.up_blocks.{level}.resnets.{j}",
                channels,
                width,
            )
            channels = width
        if level < 3:
            w.conv(
                f"decoder.up.{ldm_level}.upsample.conv",
                f"decoder.up_blocks.{level}.upsamplers.0.conv",
                width,
                width,
            )
    w.norm("decoder.norm_out", "decoder.conv_norm_out", channels)
    w.conv("decoder.conv_out", "decoder.conv_out", channels, 3)
    return w.params


def encoder_params(widths: Widths = SD1_WIDTHS) -> list[Param]:
    """keras_cv ``ImageEncoder`` (the VAE encoder, with quant_conv) weights, in keras
    order. SD's single files number its levels from the image side, as diffusers does."""
    w = _Walk("first_stage_model.", "vae.")
    levels = widths.encoder_levels
    w.conv("encoder.conv_in", "encoder.conv_in", 3, levels[0])
    channels = levels[0]
    for level, width in enumerate(levels):
        for j in range(2):
            _resnet(
                w,
                f"encoder.down.{level}.block.{j}",
                f"encoder.down_blocks.{level}.resnets.{j}",
                channels,
                width,
            )
            channels = width
        if level < 3:
            w.conv(
                f"encoder.down.{level}.downsample.conv",
                f"encoder.down_blocks.{level}.downsamplers.0.conv",
                width,
                width,
            )
    mid = levels[-1]
    _mid(w, "encoder", mid)
    w.norm("encoder.norm_out", "encoder.conv_norm_out", mid)
    w.conv("encoder.conv_out", "encoder.conv_out", mid, 8)
    w.conv("quant_conv", "quant_conv", 8, 8, 1)
    return w.params


__all__ = ["decoder_params", "encoder_params"]

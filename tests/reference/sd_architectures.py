"""The SD 1.5 and SD 2.1 networks in diffusers/transformers, with random weights.

Shared by the reference tests and benchmarks/import_checkpoint.py: the configurations
are those of the published models (text encoder, U-Net, VAE); the weights are whatever
the libraries initialise, so callers that need distinct values perturb them.
"""

from __future__ import annotations

import math


def perturb(module, seed: int) -> None:
    """Redraw every parameter of ``module`` from ``seed``: biases and norms get a 0.1
    normal added, so no two are alike (a swapped pair would show), and weights a fan-in
    scaled normal, so activations keep their scale."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn_like(param))
            else:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn_like(param) / math.sqrt(fan_in))


def text_encoder(version: str):
    """transformers' ``CLIPTextModel`` of SD 1.x ("sd15": CLIP ViT-L/14) or SD 2.x
    ("sd21": OpenCLIP ViT-H/14 without its last layer)."""
    import transformers

    if version == "sd15":
        config = transformers.CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
    else:
        config = transformers.CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            projection_dim=512,
        )
    return transformers.CLIPTextModel(config).eval()


def unet(version: str, sample_size: int = 64, in_channels: int = 4):
    """diffusers' ``UNet2DConditionModel`` of SD 1.x or SD 2.x (linear projections);
    ``in_channels`` 9: SD 1.5's inpainting U-Net."""
    import diffusers

    if version == "sd15":
        return diffusers.UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            cross_attention_dim=768,
            attention_head_dim=8,
        ).eval()
    return diffusers.UNet2DConditionModel(
        sample_size=sample_size,
        cross_attention_dim=1024,
        attention_head_dim=[5, 10, 20, 20],
        use_linear_projection=True,
    ).eval()


def vae(sample_size: int = 512):
    """diffusers' ``AutoencoderKL`` of SD 1.x and 2.x (the same for both)."""
    import diffusers

    return diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
    ).eval()


def small_networks(
    widths,
    text_heads: int,
    unet_heads: int,
    seed: int,
    size: int = 64,
    in_channels: int = 4,
    v2: bool = False,
):
    """``(text encoder, U-Net, VAE)`` of SD's layout at small ``widths`` (an sdgen
    ``Widths``), for images of ``size`` pixels, every parameter perturbed from ``seed``
    (the U-Net from ``seed + 1``, the VAE from ``seed + 2``), in eval mode. ``v2``: SD
    2.x's GELU text encoder and linear projections; ``in_channels`` 9: an inpainting
    U-Net."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(seed)
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=49408,
            hidden_size=widths.text,
            intermediate_size=4 * widths.text,
            num_hidden_layers=widths.text_layers,
            num_attention_heads=text_heads,
            max_position_embeddings=77,
            hidden_act="gelu" if v2 else "quick_gelu",
            layer_norm_eps=1e-5,
        )
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=size // 8,
        in_channels=in_channels,
        block_out_channels=widths.unet,
        cross_attention_dim=widths.context,
        attention_head_dim=unet_heads,  # diffusers' legacy name for the heads
        use_linear_projection=v2,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=tuple(reversed(widths.decoder)),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=size,
    )
    for offset, module in enumerate((text, unet, vae)):
        perturb(module, seed + offset)
    return text.eval(), unet.eval(), vae.eval()

"""Stable Diffusion 1.x: CLIP ViT-L/14 text states (768 wide), 8 attention heads at every
U-Net level, convolutional projections around the transformers."""

from ..networks.layouts import SD1_WIDTHS, Attention
from .base import Family

SD1 = Family(
    name="sd-v1",
    widths=SD1_WIDTHS,
    text_heads=12,
    text_activation="quick_gelu",
    attention=Attention(heads=8),
)

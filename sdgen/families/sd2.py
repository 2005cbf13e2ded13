"""Stable Diffusion 2.x: OpenCLIP ViT-H/14 text states (1024 wide, from the penultimate of
its 24 blocks), heads of 64 channels, dense projections around the transformers, and a
tokenizer that pads with 0."""

from ..networks.layouts import SD2_WIDTHS, Attention
from .base import Family

SD2 = Family(
    name="sd-v2",
    widths=SD2_WIDTHS,
    text_heads=16,
    text_activation="gelu",
    attention=Attention(heads=None, head_size=64, fully_connected=True),
    pad_token=0,
    checkpoint_text="openclip",
    v_prediction_size=768,
    single_files_say_prediction=False,
)

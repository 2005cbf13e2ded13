"""What a model family is: one record holding everything that differs between SD 1.x,
SD 2.x and the tiny test model, so no other module switches on a family's name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..networks.layouts import LATENT_CHANNELS, MAX_PROMPT_LENGTH, Attention, Widths
from ..spec import ModelSpec
from ..text.tokenizer import END_OF_TEXT


@dataclass(frozen=True)
class Family:
    """A network family.

    widths: the layout's widths (also what the checkpoint weight tables depend on).
    text_heads, text_activation: the text encoder's attention heads and MLP activation.
    attention: how the U-Net splits its attention into heads.
    pad_token: the token prompts are padded with: CLIP's end-of-text (SD 1.x), where SD
        2.x's OpenCLIP tokenizer pads with 0 (diffusers' SD 2 tokenizer config).
    checkpoint_text: how checkpoints name the text encoder's tensors: ``clip`` (CLIP
        ViT-L/14's names, SD 1.x) or ``openclip`` (OpenCLIP's, with fused q, k and v).
    default_size: the image size a checkpoint of this family is made for, unless it
        says otherwise; ``v_prediction_size`` that of its v-predicting checkpoints, when
        they are made for another (SD 2.x: the 768-v model).
    single_files_say_prediction: False when a single file does not say whether it
        predicts epsilon or v (SD 2.x), so diffusers' rule decides (see
        ``sdgen.convert.detect``).
    fill: for a family whose weights are generated rather than loaded (``tiny``), a
        function ``fill(model, seed)`` that sets every weight from a seed.
    """

    name: str
    widths: Widths
    text_heads: int
    text_activation: str
    attention: Attention
    pad_token: int = END_OF_TEXT
    checkpoint_text: str = "clip"
    default_size: int = 512
    v_prediction_size: int | None = None
    single_files_say_prediction: bool = True
    fill: object = field(default=None, repr=False, compare=False)

    @property
    def context_width(self) -> int:
        """The width of the text states the U-Net attends to."""
        return self.widths.context

    @property
    def timestep_embedding_dim(self) -> int:
        """The width of the sinusoidal timestep embedding the U-Net takes."""
        return self.widths.unet[0]

    @property
    def first_level_heads(self) -> int:
        """The attention heads at the U-Net's widest level (the memory estimate's)."""
        return self.attention.split(self.widths.unet[0])[0]

    def size_for(self, prediction_type: str) -> int:
        """The default image size of this family's checkpoints predicting that way."""
        if prediction_type == "v_prediction" and self.v_prediction_size is not None:
            return self.v_prediction_size
        return self.default_size

    def build(
        self,
        role: str,
        spec: ModelSpec,
        height: int,
        width: int,
        context_length: int = MAX_PROMPT_LENGTH,
        in_channels: int = LATENT_CHANNELS,
    ):
        """The network ``role`` (``text_encoder``, ``diffusion_model`` or ``decoder``) of
        ``spec`` for ``height`` x ``width`` images. Its weights are zeros for the caller
        to load, except a generated family's, filled from ``spec.seed`` (the text
        encoder from the seed, the U-Net from seed + 1, the decoder from seed + 2)."""
        from ..networks import layouts

        if role == "text_encoder":
            network = layouts.text_encoder(
                self.widths, self.text_heads, self.text_activation, name="text_encoder"
            )
            offset = 0
        elif role == "diffusion_model":
            network = layouts.diffusion_model(
                self.widths,
                self.attention,
                height,
                width,
                context_length,
                in_channels,
                name="diffusion_model",
            )
            offset = 1
        elif role == "decoder":
            network = layouts.decoder(self.widths, height, width, name="decoder")
            offset = 2
        else:
            raise ValueError(f"unknown network role {role!r}")
        if self.fill is not None:
            self.fill(network, spec.seed + offset)
        return network

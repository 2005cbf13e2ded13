"""What a model family is: one record holding everything that differs between SD 1.x,
SD 2.x and the tiny test model, so no other module switches on a family's name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..networks.layouts import LATENT_CHANNELS, MAX_PROMPT_LENGTH, Attention, Widths
from ..spec import ModelSpec
from ..text.tokenizer import END_OF_TEXT

#: The input channels of an inpainting U-Net: the noisy latents (4), the mask (1) and
#: the masked image's latents (4), concatenated in that order.
INPAINTING_CHANNELS = 2 * LATENT_CHANNELS + 1


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
    in_channels: the U-Net's input channels: 4 (the latents), or 9 for an inpainting
        family (the latents, the mask and the masked image's latents, in that order).
    variant_of: for a variant of another family (an inpainting one), that family's
        name: the text encoder, widths and tensor names are the same, so its LoRAs and
        embeddings fit this one too. None for a family of its own.
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
    in_channels: int = LATENT_CHANNELS
    variant_of: str | None = None

    @property
    def inpainting(self) -> bool:
        """Whether the U-Net takes inpainting's 9 channels (see ``in_channels``)."""
        return self.in_channels == INPAINTING_CHANNELS

    @property
    def base_name(self) -> str:
        """The name of the family this one is a variant of, else its own: what a LoRA's
        or an embedding's family is checked against."""
        return self.variant_of or self.name

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
        in_channels: int | None = None,
    ):
        """The network ``role`` (``text_encoder``, ``diffusion_model``, ``decoder`` or
        the VAE ``encoder``) of ``spec`` for ``height`` x ``width`` images. Its weights
        are zeros for the caller to load, except a generated family's, filled from
        ``spec.seed`` (the text encoder from the seed, the U-Net from seed + 1, the
        decoder from seed + 2, the encoder from seed + 3). ``in_channels`` (the U-Net's)
        is the family's own unless given."""
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
                self.in_channels if in_channels is None else in_channels,
                name="diffusion_model",
            )
            offset = 1
        elif role == "decoder":
            network = layouts.decoder(self.widths, height, width, name="decoder")
            offset = 2
        elif role == "encoder":
            network = layouts.encoder(self.widths, height, width, name="encoder")
            offset = 3
        else:
            raise ValueError(f"unknown network role {role!r}")
        if self.fill is not None:
            self.fill(network, spec.seed + offset)
        return network

"""What a built network is specialised to: image size, text context length, input channels.

Keras functional models and OpenVINO's converted graphs have static shapes, so a U-Net
built for 512x512 latents with a 77-token context runs nothing else. A
``NetworkSignature`` names one such specialisation. Both runtimes key their networks by
it, and the OpenVINO runtime puts it in its file names, so a long prompt (another context
length), an inpainting model (9 input channels) or a hires pass (a second size) each get
their own networks instead of a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: CLIP's context length: the text encoder's width in tokens, and today every prompt's.
CLIP_CONTEXT_LENGTH = 77
#: Channels of Stable Diffusion's latents (the U-Net's input without inpainting's mask).
LATENT_CHANNELS = 4


@dataclass(frozen=True)
class NetworkSignature:
    """The shapes a U-Net (and, by ``height`` and ``width``, a decoder) is built for.

    height, width: the image size in pixels, multiples of 8 (latents are 1/8 of it).
    context_length: tokens in the text states the U-Net attends to (77 per CLIP chunk).
    in_channels: channels of the U-Net's latent input: 4, or 9 for inpainting models.
    """

    height: int
    width: int
    context_length: int = CLIP_CONTEXT_LENGTH
    in_channels: int = LATENT_CHANNELS

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < 8 or value % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {value}")
        if self.context_length < 1 or self.in_channels < 1:
            raise ValueError(f"a signature needs positive lengths, got {self}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(height/8, width/8, in_channels): one row of the U-Net's latent input."""
        return self.height // 8, self.width // 8, self.in_channels

    @property
    def size(self) -> tuple[int, int]:
        """(height, width): all the decoder depends on."""
        return self.height, self.width

    def with_context_length(self, context_length: int) -> NetworkSignature:
        return replace(self, context_length=context_length)

    def file_stem(self) -> str:
        """A name part for converted files: ``512x768-ctx77-in4`` (width x height)."""
        return f"{self.width}x{self.height}-ctx{self.context_length}-in{self.in_channels}"


__all__ = ["CLIP_CONTEXT_LENGTH", "LATENT_CHANNELS", "NetworkSignature"]

"""How the networks run. A runtime turns keras_cv's three networks into three calls the
pipeline makes: ``encode`` (tokens -> text states), ``denoise`` (one U-Net step with
classifier-free guidance) and ``decode`` (latents -> pixels).

- ``tensorflow`` (:mod:`sdgen.runtimes.tensorflow`): keras_cv's models as they are,
  compiled with ``tf.function`` (and XLA / mixed precision on a GPU).
- ``openvino`` (:mod:`sdgen.runtimes.openvino`): the same Keras models converted once to
  OpenVINO's format and cached on disk, then run by OpenVINO's CPU plugin in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: The runtimes ``--runtime`` accepts.
RUNTIMES = ("tensorflow", "openvino")

#: ``denoise(latents, timestep_embeddings, contexts, guidance_scale)``: the U-Net's
#: prediction for B rows, or with a guidance scale for 2B rows (B unconditional, then B
#: conditional) combined into B guided rows.
Denoise = Callable
#: ``decode(latents)``: images in [-1, 1], (B, H, W, 3).
Decode = Callable


@dataclass
class Networks:
    """The compiled calls for one image size."""

    denoise: Denoise = field(repr=False)
    decode: Decode = field(repr=False)

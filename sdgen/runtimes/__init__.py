"""How the networks run. A runtime turns a model's three networks into the calls the
pipeline makes (the ``Backend`` protocol in :mod:`.base`): ``encode`` (tokens -> text
states), ``denoise`` (one raw U-Net prediction per row) and ``decode`` (latents ->
pixels), for the ``NetworkSignature`` (:mod:`.signature`) the pipeline asks for.

- ``tensorflow`` (:mod:`sdgen.runtimes.tensorflow`): keras_cv's models as they are,
  compiled with ``tf.function`` (and XLA / mixed precision on a GPU); every signature
  runs on the same layers, so image sizes share one copy of the weights.
- ``openvino`` (:mod:`sdgen.runtimes.openvino`): the same Keras models converted once per
  signature to OpenVINO's format and cached on disk, then run by OpenVINO's CPU plugin in
  float32.
"""

from __future__ import annotations

from .base import Backend, Networks
from .signature import NetworkSignature

#: The runtimes ``--runtime`` accepts.
RUNTIMES = ("tensorflow", "openvino")

__all__ = ["RUNTIMES", "Backend", "NetworkSignature", "Networks"]

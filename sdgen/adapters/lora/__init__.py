"""LoRA and LyCORIS adapters: read their files, keep a folder of them, and turn a set of
them into weight changes of the text encoder and U-Net.

- ``files``: :func:`read_lora` -> :class:`LoraFile` (kohya/A1111 ``lora_unet_*`` and
  ``lora_te_*`` with LDM or diffusers block names, LoCon incl. CP ``lora_mid``,
  diffusers/PEFT ``lora_A``/``lora_B`` and the older attention-processor names, LyCORIS
  LoHa and LoKr), refusing SDXL, DoRA, NaN, unsafe pickles and unknown keys;
- ``keys``: the module-name tables, built from the checkpoint name index;
- ``deltas``: :func:`lora_deltas`, the summed ``ΔW`` per keras weight;
- ``library``: :class:`LoraLibrary`, a folder of LoRAs by name;
- ``apply``: :func:`apply_deltas_to_keras`, merge and restore in built Keras networks;
- ``uses``: the LoRAs a generation config asks for (``--lora`` and ``<lora:...>`` tags),
  found and read before any model loads, as ``LoraUse`` records; A1111's LoRA hash.

Nothing here imports TensorFlow or torch.
"""

from __future__ import annotations

from .apply import apply_deltas_to_keras
from .deltas import ROLES, lora_deltas, module_delta
from .errors import LoraError
from .files import SUFFIXES, LoraFile, LoraModule, read_lora
from .library import LoraLibrary, default_loras_dir

__all__ = [
    "ROLES",
    "SUFFIXES",
    "LoraError",
    "LoraFile",
    "LoraLibrary",
    "LoraModule",
    "apply_deltas_to_keras",
    "default_loras_dir",
    "lora_deltas",
    "module_delta",
    "read_lora",
]

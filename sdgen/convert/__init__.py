"""Convert Stable Diffusion checkpoints people hold into weights for keras_cv's networks.

One job per module, in the order a conversion runs:

- ``readers``: read a ``.safetensors`` file, a ``.ckpt`` or a diffusers folder into one
  flat dictionary of NumPy arrays, running no code from the file;
- ``unpickler``: the restricted unpickler that reads a ``.ckpt`` without torch;
- ``detect``: which Stable Diffusion it is (family, layout), its prediction type and
  default size, and the kinds sdgen refuses;
- ``tables``: each keras_cv network's weights in keras order, with the checkpoint names
  they come from, at any ``Widths``;
- ``mapping``: the tensors onto keras weight lists (pure: no I/O, no models), and the
  name index from a checkpoint key to its keras weight;
- ``converted``: ``convert_checkpoint``, the steps above in one call;
- ``writer``: the converted weights as keras_cv h5 files (the only module that builds
  networks);
- ``errors``: the errors all of them raise.

Nothing here imports TensorFlow or torch unless :func:`save_converted` is called.
"""

from __future__ import annotations

from .converted import ConvertedCheckpoint, convert_checkpoint
from .detect import describe, detect
from .errors import CheckpointError, NotACheckpointError, UnsupportedCheckpointError
from .mapping import (
    IGNORED_KEYS,
    IGNORED_PREFIXES,
    Slot,
    is_ignored,
    map_weights,
    name_index,
    resolve_keys,
    to_keras,
)
from .readers import DIFFUSERS_FILES, read_checkpoint
from .tables import (
    OPTIONAL_NETWORKS,
    PARAMS,
    PARAMS_BY_FAMILY,
    SD1_WIDTHS,
    SD2_WIDTHS,
    Param,
    Widths,
    family_tables,
)
from .writer import FILENAMES, save_converted

__all__ = [
    "DIFFUSERS_FILES",
    "FILENAMES",
    "IGNORED_KEYS",
    "IGNORED_PREFIXES",
    "OPTIONAL_NETWORKS",
    "PARAMS",
    "PARAMS_BY_FAMILY",
    "SD1_WIDTHS",
    "SD2_WIDTHS",
    "CheckpointError",
    "ConvertedCheckpoint",
    "NotACheckpointError",
    "Param",
    "Slot",
    "UnsupportedCheckpointError",
    "Widths",
    "convert_checkpoint",
    "describe",
    "detect",
    "family_tables",
    "is_ignored",
    "map_weights",
    "name_index",
    "read_checkpoint",
    "resolve_keys",
    "save_converted",
    "to_keras",
]

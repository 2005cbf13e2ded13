"""Write converted weights as keras_cv's h5 files, the ``--weights DIR`` layout.

The only part of the conversion that builds keras_cv networks (and so imports
TensorFlow), and only when :func:`save_converted` is called.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..families import FAMILIES
from .errors import CheckpointError
from .tables import OPTIONAL_NETWORKS

#: File names of the converted networks, the ``--weights DIR`` layout (keras_cv's own
#: names; ``vae_encoder.h5`` is written only for a checkpoint that has a VAE encoder).
FILENAMES = {
    "text_encoder": "kcv_encoder.h5",
    "diffusion_model": "kcv_diffusion_model.h5",
    "decoder": "kcv_decoder.h5",
    "encoder": "vae_encoder.h5",
}


def _family_of_weights(weights) -> str:
    family = getattr(weights, "family", None)
    if family is not None:
        return family
    from ..families import variant_with_channels

    try:
        width = np.shape(weights["text_encoder"][0])[1]
    except (KeyError, IndexError, TypeError):
        return "sd-v1"
    by_width = {
        family.widths.text: family.name for family in FAMILIES.values() if family.variant_of is None
    }
    base = by_width.get(width, "sd-v1")
    try:  # the U-Net's weights begin with a Dense (kernel, bias), then conv_in's kernel
        channels = np.shape(weights["diffusion_model"][2])[2]
    except (KeyError, IndexError, TypeError):
        return base
    found = variant_with_channels(base, channels)
    return base if found is None else found.name


def save_converted(converted, folder) -> Path:
    """Write converted weights (a :class:`ConvertedCheckpoint`, or the plain dictionary
    of weight lists) as keras_cv's h5 files into ``folder``, atomically: the files are
    written in a sibling temporary folder that is then renamed into place.

    The networks built are those of the checkpoint's family (and the VAE encoder only if
    the checkpoint has one) (V2 ones for SD 2.x; a plain dictionary's family is read off
    its token embedding's width and conv_in's input channels). The family, prediction
    type and default size are not written: record them from the ``ConvertedCheckpoint``.
    """
    import types

    from ..families import family_of
    from ..networks.h5 import save_legacy_weights

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise CheckpointError(f"{folder} already exists and is not empty")
    folder.parent.mkdir(parents=True, exist_ok=True)
    family = _family_of_weights(converted)
    spec = types.SimpleNamespace(name=f"converted {family}", family=family, seed=0)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for role, filename in FILENAMES.items():
            if role in OPTIONAL_NETWORKS and role not in converted:
                continue  # a checkpoint without a VAE encoder
            model = family_of(spec).build(role, spec, 64, 64)
            try:
                model.set_weights(converted[role])
            except ValueError as error:
                raise CheckpointError(f"converted {role} weights do not fit: {error}") from error
            save_legacy_weights(model, staging / filename)
            del model
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder

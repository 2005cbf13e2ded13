"""What a model is, as plain data: its networks' roles, weight files and family.

A leaf module: everything that describes or looks up models imports it, and it imports
nothing of sdgen's, so lookup (``catalog``) can depend on its sources (``registry``,
``store``) without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The networks a text-to-image model is made of, in loading order.
ROLES = ("text_encoder", "diffusion_model", "decoder")
#: The networks only image-to-image tasks use (img2img, inpainting, hires fix): their
#: weights are looked for, downloaded or converted only when such a task runs.
IMAGE_ROLES = ("encoder",)


@dataclass(frozen=True)
class WeightFile:
    """One published weights file: where it comes from and what it must hash to."""

    role: str
    filename: str
    url: str
    sha256: str
    #: its size in bytes as published, for ``sdgen models`` to say what a download costs
    size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its network family, default size and weight files.

    ``files`` is empty for a model whose weights are generated (``tiny``), and for one
    published as a single SD ``checkpoint`` (``sd-v1.5``), which is downloaded once and
    converted into the model store on first use (see :mod:`sdgen.provision`).
    ``files`` holds the networks of ``ROLES``, which every run needs; ``image_files``
    those of ``IMAGE_ROLES`` (the VAE encoder), fetched only when an image task runs.
    """

    name: str
    family: str
    default_size: int
    description: str
    files: tuple[WeightFile, ...] = ()
    image_files: tuple[WeightFile, ...] = ()
    license: str | None = None
    seed: int = 0
    prediction_type: str = "epsilon"
    #: A local folder holding the weight files (an imported model), instead of URLs.
    weights_dir: Path | None = None
    #: The one published SD checkpoint the model's three files are converted from.
    checkpoint: WeightFile | None = None
    #: The checkpoint an imported model was converted from, and its sha256.
    source: str | None = None
    source_sha256: str | None = None

    @property
    def generated(self) -> bool:
        """Whether its weights are made from a seed, not read from files (``tiny``)."""
        return not self.files and self.checkpoint is None and self.weights_dir is None

    @property
    def model_hash(self) -> str | None:
        """AUTOMATIC1111's "Model hash": the first 10 hex digits of the sha256 of the
        checkpoint file the weights come from; None where there is none (``tiny``, and
        keras_cv's published files)."""
        sha256 = self.source_sha256 or (self.checkpoint.sha256 if self.checkpoint else None)
        return sha256[:10].lower() if sha256 else None

    def file_for(self, role: str) -> WeightFile | None:
        """The published file of network ``role``, of ``files`` or ``image_files``."""
        return next((f for f in (*self.files, *self.image_files) if f.role == role), None)

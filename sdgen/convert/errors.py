"""The errors of checkpoint conversion, apart so that every stage can raise them."""

from __future__ import annotations

from ..errors import SdgenError, UsageError


class CheckpointError(SdgenError):
    """A checkpoint cannot be read or converted: unreadable, unsafe, incomplete or of an
    unsupported kind."""


class NotACheckpointError(UsageError, CheckpointError):
    """The file or folder given is not a Stable Diffusion checkpoint."""


class UnsupportedCheckpointError(CheckpointError):
    """A Stable Diffusion checkpoint of a kind sdgen cannot convert (SDXL, inpainting,
    depth, LoRA)."""

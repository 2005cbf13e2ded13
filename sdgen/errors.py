"""Typed errors raised by the sdgen library.

The CLI turns each into a one-line message with a fixed exit status:
``UsageError`` subclasses exit with 2 (the request itself is wrong), every other
``SdgenError`` exits with 1 (the request was fine but could not be carried out).
"""

from __future__ import annotations


class SdgenError(Exception):
    """Base class of every error sdgen reports to its users."""

    exit_code = 1


class UsageError(SdgenError):
    """The request is invalid: a bad option value, prompt or input file."""

    exit_code = 2


class ConfigError(UsageError):
    """A generation setting or preset is invalid."""


class PromptError(UsageError):
    """A prompt is empty or longer than the text encoder takes."""


class PromptsFileError(UsageError):
    """A prompts file is missing, unreadable, empty or not UTF-8."""


class OutputExistsError(UsageError):
    """An output file already exists and ``overwrite`` was not asked for."""


class OutputError(SdgenError):
    """An output file or folder cannot be written."""


class WeightsError(SdgenError):
    """Weights are missing, cannot be downloaded, or fail verification."""


class ChecksumError(WeightsError):
    """A downloaded or cached weights file does not have the published sha256."""


class MissingEncoderError(UsageError):
    """An image task (img2img, inpainting, hires fix) needs the model's VAE encoder, and
    the model has none: imported before sdgen converted encoders, or a ``--weights``
    folder without its file."""


class ModelError(SdgenError):
    """A model name is unknown or a network cannot be built."""


class OutOfMemoryError(SdgenError):
    """The device ran out of memory while generating."""


class BadImageError(SdgenError):
    """The networks produced NaN or infinite values instead of an image."""


class ImageInfoError(UsageError):
    """An image file is missing, unreadable, or holds no generation parameters."""


class DynamicPromptError(UsageError):
    """A dynamic prompt cannot be expanded: a syntax error, an unknown wildcard, a
    missing wildcards folder, or more combinations than sdgen makes."""

"""sdgen: text-to-image with Stable Diffusion on keras-cv's networks.

Load a pipeline once and generate many times::

    import sdgen

    pipeline = sdgen.load_pipeline("tiny")
    images = pipeline.generate(sdgen.GenerationConfig("a lighthouse", seed=1, steps=8))

Names are imported on first use, so ``import sdgen`` (and the CLI's ``--help``) stays
free of TensorFlow.
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "GenerationConfig": "sdgen.config",
    "Pipeline": "sdgen.pipeline",
    "DeviceSettings": "sdgen.pipeline",
    "GeneratedImage": "sdgen.pipeline",
    "load_pipeline": "sdgen.pipeline",
    "SAMPLERS": "sdgen.samplers",
    "get_sampler": "sdgen.samplers",
    "SdgenError": "sdgen.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sdgen' has no attribute {name!r}")

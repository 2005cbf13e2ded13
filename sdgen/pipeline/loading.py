"""``load_pipeline``: resolve a model's weights, build its networks on a runtime.

The one place that builds networks for a pipeline (``_build``): the TensorFlow runtime
gets them built once, at the first size, and runs every other signature on the same
layers; the OpenVINO runtime calls ``_build`` only for a signature its cache lacks.
The VAE encoder, which only image tasks use, is built (and its weights resolved,
downloaded or converted) only when a backend's ``encode_images`` is first called.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ..catalog import get_model_spec
from ..errors import UsageError
from ..families import family_of
from ..networks.h5 import load_weights
from ..runtimes import RUNTIMES
from ..runtimes.signature import NetworkSignature
from ..runtimes.tensorflow import DeviceSettings, TensorFlowBackend, detect_device
from ..spec import ROLES, ModelSpec
from ..text.tokenizer import load_tokenizer
from .generate import Pipeline


def _build(spec: ModelSpec, role: str, signature: NetworkSignature, paths: dict[str, Path]):
    """The Keras network of ``role`` for ``signature``, with ``paths[role]``'s weights
    loaded when there is one (the tiny model fills its own from its seed)."""
    network = family_of(spec).build(
        role,
        spec,
        signature.height,
        signature.width,
        signature.context_length,
        signature.in_channels,
    )
    if role in paths:
        load_weights(network, paths[role])
    return network


def load_pipeline(
    model: str | ModelSpec = "sd-v1.4",
    *,
    weights_dir: str | Path | None = None,
    offline: bool = False,
    width: int | None = None,
    height: int | None = None,
    xla: bool | None = None,
    mixed_precision: bool | None = None,
    download_progress=None,
    runtime: str = "tensorflow",
    embeddings_dir: str | Path | None = None,
    lora_dir: str | Path | None = None,
) -> Pipeline:
    """Resolve the weights of ``model`` and build its networks.

    model: a model name (``sd-v1.4``, ``tiny``) or a ``ModelSpec``.
    weights_dir: a folder holding ``kcv_encoder.h5``, ``kcv_diffusion_model.h5`` and
        ``kcv_decoder.h5``; without it, files come from the caches or are downloaded
        (a model published as one checkpoint, ``sd-v1.5``, is converted into the model
        store once: see :mod:`sdgen.provision`).
    offline: never download; raise ``WeightsError`` naming the missing file instead.
    width, height: the size to build the networks for first [the model's default].
    xla, mixed_precision: None picks what suits the device (see ``detect_device``);
        TensorFlow runtime only.
    runtime: ``tensorflow`` or ``openvino`` (see :mod:`sdgen.runtimes`).
    embeddings_dir: the folder whose textual-inversion embeddings prompts may use by
        name [``$SDGEN_HOME/embeddings``]; files are read when a prompt uses them.
    lora_dir: the folder whose LoRAs ``GenerationConfig.loras`` and ``<lora:NAME>`` tags
        name [``$SDGEN_HOME/loras``]; files are read when a config asks for them and
        merged by ``pipeline.generate`` (see ``Pipeline.use_loras``).
    """
    from ..adapters.lora.uses import LoraFinder
    from ..adapters.textual_inversion import EmbeddingLibrary
    from ..provision import provide_weights

    if runtime not in RUNTIMES:  # before any weight is resolved, let alone downloaded
        raise UsageError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    paths = provide_weights(
        spec,
        Path(weights_dir) if weights_dir is not None else None,
        offline=offline,
        progress=download_progress,
    )
    signature = NetworkSignature(
        height or spec.default_size,
        width or spec.default_size,
        in_channels=family_of(spec).in_channels,  # 9 for an inpainting model's U-Net
    )

    @cache
    def encoder_weights() -> Path | None:
        """The VAE encoder's weights, looked for when an image task first needs them."""
        from ..provision import provide_encoder

        folder = Path(weights_dir) if weights_dir is not None else None
        return provide_encoder(spec, folder, offline=offline, progress=download_progress)

    def build(role: str, signature: NetworkSignature):
        if role == "encoder":
            path = encoder_weights()
            return _build(spec, role, signature, {} if path is None else {role: path})
        return _build(spec, role, signature, paths)

    if runtime == "openvino":
        from ..runtimes.openvino import OpenVinoBackend, check_options, default_folder

        check_options(xla, mixed_precision)

        backend = OpenVinoBackend(spec, default_folder(spec, paths), build, encoder_weights)
        backend.networks(signature)  # convert or load the U-Net and decoder now
        device = DeviceSettings(device="CPU", runtime="openvino")
        pipeline = Pipeline.with_backend(spec, load_tokenizer(), backend, device)
        pipeline.embeddings = EmbeddingLibrary(embeddings_dir and Path(embeddings_dir))
        pipeline.loras = LoraFinder(lora_dir and Path(lora_dir))
        return pipeline

    device = detect_device(xla, mixed_precision)
    import keras

    keras.mixed_precision.set_global_policy(
        "mixed_float16" if device.mixed_precision else "float32"
    )
    networks = {role: build(role, signature) for role in ROLES}
    backend = TensorFlowBackend(
        spec,
        networks["text_encoder"],
        networks["diffusion_model"],
        networks["decoder"],
        device,
        load_encoder=lambda height, width: build("encoder", NetworkSignature(height, width)),
    )
    pipeline = Pipeline.with_backend(spec, load_tokenizer(), backend, device)
    pipeline.embeddings = EmbeddingLibrary(embeddings_dir and Path(embeddings_dir))
    pipeline.loras = LoraFinder(lora_dir and Path(lora_dir))
    return pipeline


__all__ = ["load_pipeline"]

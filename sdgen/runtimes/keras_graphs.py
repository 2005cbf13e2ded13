"""Keras networks at another signature on the same layers: a U-Net for another image
size or context length, a decoder or VAE encoder for another image size, each a new
functional model that shares every layer, and so every weight, with the one built."""

from __future__ import annotations

from ..errors import ModelError
from .signature import NetworkSignature


def signature_of(diffusion_model) -> NetworkSignature:
    """The signature a keras_cv-style U-Net (inputs: latent, timestep embedding,
    context) was built for."""
    latent, _, context = diffusion_model.inputs
    rows, columns, channels = (int(n) for n in latent.shape[1:])
    return NetworkSignature(rows * 8, columns * 8, int(context.shape[1]), channels)


def on_layers(model, shapes):
    """A Keras functional model that runs ``model``'s own layers on inputs of ``shapes``
    (one per input, without the batch axis); ``model`` itself if they are its shapes.

    The new model owns no variables: it shares every layer, and so every weight, with
    ``model``. ``model.call`` is used rather than ``model(...)``, because a functional
    model checks its inputs against the shapes it was built with; its layers only check
    what they need (channels, ranks), and keras_cv's reshape from the shapes they see.
    """
    import keras

    if [tuple(t.shape[1:]) for t in model.inputs] == [tuple(s) for s in shapes]:
        return model
    inputs = [
        keras.Input(shape, dtype=t.dtype) for t, shape in zip(model.inputs, shapes, strict=True)
    ]
    structure = inputs if len(inputs) > 1 else inputs[0]  # as the model takes them
    return keras.Model(structure, model.call(structure, training=False), name=model.name)


def unet_on_layers(diffusion_model, signature: NetworkSignature):
    """``diffusion_model``'s layers for ``signature``: another image size or context
    length. Input channels are weights (the first convolution's kernel), so another
    count needs another model and raises ``ModelError``."""
    built = signature_of(diffusion_model)
    if signature.in_channels != built.in_channels:
        raise ModelError(
            f"the U-Net takes {built.in_channels} input channels, not {signature.in_channels}"
        )
    _, t_emb, context = (tuple(t.shape[1:]) for t in diffusion_model.inputs)
    shapes = [signature.latent_shape, t_emb, (signature.context_length, context[-1])]
    return on_layers(diffusion_model, shapes)


def decoder_on_layers(decoder, height: int, width: int):
    """``decoder``'s layers for ``height`` x ``width`` pixel images."""
    channels = int(decoder.inputs[0].shape[-1])
    return on_layers(decoder, [(height // 8, width // 8, channels)])


def encoder_on_layers(encoder, height: int, width: int):
    """``encoder``'s layers for ``height`` x ``width`` pixel images."""
    return on_layers(encoder, [(height, width, int(encoder.inputs[0].shape[-1]))])


def _image_size(encoder) -> tuple[int, int]:
    shape = encoder.inputs[0].shape
    return int(shape[1]), int(shape[2])


__all__ = [
    "decoder_on_layers",
    "encoder_on_layers",
    "on_layers",
    "signature_of",
    "unet_on_layers",
]

"""The VAE encoder, the fourth network (image tasks' ``backend.encode_images``), with the
tiny model: built only when first asked for, the same on both runtimes, converted by
``sdgen import``, and a clear one-line error where a model has none.

The encoder's numbers against diffusers' ``AutoencoderKL.encode`` are proven in
tests/reference/test_tiny_conversion.py; its layout against keras_cv's in
tests/test_layouts.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_checkpoint

from sdgen.catalog import get_model_spec
from sdgen.errors import MissingEncoderError, UsageError
from sdgen.pipeline import load_pipeline
from sdgen.provision import availability, provide_encoder
from sdgen.store import SCHEMA, import_checkpoint, store_dir

SIZE = 64
ENCODER_FILE = "vae_encoder.h5"


def _images(count=2, height=SIZE, width=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, height, width, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """tiny as a single file, with and without its VAE encoder (written once)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    tiny_checkpoint(folder / "tiny.safetensors")
    tiny_checkpoint(folder / "no-encoder.safetensors", encoder=False)
    return folder


def test_tiny_encodes_images_into_latents_deterministically_and_row_by_row():
    pipeline = load_pipeline("tiny", width=SIZE, height=SIZE)
    images = _images()
    latents = pipeline.backend.encode_images(images)
    assert latents.shape == (2, SIZE // 8, SIZE // 8, 4) and latents.dtype == np.float32
    assert latents.std() > 0.01
    assert not np.array_equal(latents[0], latents[1])
    np.testing.assert_array_equal(pipeline.backend.encode_images(images[1:]), latents[1:])
    # another size runs on the same layers (one copy of the weights)
    tall = pipeline.backend.encode_images(_images(1, 2 * SIZE, SIZE))
    assert tall.shape == (1, SIZE // 4, SIZE // 8, 4)
    encoder = pipeline.backend.encoder
    assert pipeline.backend.encoder_at(2 * SIZE, SIZE).weights[0] is encoder.weights[0]
    with pytest.raises(ValueError, match="multiples of 8"):
        pipeline.backend.encode_images(_images(1, 60, SIZE))


@pytest.mark.fresh_load
def test_text_to_image_never_builds_the_encoder(tmp_path):
    """A txt2img load looks for no encoder: a --weights folder without one loads, and
    only encode_images asks for it, with a one-line error saying what to do."""
    tiny = load_pipeline("tiny", width=SIZE, height=SIZE)
    folder = tmp_path / "weights"
    folder.mkdir()
    from sdgen.convert import FILENAMES
    from sdgen.networks.h5 import save_legacy_weights

    for role in ("text_encoder", "diffusion_model", "decoder"):
        save_legacy_weights(getattr(tiny, role), folder / FILENAMES[role])
    pipeline = load_pipeline("tiny", width=SIZE, height=SIZE, weights_dir=folder)
    assert pipeline.backend.encoder is None
    with pytest.raises(MissingEncoderError) as info:
        pipeline.backend.encode_images(_images(1))
    message = str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert "\n" not in message and ENCODER_FILE in message and str(folder) in message


def test_imported_checkpoint_has_the_encoder_tiny_generates(checkpoints):
    spec = import_checkpoint(checkpoints / "tiny.safetensors", "my-tiny")
    info = json.loads((store_dir() / "my-tiny" / "model.json").read_text())
    assert info["schema"] == SCHEMA == 2
    assert info["roles"] == ["text_encoder", "diffusion_model", "decoder", "encoder"]
    assert (spec.weights_dir / ENCODER_FILE).is_file()
    images = _images()
    ours = load_pipeline("my-tiny", width=SIZE, height=SIZE).backend.encode_images(images)
    theirs = load_pipeline("tiny", width=SIZE, height=SIZE).backend.encode_images(images)
    np.testing.assert_array_equal(ours, theirs)


def test_a_model_imported_before_encoders_still_loads_and_says_to_import_again(checkpoints):
    """An old store entry (schema 1: no ``schema``, no ``roles``, no encoder file) still
    generates from text; an image task asks for it to be imported again, in one line."""
    spec = import_checkpoint(checkpoints / "tiny.safetensors", "old-tiny")
    (spec.weights_dir / ENCODER_FILE).unlink()
    metadata = spec.weights_dir / "model.json"
    info = json.loads(metadata.read_text())
    del info["schema"], info["roles"]
    metadata.write_text(json.dumps(info))

    old = get_model_spec("old-tiny")
    assert availability(old).state == "present"
    pipeline = load_pipeline("old-tiny", width=SIZE, height=SIZE)
    assert pipeline.backend.networks(pipeline.backend.signature).decode is not None
    with pytest.raises(MissingEncoderError) as info:
        pipeline.backend.encode_images(_images(1))
    message = str(info.value)
    assert "\n" not in message
    source = str((checkpoints / "tiny.safetensors").resolve())
    assert f"sdgen import {source} --name old-tiny --overwrite" in message


def test_a_checkpoint_without_an_encoder_imports_and_says_it_has_none(checkpoints):
    spec = import_checkpoint(checkpoints / "no-encoder.safetensors", "bare-tiny")
    info = json.loads((spec.weights_dir / "model.json").read_text())
    assert info["roles"] == ["text_encoder", "diffusion_model", "decoder"]
    assert not (spec.weights_dir / ENCODER_FILE).exists()
    with pytest.raises(MissingEncoderError, match="holds none"):
        provide_encoder(spec)


def test_published_models_name_keras_cvs_encoder_but_a_first_run_does_not_download_it():
    for name in ("sd-v1.4", "sd-v2.1"):
        spec = get_model_spec(name)
        assert [w.role for w in spec.files] == ["text_encoder", "diffusion_model", "decoder"]
        (encoder,) = spec.image_files
        assert encoder == spec.file_for("encoder")
        assert encoder.filename == ENCODER_FILE
        assert encoder.url == (
            "https://huggingface.co/fchollet/stable-diffusion/resolve/main/vae_encoder.h5"
        )
        assert encoder.sha256 == (
            "c60fb220a40d090e0f86a6ab4c312d113e115c87c40ff75d11ffcf380aab7ebb"
        )
        # what `sdgen models` says a first (text-to-image) run downloads leaves it out
        assert availability(spec).download_bytes == sum(w.size for w in spec.files)
    assert provide_encoder(get_model_spec("tiny")) is None  # generated from its seed


def test_offline_a_published_encoder_is_named_as_missing():
    from sdgen.errors import WeightsError

    with pytest.raises(WeightsError, match=ENCODER_FILE):
        provide_encoder(get_model_spec("sd-v1.4"), offline=True)


@pytest.mark.fresh_load
def test_openvino_encoder_matches_tensorflow_and_is_cached_by_its_weights(tmp_path):
    pytest.importorskip("openvino")
    images = _images()
    expected = load_pipeline("tiny", width=SIZE, height=SIZE).backend.encode_images(images)
    pipeline = load_pipeline("tiny", width=SIZE, height=SIZE, runtime="openvino")
    backend = pipeline.backend
    assert not list(backend.folder.glob("encoder-*"))  # txt2img converted no encoder
    got = backend.encode_images(images)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4
    (path,) = backend.folder.glob("encoder-*.xml")
    from sdgen.runtimes.signature import NetworkSignature

    assert path == backend.path("encoder", NetworkSignature(SIZE, SIZE))
    assert path.name.startswith(f"encoder-{SIZE}x{SIZE}-")
    # a second process reads the converted file instead of converting again
    again = load_pipeline("tiny", width=SIZE, height=SIZE, runtime="openvino").backend
    np.testing.assert_array_equal(again.encode_images(images), got)
    assert again.converted == []

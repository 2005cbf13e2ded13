"""Weights in the legacy Keras HDF5 layout that keras_cv's published kcv_*.h5 files use:
written by networks.h5.save_legacy_weights, read back by networks.h5.load_weights, and used by the
CLI through ``--weights DIR``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY, pixels

from sdgen.catalog import get_model_spec
from sdgen.errors import WeightsError
from sdgen.families import family_of
from sdgen.networks.h5 import load_weights, save_legacy_weights

SIZE = 128

# the module's fixture is built once, in one test process
pytestmark = pytest.mark.xdist_group("tiny-weights")
FILES = {
    "text_encoder": "kcv_encoder.h5",
    "diffusion_model": "kcv_diffusion_model.h5",
    "decoder": "kcv_decoder.h5",
}


def build(spec, role: str, size: int = SIZE):
    return family_of(spec).build(role, spec, size, size)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A folder with the tiny model's weights times 1.5, saved in keras_cv's layout, and
    the perturbed weights by role."""
    spec = get_model_spec("tiny")
    folder = tmp_path_factory.mktemp("tiny-weights")
    perturbed = {}
    for role, filename in FILES.items():
        network = build(spec, role)
        values = [w * np.float32(1.5) for w in network.get_weights()]
        network.set_weights(values)
        save_legacy_weights(network, folder / filename)
        perturbed[role] = values
    return folder, perturbed


@pytest.mark.parametrize("role", list(FILES))
def test_tiny_weights_round_trip(tiny_weights, role):
    folder, perturbed = tiny_weights
    fresh = build(get_model_spec("tiny"), role)
    before = fresh.get_weights()
    assert len(before) == len(perturbed[role])
    assert not all(np.array_equal(a, b) for a, b in zip(before, perturbed[role], strict=True))

    load_weights(fresh, folder / FILES[role])

    loaded = fresh.get_weights()
    assert len(loaded) == len(perturbed[role])
    for got, want in zip(loaded, perturbed[role], strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("role", list(FILES))
def test_saved_file_has_the_legacy_layout(tiny_weights, role):
    folder, perturbed = tiny_weights
    with h5py.File(folder / FILES[role], "r") as handle:
        assert "layer_names" in handle.attrs  # legacy_h5_format, not Keras 3's .weights.h5
        assert "vars" not in handle and "layers" not in handle
        layer_names = [
            n.decode() if isinstance(n, bytes) else n for n in handle.attrs["layer_names"]
        ]
        assert layer_names
        stored = []
        for name in layer_names:
            group = handle[name]
            for weight_name in group.attrs["weight_names"]:
                key = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                stored.append(group[key][()])
    # every weight is stored once, and they add up to the network's weights
    assert sum(a.size for a in stored) == sum(a.size for a in perturbed[role])


def test_loading_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "kcv_decoder.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    decoder = build(get_model_spec("tiny"), "decoder")
    with pytest.raises(WeightsError) as info:
        load_weights(decoder, path)
    assert str(path) in str(info.value)


def test_loading_another_networks_file(tiny_weights):
    folder, _ = tiny_weights
    decoder = build(get_model_spec("tiny"), "decoder")
    path = folder / FILES["text_encoder"]
    with pytest.raises(WeightsError) as info:
        load_weights(decoder, path)
    assert str(path) in str(info.value)


@pytest.mark.slow
@pytest.mark.full_size
def test_full_size_decoder_round_trip(tmp_path):
    """SD's decoder, the size of the published kcv_decoder.h5 (about 198 MB)."""
    spec = get_model_spec("sd-v1.4")
    decoder = build(spec, "decoder", 64)
    rng = np.random.default_rng(1234)
    values = []
    for weight in decoder.get_weights():
        if weight.ndim == 1:
            values.append((1.0 + 0.02 * rng.standard_normal(weight.shape)).astype(np.float32))
        else:
            std = 1.0 / np.sqrt(np.prod(weight.shape[:-1]))
            values.append((std * rng.standard_normal(weight.shape)).astype(np.float32))
    decoder.set_weights(values)
    path = tmp_path / "kcv_decoder.h5"
    save_legacy_weights(decoder, path)
    size_mb = path.stat().st_size / 1e6
    assert 150 < size_mb < 250, f"{size_mb:.0f} MB"

    fresh = build(spec, "decoder", 64)
    load_weights(fresh, path)
    loaded = fresh.get_weights()
    assert len(loaded) == len(values)
    for got, want in zip(loaded, values, strict=True):
        np.testing.assert_array_equal(got, want)

    latent = np.random.default_rng(5).standard_normal((1, 8, 8, 4)).astype(np.float32)
    expected = np.asarray(decoder(latent, training=False))
    actual = np.asarray(fresh(latent, training=False))
    assert actual.shape == (1, 64, 64, 3)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(actual, expected)


# -- through the CLI --------------------------------------------------------------------------


def _generate(run_cli, out: Path, *extra: str) -> np.ndarray:
    result = run_cli("a prompt", *TINY, "--seed", "3", "--out", out, "--offline", *extra)
    assert result.exit_code == 0, result.stderr
    return pixels(out)


def test_cli_uses_the_weights_folder(tiny_weights, run_cli, hermetic, tmp_path):
    folder, _ = tiny_weights
    loaded = _generate(run_cli, hermetic / "loaded.png", "--weights", str(folder))
    again = _generate(run_cli, hermetic / "again.png", "--weights", str(folder))
    generated = _generate(run_cli, hermetic / "generated.png")
    assert loaded.shape == generated.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(loaded, again)
    assert not np.array_equal(loaded, generated)
    # no weights were cached or downloaded for either run (hermetic's SDGEN_CACHE)
    assert not (tmp_path / "sdgen-cache" / "weights").exists()

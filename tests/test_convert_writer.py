"""convert_checkpoint's result and writing it (sdgen.convert.converted and .writer)."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.convert import CheckpointError, ConvertedCheckpoint, convert_checkpoint, save_converted
from sdgen.convert.writer import _family_of_weights
from sdgen.errors import UsageError


def test_save_converted_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        save_converted({}, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_converted_checkpoint_reads_as_its_weights():
    weights = {"text_encoder": [np.zeros((49408, 1024))], "diffusion_model": [], "decoder": []}
    converted = ConvertedCheckpoint(weights, "sd-v2", "v_prediction", 768, "ldm")
    assert dict(converted) == weights and converted["text_encoder"] is weights["text_encoder"]
    assert converted.describe() == {
        "family": "sd-v2",
        "prediction_type": "v_prediction",
        "default_size": 768,
    }
    assert _family_of_weights(converted) == "sd-v2"
    assert _family_of_weights(weights) == "sd-v2"
    weights["text_encoder"] = [np.zeros((49408, 768))]
    assert _family_of_weights(weights) == "sd-v1"


def test_convert_checkpoint_refuses_unknown_prediction_type(tmp_path):
    with pytest.raises(UsageError, match="prediction type"):
        convert_checkpoint(tmp_path / "x.safetensors", prediction_type="sample")

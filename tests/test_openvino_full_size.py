"""The OpenVINO runtime at full SD v1 size: each converted network matches TensorFlow
running the same (random, fan-in scaled) weights within 1e-3 max abs."""

from __future__ import annotations

import numpy as np
import pytest
from full_size import full_size_networks

from sdgen.catalog import get_model_spec
from sdgen.pipeline.guidance import combine
from sdgen.runtimes.openvino import OpenVinoBackend
from sdgen.runtimes.signature import NetworkSignature
from sdgen.runtimes.tensorflow import DeviceSettings, TensorFlowBackend
from sdgen.spec import ROLES

pytestmark = [pytest.mark.slow, pytest.mark.full_size]

SIZE = 256
LIMIT = 1e-3


def test_full_size_openvino_networks_match_tensorflow(tmp_path):
    networks = full_size_networks(SIZE, SIZE)
    spec = get_model_spec("sd-v1.4")
    built = dict(zip(ROLES, networks, strict=True))
    tensorflow = TensorFlowBackend(spec, *networks, DeviceSettings())
    openvino = OpenVinoBackend(spec, tmp_path, lambda role, signature: built[role])

    rng = np.random.default_rng(0)
    tokens = np.stack([[49406, *rng.integers(0, 49406, 20), *[49407] * 56]] * 2)
    tokens[0, 1:21] = rng.integers(0, 49406, 20)
    positions = np.tile(np.arange(77), (2, 1))
    states = tensorflow.encode(tokens.astype(np.int32), positions.astype(np.int32))
    differences = {
        "text encoder": np.abs(openvino.encode(tokens, positions) - states).max(),
    }

    latents = rng.standard_normal((2, SIZE // 8, SIZE // 8, 4)).astype(np.float32)
    t_emb = rng.standard_normal((2, 320)).astype(np.float32)
    contexts = np.concatenate([states[:1], states[1:]])
    signature = NetworkSignature(SIZE, SIZE)
    tf_nets, ov_nets = tensorflow.networks(signature), openvino.networks(signature)
    guided = combine(*np.split(tf_nets.denoise(latents, t_emb, contexts), 2), 7.5)
    differences["U-Net, guided"] = np.abs(
        combine(*np.split(ov_nets.denoise(latents, t_emb, contexts), 2), 7.5) - guided
    ).max()
    decoded = tf_nets.decode(latents[:1])
    differences["decoder"] = np.abs(ov_nets.decode(latents[:1]) - decoded).max()
    print({name: float(value) for name, value in differences.items()})
    assert max(differences.values()) <= LIMIT, differences
    # the comparison is not between near-zero outputs
    assert np.abs(states).max() > 1 and np.abs(guided).max() > 1 and np.abs(decoded).max() > 0.1

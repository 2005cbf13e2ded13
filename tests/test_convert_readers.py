"""Reading checkpoints into flat state dicts (sdgen.convert.readers and .unpickler).

Readers round-trip little dictionaries; the restricted unpickler is fed torch's own
files, hand-written archives and malicious pickles.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from sdgen.convert import CheckpointError, NotACheckpointError, read_checkpoint
from sdgen.convert.readers import DIFFUSERS_FILES
from sdgen.errors import UsageError


def _small_state():
    rng = np.random.default_rng(0)
    return {
        "model.diffusion_model.a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "first_stage_model.b.bias": rng.standard_normal(5).astype(np.float16),
    }


def test_safetensors_round_trip(tmp_path):
    from safetensors.numpy import save_file

    state = _small_state()
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = read_checkpoint(tmp_path / "m.safetensors")
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype


def test_ckpt_round_trip_without_torch_on_the_read_side(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "plain": torch.randn(3, 4),
        "half": torch.randn(5).half(),
        "transposed": base.t(),  # non-contiguous: strides (1, 6)
        "offset": base[1:3, 2:5],  # shares base's storage, with an offset
        "bf16": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": state, "global_step": 10, "epoch": 2}, path)
    loaded = read_checkpoint(path)
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        expected = value.detach().float().numpy() if key == "bf16" else value.detach().numpy()
        np.testing.assert_array_equal(loaded[key], expected)
    assert loaded["half"].dtype == np.float16


def _zip_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _zip_pickle(path, pickle.dumps({"state_dict": {"x": _Evil(marker)}}))
    with pytest.raises(CheckpointError, match=r"system"):
        read_checkpoint(path)
    assert not marker.exists()
    # The payload is real: plain pickle would have run it.
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_malicious_pickle_saved_by_torch_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("numpy", "load"),
    ],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path, name):
    module, attr = name
    payload = b"\x80\x02c" + f"{module}\n{attr}\n".encode() + b"q\x00."
    path = tmp_path / "m.ckpt"
    _zip_pickle(path, payload)
    with pytest.raises(CheckpointError, match=f"{module}.{attr}"):
        read_checkpoint(path)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(NotACheckpointError, match="does not exist") as info:
        read_checkpoint(tmp_path / "nope.safetensors")
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_unknown_extension_is_not_a_checkpoint(tmp_path):
    (tmp_path / "m.txt").write_text("hello")
    with pytest.raises(NotACheckpointError):
        read_checkpoint(tmp_path / "m.txt")


def test_truncated_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(_small_state(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(CheckpointError, match="could not read") as info:
        read_checkpoint(path)
    assert info.value.exit_code == 1


def test_truncated_ckpt(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_not_a_zip_ckpt(tmp_path):
    path = tmp_path / "m.ckpt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a zip"):
        read_checkpoint(path)


def test_ckpt_without_tensors_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "m.ckpt"
    _zip_pickle(path, pickle.dumps({"a": 1, "b": [1, 2]}))
    with pytest.raises(NotACheckpointError, match="no tensors"):
        read_checkpoint(path)


def test_diffusers_folder_needs_all_components(tmp_path):
    from safetensors.numpy import save_file

    (tmp_path / "unet").mkdir()
    save_file(_small_state(), str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"vae, text_encoder|text_encoder, vae"):
        read_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotACheckpointError):
        read_checkpoint(empty)


def test_diffusers_folder_keys_are_prefixed(tmp_path):
    from safetensors.numpy import save_file

    for component, names in DIFFUSERS_FILES.items():
        (tmp_path / component).mkdir()
        save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / component / names[0]))
    assert sorted(read_checkpoint(tmp_path)) == [
        "text_encoder.text_model.w",
        "unet.w",
        "vae.w",
    ]


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def test_hand_written_torch_archive_is_rebuilt_from_its_storage(tmp_path):
    """A torch-style archive written opcode by opcode (no torch needed): a transposed
    2x2 view at offset 1 of a 6-float storage, under a ``state_dict`` wrapper."""
    storage_id = (
        b"(" + _unicode("storage") + b"ctorch\nFloatStorage\n"
        + _unicode("0") + _unicode("cpu") + b"K\x06tQ"
    )  # fmt: skip
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + storage_id
        + b"K\x01K\x02K\x02\x86K\x01K\x02\x86\x89}tR"
    )
    payload = b"\x80\x02}" + _unicode("state_dict") + b"}" + _unicode("w") + tensor + b"ss."
    path = tmp_path / "m.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", payload)
        archive.writestr("m/data/0", np.arange(6, dtype="<f4").tobytes())
    loaded = read_checkpoint(path)
    np.testing.assert_array_equal(loaded["w"], np.array([[1, 3], [2, 4]], np.float32))


def test_reading_imports_neither_torch_nor_tensorflow(tmp_path):
    import subprocess
    import sys

    test_hand_written_torch_archive_is_rebuilt_from_its_storage(tmp_path)
    code = (
        "import sys\n"
        "from sdgen.convert import read_checkpoint\n"
        f"assert read_checkpoint({str(tmp_path / 'm.ckpt')!r})['w'].shape == (2, 2)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_old_clip_naming_and_state_dict_nesting_are_normalised(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.ckpt"
    old = "cond_stage_model.transformer.embeddings.token_embedding.weight"
    torch.save({"state_dict": {old: torch.zeros(2, 3)}, "global_step": 1}, path)
    assert list(read_checkpoint(path)) == [
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    ]


def test_bfloat16_safetensors_are_read_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file(
        {
            "a": torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.bfloat16),
            "b": torch.tensor([1.0, 2.0], dtype=torch.float16),
        },
        str(path),
    )
    loaded = read_checkpoint(path)
    np.testing.assert_array_equal(loaded["a"], np.array([[1.5, -2.0], [0.25, 3.0]], np.float32))
    np.testing.assert_array_equal(loaded["b"], np.array([1.0, 2.0], np.float16))

"""Read the checkpoints people hold into one flat dictionary of NumPy arrays.

Three sources are read, none of which runs code from the file:

- ``.safetensors`` single files, tensor by tensor with :mod:`safetensors`;
- ``.ckpt`` files, with the restricted unpickler of :mod:`sdgen.convert.unpickler`;
- diffusers folders (``unet/``, ``vae/``, ``text_encoder/`` with safetensors files).

Besides the tensors, what a checkpoint says about itself (a ``.ckpt``'s global step, a
folder's scheduler and U-Net configs) is read for :mod:`sdgen.convert.detect`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CheckpointError, NotACheckpointError
from .unpickler import read_torch_zip

#: The files of a diffusers folder, by component, in order of preference.
DIFFUSERS_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors"),
}


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at ``path`` (file or diffusers folder), as NumPy.

    Diffusers folders come back with their component as a key prefix (``unet.``,
    ``vae.``, ``text_encoder.``); single files with their own keys, any ``state_dict``
    nesting removed.
    """
    return read_with_metadata(path)[0]


def read_with_metadata(path) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`read_checkpoint`'s tensors, and what else the checkpoint says about itself:
    ``global_step`` (the top level of a ``.ckpt``), ``scheduler`` and ``unet_config``
    (the JSON configs of a diffusers folder); each ``None`` where absent."""
    path = Path(path)
    meta = {"global_step": None, "scheduler": None, "unet_config": None}
    if not path.exists():
        raise NotACheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        tensors = _read_diffusers_folder(path)
        meta["scheduler"] = _read_json(path / "scheduler" / "scheduler_config.json")
        meta["unet_config"] = _read_json(path / "unet" / "config.json")
        return tensors, meta
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        loaded = _read_safetensors(path)
    elif suffix in (".ckpt", ".pt", ".pth", ".bin"):
        loaded = read_torch_zip(path)
        step = loaded.get("global_step") if isinstance(loaded, dict) else None
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            meta["global_step"] = int(step)
    else:
        raise NotACheckpointError(
            f"{path} is not a checkpoint: expected a .safetensors or .ckpt file, "
            "or a diffusers folder"
        )
    return _flatten_state_dict(loaded, path), meta


#: The largest safetensors header read (the format's own readers refuse above 100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000


def safetensors_header_length(handle) -> int:
    """The length in bytes of the JSON header of the safetensors file open as ``handle``
    (its first 8 bytes, little-endian); the tensors start 8 bytes after it."""
    return int.from_bytes(handle.read(8), "little")


def safetensors_header(path) -> tuple[dict, int]:
    """A safetensors file's JSON header (a table of tensor name -> dtype, shape and
    offsets, and ``__metadata__``) and the header's length in bytes, read without the
    tensors. ``CheckpointError`` when it is not one."""
    import json

    try:
        with open(path, "rb") as handle:
            size = safetensors_header_length(handle)
            if size > MAX_SAFETENSORS_HEADER:
                raise ValueError("header too large")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"could not read {path} as safetensors: {error}") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"could not read {path} as safetensors: its header is no table")
    return header, size


def _safetensors_stand_ins(path: Path) -> dict[str, np.ndarray]:
    """Zero-cost stand-ins (right shape, no data) of a safetensors file's tensors, from
    its header alone."""
    header, _ = safetensors_header(path)
    try:
        return {
            key: np.broadcast_to(np.float32(0), tuple(info["shape"]))
            for key, info in header.items()
            if key != "__metadata__"
        }
    except Exception as error:  # KeyError, TypeError, ValueError
        raise CheckpointError(f"could not read {path} as safetensors: {error}") from error


def shapes_with_metadata(path) -> tuple[dict[str, np.ndarray], dict]:
    """As :func:`read_with_metadata`, but safetensors files (alone or in a diffusers
    folder) are only read as far as their headers: enough for :func:`detect`."""
    path = Path(path)
    if path.is_dir() and all(
        (path / component / names[0]).is_file() for component, names in DIFFUSERS_FILES.items()
    ):
        tensors = {}
        for component, names in DIFFUSERS_FILES.items():
            for key, value in _safetensors_stand_ins(path / component / names[0]).items():
                if component == "text_encoder" and not key.startswith("text_model."):
                    key = "text_model." + key
                tensors[f"{component}.{key}"] = value
        meta = {
            "global_step": None,
            "scheduler": _read_json(path / "scheduler" / "scheduler_config.json"),
            "unet_config": _read_json(path / "unet" / "config.json"),
        }
        return tensors, meta
    if path.is_file() and path.suffix.lower() == ".safetensors":
        meta = {"global_step": None, "scheduler": None, "unet_config": None}
        return _flatten_state_dict(_safetensors_stand_ins(path), path), meta
    return read_with_metadata(path)


def _read_json(path: Path) -> dict | None:
    import json

    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"could not read {path}: {error}") from error
    return value if isinstance(value, dict) else None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError as error:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError("reading .safetensors needs the 'safetensors' package") from error
    try:
        # Tensor by tensor (not load_file, whose arrays may share one buffer): each array
        # owns its memory, so map_weights(consume=True) frees them one by one.
        with safe_open(str(path), framework="np") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except TypeError as error:
        if "bfloat16" not in str(error):
            raise CheckpointError(f"could not read {path} as safetensors: {error}") from error
        return _read_safetensors_bf16(path)
    except Exception as error:  # SafetensorError, OSError, ...
        raise CheckpointError(f"could not read {path} as safetensors: {error}") from error


_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def _read_safetensors_bf16(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file holding bfloat16 tensors (which NumPy lacks) as float32.

    The format is an 8-byte little-endian header length, a JSON header of dtypes, shapes
    and byte offsets, then the raw data.
    """
    import json

    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
            data = handle.read()
        tensors = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if end > len(data):
                raise ValueError(f"tensor {key} runs past the end of the file")
            raw = data[start:end]
            if info["dtype"] == "BF16":
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, _SAFETENSORS_DTYPES[info["dtype"]]).copy()
            tensors[key] = array.reshape(info["shape"])
        return tensors
    except Exception as error:  # ValueError, KeyError, json errors, OSError
        raise CheckpointError(f"could not read {path} as safetensors: {error}") from error


def _read_diffusers_folder(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for component, names in DIFFUSERS_FILES.items():
        for name in names:
            if (folder / component / name).is_file():
                found[component] = folder / component / name
                break
    if not found:
        raise NotACheckpointError(
            f"{folder} is not a diffusers checkpoint folder: no unet/, vae/ or "
            "text_encoder/ safetensors files"
        )
    missing = sorted(set(DIFFUSERS_FILES) - set(found))
    if missing:
        raise CheckpointError(
            f"diffusers folder {folder} lacks {', '.join(missing)} "
            f"(looked for {', '.join(f'{m}/{DIFFUSERS_FILES[m][0]}' for m in missing)})"
        )
    tensors = {}
    for component, file in found.items():
        for key, value in _read_safetensors(file).items():
            if component == "text_encoder" and not key.startswith("text_model."):
                # transformers 5 saves CLIPTextModel without the text_model. prefix.
                key = "text_model." + key
            tensors[f"{component}.{key}"] = value
    return tensors


def _flatten_state_dict(loaded, path) -> dict[str, np.ndarray]:
    """Unwrap ``{"state_dict": {...}}`` (and ``{"model": ...}``) nesting; keep tensors only."""
    if not isinstance(loaded, dict):
        raise NotACheckpointError(f"{path} does not hold a dictionary of tensors")
    for wrapper in ("state_dict", "model"):
        inner = loaded.get(wrapper)
        if isinstance(inner, dict) and any(isinstance(v, np.ndarray) for v in inner.values()):
            loaded = inner
            break
    tensors = {}
    for key, value in loaded.items():
        if not isinstance(value, np.ndarray):
            continue
        # Some SD 1.x files use transformers' older CLIP naming, without text_model.
        old = "cond_stage_model.transformer."
        if key.startswith(old) and not key.startswith(old + "text_model."):
            key = old + "text_model." + key[len(old) :]
        tensors[key] = value
    if not tensors:
        raise NotACheckpointError(f"{path} holds no tensors")
    return tensors

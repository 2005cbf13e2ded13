"""Convert Stable Diffusion checkpoints people hold into weights for keras_cv's networks.

Three sources are read, none of which runs code from the file:

- ``.safetensors`` single files, with :func:`safetensors.numpy.load_file`;
- ``.ckpt`` files (PyTorch's zip of a pickle plus raw storages), with a restricted
  unpickler that only rebuilds tensors as NumPy arrays and never imports torch;
- diffusers folders (``unet/``, ``vae/``, ``text_encoder/`` with safetensors files).

The tensors are then checked (which Stable Diffusion this is, if any) and mapped onto
keras_cv's networks: ``TextEncoder``, ``DiffusionModel`` and ``Decoder`` for SD 1.x;
``TextEncoderV2``, ``DiffusionModelV2`` and the same ``Decoder`` for SD 2.x (512 base and
768-v; which of the two a single file is cannot be read from its tensors, see
:func:`describe`). For each network the result is a list of NumPy arrays in the exact
order of ``model.weights``. Every tensor of the checkpoint
is either used or named in an explicit ignore list; a missing tensor, a left-over one or
a shape mismatch raises :class:`CheckpointError` naming the key.

This module imports neither TensorFlow nor torch unless :func:`save_converted` is called
(which builds the keras_cv networks).
"""

from __future__ import annotations

import collections
import collections.abc
import os
import pickle
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SdgenError, UsageError
from .networks.layouts import SD1_WIDTHS, SD2_WIDTHS, Widths

# -- errors ---------------------------------------------------------------------------------


class CheckpointError(SdgenError):
    """A checkpoint cannot be read or converted: unreadable, unsafe, incomplete or of an
    unsupported kind."""


class NotACheckpointError(UsageError, CheckpointError):
    """The file or folder given is not a Stable Diffusion checkpoint."""


class UnsupportedCheckpointError(CheckpointError):
    """A Stable Diffusion checkpoint of a kind sdgen cannot convert (SDXL, inpainting,
    depth, LoRA)."""


# -- reading --------------------------------------------------------------------------------

#: The files of a diffusers folder, by component, in order of preference.
DIFFUSERS_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors"),
}

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at ``path`` (file or diffusers folder), as NumPy.

    Diffusers folders come back with their component as a key prefix (``unet.``,
    ``vae.``, ``text_encoder.``); single files with their own keys, any ``state_dict``
    nesting removed.
    """
    return _read_with_metadata(path)[0]


def _read_with_metadata(path) -> tuple[dict[str, np.ndarray], dict]:
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
        loaded = _read_torch_zip(path)
        step = loaded.get("global_step") if isinstance(loaded, dict) else None
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            meta["global_step"] = int(step)
    else:
        raise NotACheckpointError(
            f"{path} is not a checkpoint: expected a .safetensors or .ckpt file, "
            "or a diffusers folder"
        )
    return _flatten_state_dict(loaded, path), meta


def _safetensors_stand_ins(path: Path) -> dict[str, np.ndarray]:
    """Zero-cost stand-ins (right shape, no data) of a safetensors file's tensors, from
    its header alone."""
    import json

    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(size))
        return {
            key: np.broadcast_to(np.float32(0), tuple(info["shape"]))
            for key, info in header.items()
            if key != "__metadata__"
        }
    except Exception as error:  # ValueError, KeyError, TypeError, OSError
        raise CheckpointError(f"could not read {path} as safetensors: {error}") from error


def _shapes_with_metadata(path) -> tuple[dict[str, np.ndarray], dict]:
    """As :func:`_read_with_metadata`, but safetensors files (alone or in a diffusers
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
    return _read_with_metadata(path)


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


class _Opaque:
    """Stands in for harmless non-tensor metadata (a Lightning callback's state, a NumPy
    scalar for the global step): absorbs its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _opaque(*args, **kwargs):
    return _Opaque()


@dataclass
class _StorageRef:
    dtype: object
    key: str


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds a torch state-dict pickle with NumPy arrays; refuses any other callable."""

    #: Names that carry metadata but no tensor; they become :class:`_Opaque`.
    OPAQUE = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
        ("torch", "device"),
        ("torch", "Size"),
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in ("set", "frozenset"):
            return {"set": set, "frozenset": frozenset}[name]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return self._rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in self.OPAQUE:
            return _opaque
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise CheckpointError(
            f"refusing to load {self._path}: its pickle asks for {module}.{name}, which "
            "is not part of a tensor state dict (the file may run code when loaded by "
            "torch; it was not run)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"refusing to load {self._path}: unknown persistent id")
        dtype, key = pid[1], str(pid[2])
        if not (isinstance(dtype, type) and issubclass(dtype, np.generic)) and dtype != "bfloat16":
            raise CheckpointError(f"refusing to load {self._path}: unknown storage {dtype!r}")
        return _StorageRef(dtype, key)

    def _storage(self, ref: _StorageRef) -> np.ndarray:
        if ref.key not in self._storages:
            name = f"{self._prefix}data/{ref.key}"
            try:
                raw = self._archive.read(name)
            except (KeyError, zipfile.BadZipFile, OSError) as error:
                raise CheckpointError(f"{self._path} is truncated or damaged: {error}") from error
            if ref.dtype == "bfloat16":
                bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(raw, np.dtype(ref.dtype).newbyteorder("<"))
            self._storages[ref.key] = array
        return self._storages[ref.key]

    def _rebuild_tensor(self, storage, offset, size, stride, *args):
        if not isinstance(storage, _StorageRef):
            raise CheckpointError(f"refusing to load {self._path}: malformed tensor")
        flat = self._storage(storage)
        size, stride, offset = tuple(size), tuple(stride), int(offset)
        if len(size) != len(stride) or any(s < 0 for s in stride):
            raise CheckpointError(f"{self._path} has a malformed tensor")
        if size and any(n == 0 for n in size):
            return np.zeros(size, flat.dtype)
        end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if offset < 0 or end > flat.size:
            raise CheckpointError(f"{self._path} has a tensor outside its storage")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
        )
        return np.array(view)

    @staticmethod
    def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
        return data


def _latin1_encode(text, encoding="latin1"):
    return str(text).encode(encoding)


def _read_torch_zip(path: Path) -> dict:
    """Read a ``torch.save`` zip archive without torch and without running its pickle."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"could not read {path}: not a zip archive (truncated, or saved in PyTorch's "
            "legacy format, which sdgen does not read; re-save it as .safetensors)"
        )
    try:
        archive = zipfile.ZipFile(path)
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"could not read {path}: {error}") from error
    if len(pickles) != 1:
        raise NotACheckpointError(f"{path} is not a PyTorch checkpoint (no data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    except KeyError:
        byteorder = "little"
    if byteorder != "little":
        raise CheckpointError(f"{path} was saved on a big-endian machine; not supported")
    with archive:
        try:
            with archive.open(pickles[0]) as handle:
                return _RestrictedUnpickler(handle, archive, prefix, path).load()
        except CheckpointError:
            raise
        except Exception as error:  # UnpicklingError, EOFError, zlib errors, ...
            raise CheckpointError(f"could not read {path}: {error}") from error


# -- detection ------------------------------------------------------------------------------

#: Keys of single-file (CompVis/LDM) checkpoints that are not weights of the networks:
#: the training-time noise schedule, EMA bookkeeping and CLIP's position ids.
IGNORED_KEYS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "text_encoder.text_model.embeddings.position_ids",
        # SD 2.x (OpenCLIP ViT-H/14 text tower): the pooled-output projection and CLIP's
        # logit scale are not used for conditioning; the causal mask is rebuilt by keras.
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.logit_scale",
        "cond_stage_model.model.attn_mask",
    }
)
#: Key prefixes ignored as a whole: EMA copies of the U-Net, and the VAE's encoder, which
#: text-to-image generation does not use (keras_cv's ImageEncoder is not converted).
IGNORED_PREFIXES = (
    "model_ema.",
    "first_stage_model.encoder.",
    "first_stage_model.quant_conv.",
    "first_stage_model.loss.",
    "vae.encoder.",
    "vae.quant_conv.",
    # SD 2.x conditions on OpenCLIP's penultimate layer: its last block (of 24) is unused,
    # as in diffusers' converter (SD_2_TEXT_ENCODER_KEYS_TO_IGNORE).
    "cond_stage_model.model.transformer.resblocks.23.",
)

_LDM_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
_DIFFUSERS_CONV_IN = "unet.conv_in.weight"
_LDM_CONTEXT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_DIFFUSERS_CONTEXT = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


#: The family of a U-Net by the width of its cross-attention context.
_FAMILY_BY_CONTEXT = {768: "sd-v1", 1024: "sd-v2"}


def detect(tensors: dict[str, np.ndarray]) -> tuple[str, str]:
    """(family, layout) of a checkpoint: family ``"sd-v1"`` (context width 768) or
    ``"sd-v2"`` (context width 1024); layout ``"ldm"`` (single file, CompVis naming) or
    ``"diffusers"`` (a folder read by :func:`read_checkpoint`).

    Raises :class:`UnsupportedCheckpointError` for SDXL, inpainting (and other
    non-4-channel) U-Nets and LoRA files, and :class:`NotACheckpointError` for anything
    else.
    """
    keys = tensors.keys()
    if "model.diffusion_model.label_emb.0.0.weight" in tensors and not any(
        k.startswith("conditioner.embedders") for k in keys
    ):
        raise UnsupportedCheckpointError(
            "this U-Net takes an extra class/image embedding (label_emb: an unCLIP or "
            "other image-variation checkpoint); sdgen converts text-to-image SD 1.x and "
            "2.x only"
        )
    if any(k.startswith("conditioner.embedders") or "add_embedding" in k for k in keys):
        raise UnsupportedCheckpointError(
            "this is a Stable Diffusion XL checkpoint; sdgen converts SD 1.x and 2.x only"
        )
    if _LDM_CONV_IN in tensors:
        layout, conv_in, context = "ldm", _LDM_CONV_IN, _LDM_CONTEXT
    elif _DIFFUSERS_CONV_IN in tensors:
        layout, conv_in, context = "diffusers", _DIFFUSERS_CONV_IN, _DIFFUSERS_CONTEXT
    else:
        if any("lora_" in k or ".lora." in k for k in keys):
            raise UnsupportedCheckpointError(
                "this is a LoRA file, not a full checkpoint; sdgen cannot apply LoRAs"
            )
        raise NotACheckpointError(
            "not a Stable Diffusion checkpoint: no U-Net (model.diffusion_model.*) found"
        )
    if any("lora_" in k for k in keys):
        raise UnsupportedCheckpointError(
            "this checkpoint has LoRA weights (keys with 'lora_') merged in; not supported"
        )
    channels = tensors[conv_in].shape[1] if tensors[conv_in].ndim == 4 else None
    if channels == 9:
        raise UnsupportedCheckpointError(
            "this is an inpainting checkpoint (its U-Net takes 9 channels); sdgen "
            "converts text-to-image checkpoints only"
        )
    if channels != 4:
        raise UnsupportedCheckpointError(
            f"the U-Net takes {channels} input channels ({conv_in}); expected 4"
        )
    if context not in tensors or tensors[context].ndim != 2:
        raise NotACheckpointError(f"not a Stable Diffusion checkpoint: no {context}")
    width = tensors[context].shape[1]
    if width not in _FAMILY_BY_CONTEXT:
        raise UnsupportedCheckpointError(
            f"unknown Stable Diffusion variant: context width {width} in {context}"
        )
    return _FAMILY_BY_CONTEXT[width], layout


# -- the mapping ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One keras weight: its shape and the checkpoint tensor it comes from.

    ``kind`` says how to turn the torch layout into keras': ``"copy"``, ``"dense"``
    (``(out, in)`` -> ``(in, out)``) or ``"conv"`` (``OIHW`` -> ``HWIO``; a 2-D
    linear weight becomes a 1x1 kernel).
    """

    ldm: str
    diffusers: str
    shape: tuple[int, ...]
    kind: str
    #: Older names of the same tensor in diffusers folders.
    aliases: tuple[str, ...] = ()
    #: ``(index, count)``: the single-file tensor is ``count`` tensors stacked along its
    #: first axis and this weight is part ``index`` (OpenCLIP's fused ``in_proj`` holds
    #: q, k and v in that order). Diffusers folders hold the parts separately.
    ldm_part: tuple[int, int] | None = None


class _Walk:
    """Collects :class:`Param` entries; helpers mirror keras_cv's layer classes, each
    emitting its weights in the order keras lists them."""

    def __init__(self, ldm_prefix: str, diffusers_prefix: str):
        self.ldm_prefix = ldm_prefix
        self.diffusers_prefix = diffusers_prefix
        self.params: list[Param] = []

    def _add(self, ldm, diffusers, shape, kind, aliases=(), ldm_part=None):
        self.params.append(
            Param(
                self.ldm_prefix + ldm,
                self.diffusers_prefix + diffusers,
                tuple(shape),
                kind,
                tuple(self.diffusers_prefix + a for a in aliases),
                ldm_part,
            )
        )

    def dense(self, ldm, diffusers, n_in, n_out, bias=True, aliases=()):
        self._add(
            f"{ldm}.weight",
            f"{diffusers}.weight",
            (n_in, n_out),
            "dense",
            tuple(f"{a}.weight" for a in aliases),
        )
        if bias:
            self._add(
                f"{ldm}.bias",
                f"{diffusers}.bias",
                (n_out,),
                "copy",
                tuple(f"{a}.bias" for a in aliases),
            )

    def conv(self, ldm, diffusers, n_in, n_out, size=3, aliases=()):
        self._add(
            f"{ldm}.weight",
            f"{diffusers}.weight",
            (size, size, n_in, n_out),
            "conv",
            tuple(f"{a}.weight" for a in aliases),
        )
        self._add(
            f"{ldm}.bias",
            f"{diffusers}.bias",
            (n_out,),
            "copy",
            tuple(f"{a}.bias" for a in aliases),
        )

    def norm(self, ldm, diffusers, n, aliases=()):
        self._add(
            f"{ldm}.weight",
            f"{diffusers}.weight",
            (n,),
            "copy",
            tuple(f"{a}.weight" for a in aliases),
        )
        self._add(
            f"{ldm}.bias", f"{diffusers}.bias", (n,), "copy", tuple(f"{a}.bias" for a in aliases)
        )


def text_encoder_params(widths: Widths = SD1_WIDTHS) -> list[Param]:
    """keras_cv ``TextEncoder`` (CLIP ViT-L/14 text model) weights, in keras order."""
    w = _Walk("cond_stage_model.transformer.text_model.", "text_encoder.text_model.")
    width = widths.text
    w._add(
        "embeddings.token_embedding.weight",
        "embeddings.token_embedding.weight",
        (49408, width),
        "copy",
    )
    w._add(
        "embeddings.position_embedding.weight",
        "embeddings.position_embedding.weight",
        (77, width),
        "copy",
    )
    for i in range(widths.text_layers):
        p = f"encoder.layers.{i}."
        w.norm(p + "layer_norm1", p + "layer_norm1", width)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.dense(p + "self_attn." + proj, p + "self_attn." + proj, width, width)
        w.norm(p + "layer_norm2", p + "layer_norm2", width)
        w.dense(p + "mlp.fc1", p + "mlp.fc1", width, 4 * width)
        w.dense(p + "mlp.fc2", p + "mlp.fc2", 4 * width, width)
    w.norm("final_layer_norm", "final_layer_norm", width)
    return w.params


def text_encoder_v2_params(widths: Widths = SD2_WIDTHS) -> list[Param]:
    """keras_cv ``TextEncoderV2`` (OpenCLIP ViT-H/14 text tower, 23 of its 24 blocks)
    weights, in keras order.

    Single files hold OpenCLIP's names (``cond_stage_model.model.*``) with q, k and v
    fused in ``attn.in_proj_*``; diffusers folders hold a 23-layer ``CLIPTextModel``.
    SD 2.x conditions on the penultimate block's output followed by ``ln_final``, which
    is what keras_cv's 23 layers and final LayerNormalization compute.
    """
    w = _Walk("cond_stage_model.model.", "text_encoder.text_model.")
    width = widths.text
    w._add("token_embedding.weight", "embeddings.token_embedding.weight", (49408, width), "copy")
    w._add("positional_embedding", "embeddings.position_embedding.weight", (77, width), "copy")
    for i in range(widths.text_layers):
        ldm, diff = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        w.norm(ldm + "ln_1", diff + "layer_norm1", width)
        for index, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            part = (index, 3)
            w._add(
                ldm + "attn.in_proj_weight",
                diff + f"self_attn.{proj}.weight",
                (width, width),
                "dense",
                ldm_part=part,
            )
            w._add(
                ldm + "attn.in_proj_bias",
                diff + f"self_attn.{proj}.bias",
                (width,),
                "copy",
                ldm_part=part,
            )
        w.dense(ldm + "attn.out_proj", diff + "self_attn.out_proj", width, width)
        w.norm(ldm + "ln_2", diff + "layer_norm2", width)
        w.dense(ldm + "mlp.c_fc", diff + "mlp.fc1", width, 4 * width)
        w.dense(ldm + "mlp.c_proj", diff + "mlp.fc2", 4 * width, width)
    w.norm("ln_final", "final_layer_norm", width)
    return w.params


def diffusion_model_params(
    widths: Widths = SD1_WIDTHS, linear_projection: bool = False
) -> list[Param]:
    """keras_cv ``DiffusionModel`` (SD 1.x U-Net) weights, in keras order; with
    ``SD2_WIDTHS, linear_projection=True``, ``DiffusionModelV2``'s (SD 2.x: its
    SpatialTransformers project in and out with Dense layers, ``fully_connected=True``).
    The number of heads does not change any weight's shape."""
    w = _Walk("model.diffusion_model.", "unet.")
    context_dim = widths.context
    first, time_dim = widths.unet[0], 4 * widths.unet[0]

    def res_block(ldm, diffusers, n_in, n_out):
        w.norm(f"{ldm}.in_layers.0", f"{diffusers}.norm1", n_in)
        w.conv(f"{ldm}.in_layers.2", f"{diffusers}.conv1", n_in, n_out)
        w.dense(f"{ldm}.emb_layers.1", f"{diffusers}.time_emb_proj", time_dim, n_out)
        w.norm(f"{ldm}.out_layers.0", f"{diffusers}.norm2", n_out)
        w.conv(f"{ldm}.out_layers.3", f"{diffusers}.conv2", n_out, n_out)
        if n_in != n_out:
            w.conv(f"{ldm}.skip_connection", f"{diffusers}.conv_shortcut", n_in, n_out, 1)

    def transformer(ldm, diffusers, c):
        w.norm(f"{ldm}.norm", f"{diffusers}.norm", c)
        if linear_projection:
            w.dense(f"{ldm}.proj_in", f"{diffusers}.proj_in", c, c)
        else:
            w.conv(f"{ldm}.proj_in", f"{diffusers}.proj_in", c, c, 1)
        b_ldm, b_diff = f"{ldm}.transformer_blocks.0", f"{diffusers}.transformer_blocks.0"
        for n, attn, ctx in ((1, "attn1", c), (2, "attn2", context_dim)):
            w.norm(f"{b_ldm}.norm{n}", f"{b_diff}.norm{n}", c)
            w.dense(f"{b_ldm}.{attn}.to_q", f"{b_diff}.{attn}.to_q", c, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_k", f"{b_diff}.{attn}.to_k", ctx, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_v", f"{b_diff}.{attn}.to_v", ctx, c, bias=False)
            w.dense(f"{b_ldm}.{attn}.to_out.0", f"{b_diff}.{attn}.to_out.0", c, c)
        w.norm(f"{b_ldm}.norm3", f"{b_diff}.norm3", c)
        w.dense(f"{b_ldm}.ff.net.0.proj", f"{b_diff}.ff.net.0.proj", c, c * 8)
        w.dense(f"{b_ldm}.ff.net.2", f"{b_diff}.ff.net.2", c * 4, c)
        if linear_projection:
            w.dense(f"{ldm}.proj_out", f"{diffusers}.proj_out", c, c)
        else:
            w.conv(f"{ldm}.proj_out", f"{diffusers}.proj_out", c, c, 1)

    # keras lists the layers of a functional model in topological order: the first
    # time-embedding Dense, conv_in, the second Dense, then the U-Net.
    w.dense("time_embed.0", "time_embedding.linear_1", first, time_dim)
    w.conv("input_blocks.0.0", "conv_in", 4, first)
    w.dense("time_embed.2", "time_embedding.linear_2", time_dim, time_dim)

    skips = [first]
    channels = first
    for level, width in enumerate(widths.unet):
        for j in range(2):
            block = 3 * level + j + 1
            res_block(
                f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}", channels, width
            )
            channels = width
            if level < 3:
                transformer(f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{j}", width)
            skips.append(channels)
        if level < 3:
            w.conv(
                f"input_blocks.{3 * level + 3}.0.op",
                f"down_blocks.{level}.downsamplers.0.conv",
                width,
                width,
            )
            skips.append(channels)

    last = widths.unet[-1]
    res_block("middle_block.0", "mid_block.resnets.0", last, last)
    transformer("middle_block.1", "mid_block.attentions.0", last)
    res_block("middle_block.2", "mid_block.resnets.1", last, last)

    for level, width in enumerate(reversed(widths.unet)):
        for j in range(3):
            block = 3 * level + j
            n_in = channels + skips.pop()
            res_block(f"output_blocks.{block}.0", f"up_blocks.{level}.resnets.{j}", n_in, width)
            channels = width
            if level > 0:
                transformer(f"output_blocks.{block}.1", f"up_blocks.{level}.attentions.{j}", width)
        if level < 3:
            index = 1 if level == 0 else 2
            w.conv(
                f"output_blocks.{3 * level + 2}.{index}.conv",
                f"up_blocks.{level}.upsamplers.0.conv",
                width,
                width,
            )

    w.norm("out.0", "conv_norm_out", first)
    w.conv("out.2", "conv_out", first, 4)
    return w.params


def decoder_params(widths: Widths = SD1_WIDTHS) -> list[Param]:
    """keras_cv ``Decoder`` (the VAE decoder, with post_quant_conv) weights, in keras order."""
    w = _Walk("first_stage_model.", "vae.")

    def resnet(ldm, diffusers, n_in, n_out):
        w.norm(f"{ldm}.norm1", f"{diffusers}.norm1", n_in)
        w.conv(f"{ldm}.conv1", f"{diffusers}.conv1", n_in, n_out)
        w.norm(f"{ldm}.norm2", f"{diffusers}.norm2", n_out)
        w.conv(f"{ldm}.conv2", f"{diffusers}.conv2", n_out, n_out)
        if n_in != n_out:
            w.conv(f"{ldm}.nin_shortcut", f"{diffusers}.conv_shortcut", n_in, n_out, 1)

    mid = widths.decoder[0]
    w.conv("post_quant_conv", "post_quant_conv", 4, 4, 1)
    w.conv("decoder.conv_in", "decoder.conv_in", 4, mid)
    resnet("decoder.mid.block_1", "decoder.mid_block.resnets.0", mid, mid)
    a_ldm, a_diff = "decoder.mid.attn_1", "decoder.mid_block.attentions.0"
    w.norm(f"{a_ldm}.norm", f"{a_diff}.group_norm", mid)
    for ldm, new, old in (
        ("q", "to_q", "query"),
        ("k", "to_k", "key"),
        ("v", "to_v", "value"),
        ("proj_out", "to_out.0", "proj_attn"),
    ):
        w.conv(f"{a_ldm}.{ldm}", f"{a_diff}.{new}", mid, mid, 1, aliases=(f"{a_diff}.{old}",))
    resnet("decoder.mid.block_2", "decoder.mid_block.resnets.1", mid, mid)

    channels = mid
    for level, width in enumerate(widths.decoder):
        ldm_level = 3 - level
        for j in range(3):
            resnet(
                f"decoder.up.{ldm_level}.block.{j}",
                f"decoder.up_blocks.{level}.resnets.{j}",
                channels,
                width,
            )
            channels = width
        if level < 3:
            w.conv(
                f"decoder.up.{ldm_level}.upsample.conv",
                f"decoder.up_blocks.{level}.upsamplers.0.conv",
                width,
                width,
            )
    w.norm("decoder.norm_out", "decoder.conv_norm_out", channels)
    w.conv("decoder.conv_out", "decoder.conv_out", channels, 3)
    return w.params


#: The keras_cv weights of each network of an SD 1.x checkpoint (``PARAMS_BY_FAMILY``
#: holds those of every family).
PARAMS = {
    "text_encoder": text_encoder_params,
    "diffusion_model": diffusion_model_params,
    "decoder": decoder_params,
}
PARAMS_BY_FAMILY = {
    "sd-v1": PARAMS,
    "sd-v2": {
        "text_encoder": text_encoder_v2_params,
        "diffusion_model": lambda: diffusion_model_params(SD2_WIDTHS, linear_projection=True),
        "decoder": decoder_params,
    },
}


def _to_keras(key: str, value: np.ndarray, param: Param) -> np.ndarray:
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError(f"tensor {key} has dtype {value.dtype}, expected floats")
    if param.ldm_part is not None and key == param.ldm:
        index, count = param.ldm_part
        if value.ndim == 0 or value.shape[0] % count:
            raise CheckpointError(
                f"tensor {key} has shape {value.shape}: cannot split its first axis in {count}"
            )
        size = value.shape[0] // count
        value = value[index * size : (index + 1) * size]
    value = value.astype(np.float32)
    if param.kind == "dense" and value.ndim == 4 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]  # a 1x1 convolution stored where a linear layer is
    if param.kind == "dense" and value.ndim == 2:
        value = value.T
    elif param.kind == "conv":
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2 and param.shape[:2] == (1, 1):
            value = value.T[None, None]
    if value.shape != param.shape:
        raise CheckpointError(
            f"tensor {key} has shape {tuple(np.shape(value))} after conversion to keras "
            f"layout, expected {param.shape}"
        )
    return np.ascontiguousarray(value)


def resolve_keys(
    tensors: dict[str, np.ndarray], layout: str, family: str = "sd-v1", params=None
) -> dict[str, list[tuple[str, Param]]]:
    """For each network of ``family``, the checkpoint key of each keras weight, in keras
    order. ``params`` replaces the family's weight tables (``{network: () -> [Param]}``).

    Raises :class:`CheckpointError` naming the first missing tensor, or the tensors
    that are neither used nor in the ignore lists.
    """
    if layout not in ("ldm", "diffusers"):
        raise ValueError(f"unknown layout {layout!r}")
    if family not in PARAMS_BY_FAMILY:
        raise ValueError(f"unknown family {family!r}")
    used = set()
    result = {}
    for network, make in (params or PARAMS_BY_FAMILY[family]).items():
        keys = []
        for param in make():
            candidates = (param.ldm,) if layout == "ldm" else (param.diffusers, *param.aliases)
            key = next((k for k in candidates if k in tensors), None)
            if key is None:
                raise CheckpointError(
                    f"checkpoint lacks {candidates[0]} (needed for the {network})"
                )
            used.add(key)
            keys.append((key, param))
        result[network] = keys
    left_over = sorted(
        k
        for k in tensors
        if k not in used and k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)
    )
    if left_over:
        shown = ", ".join(left_over[:5])
        if len(left_over) > 5:
            shown += f" and {len(left_over) - 5} more"
        raise CheckpointError(
            f"checkpoint has tensors sdgen does not know what to do with: {shown}"
        )
    return result


def map_weights(
    tensors: dict[str, np.ndarray],
    layout: str,
    family: str = "sd-v1",
    *,
    consume: bool = False,
    params=None,
) -> dict[str, list[np.ndarray]]:
    """The keras_cv weight lists of a detected checkpoint of ``family``, by network.

    Every key is resolved (see :func:`resolve_keys`) before any tensor is converted; a
    tensor whose shape does not fit raises :class:`CheckpointError` naming it. With
    ``consume``, each tensor is removed from ``tensors`` once converted, so that the
    checkpoint and its conversion are not held in memory side by side.
    """
    resolved = resolve_keys(tensors, layout, family, params)
    last_use = {
        key: (network, i) for network, keys in resolved.items() for i, (key, _) in enumerate(keys)
    }
    weights = {}
    for network, keys in resolved.items():
        weights[network] = []
        for i, (key, param) in enumerate(keys):
            weights[network].append(_to_keras(key, tensors[key], param))
            if consume and last_use[key] == (network, i):
                del tensors[key]
    return weights


#: The global step of the SD 2.0 512-base single file; diffusers' converter takes any
#: other SD 2.x single file for a 768-v (v-prediction) model.
SD2_BASE_GLOBAL_STEP = 875000
_PREDICTION_TYPES = ("epsilon", "v_prediction")


def _describe(family: str, meta: dict) -> dict:
    scheduler = meta.get("scheduler") or {}
    unet_config = meta.get("unet_config") or {}
    prediction = scheduler.get("prediction_type")
    if prediction is not None and prediction not in _PREDICTION_TYPES:
        raise UnsupportedCheckpointError(
            f"the checkpoint's scheduler predicts {prediction!r}; sdgen supports "
            + " and ".join(_PREDICTION_TYPES)
        )
    if prediction is None:
        if family == "sd-v2" and meta.get("scheduler") is None:
            # diffusers' heuristic for single files (convert_from_ckpt, single_file_utils)
            base = meta.get("global_step") == SD2_BASE_GLOBAL_STEP
            prediction = "epsilon" if base else "v_prediction"
        else:
            prediction = "epsilon"
    sample_size = unet_config.get("sample_size")
    if isinstance(sample_size, int) and not isinstance(sample_size, bool) and sample_size > 0:
        size = sample_size * 8
    else:
        size = 768 if family == "sd-v2" and prediction == "v_prediction" else 512
    return {"family": family, "prediction_type": prediction, "default_size": size}


def describe(path_or_state) -> dict:
    """What a checkpoint is: ``{"family": "sd-v1" | "sd-v2", "prediction_type":
    "epsilon" | "v_prediction", "default_size": 512 | 768}``.

    ``path_or_state`` is a checkpoint path (file or diffusers folder) or a dictionary of
    tensors as :func:`read_checkpoint` returns (which may also hold a ``global_step``).

    SD 1.x is epsilon-predicting at 512 pixels. An SD 2.x single file does not say
    whether it is the 512 base (epsilon) or the 768-v model: as diffusers' converter does,
    a ``.ckpt`` whose top-level ``global_step`` is 875000 is taken for the 512 base and
    anything else (every ``.safetensors`` file included) for 768-v; pass
    ``prediction_type`` to :func:`convert_checkpoint` to override. A diffusers folder
    says so itself: ``scheduler/scheduler_config.json``'s ``prediction_type`` (epsilon
    when absent) and ``unet/config.json``'s ``sample_size`` times 8.
    """
    if isinstance(path_or_state, dict):
        meta = {"global_step": None, "scheduler": None, "unet_config": None}
        step = path_or_state.get("global_step")
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            meta["global_step"] = int(step)
        tensors = {k: v for k, v in path_or_state.items() if isinstance(v, np.ndarray)}
    else:
        tensors, meta = _shapes_with_metadata(path_or_state)
    family, _layout = detect(tensors)
    return _describe(family, meta)


class ConvertedCheckpoint(collections.abc.Mapping):
    """Converted weights (``weights[network]``: keras_cv weight lists keyed
    ``text_encoder``, ``diffusion_model`` and ``decoder``) and what the checkpoint is.

    It reads as the ``weights`` mapping itself, so code written for the plain dictionary
    :func:`convert_checkpoint` used to return keeps working.
    """

    def __init__(self, weights, family, prediction_type, default_size, layout):
        self.weights = weights
        self.family = family
        self.prediction_type = prediction_type
        self.default_size = default_size
        self.layout = layout

    def __getitem__(self, network):
        return self.weights[network]

    def __iter__(self):
        return iter(self.weights)

    def __len__(self):
        return len(self.weights)

    def describe(self) -> dict:
        """The same dictionary as :func:`describe`."""
        return {
            "family": self.family,
            "prediction_type": self.prediction_type,
            "default_size": self.default_size,
        }

    def __repr__(self):
        return (
            f"ConvertedCheckpoint(family={self.family!r}, prediction_type="
            f"{self.prediction_type!r}, default_size={self.default_size}, layout={self.layout!r})"
        )


def convert_checkpoint(path, *, prediction_type: str | None = None) -> ConvertedCheckpoint:
    """Read, detect, describe and map the checkpoint at ``path``.

    ``prediction_type`` (``"epsilon"`` or ``"v_prediction"``) overrides what
    :func:`describe` guesses; for an SD 2.x single file the default size then follows
    it (768 for v-prediction, 512 for epsilon).
    """
    if prediction_type is not None and prediction_type not in _PREDICTION_TYPES:
        raise UsageError(
            f"prediction type must be one of {', '.join(_PREDICTION_TYPES)}, "
            f"not {prediction_type!r}"
        )
    tensors, meta = _read_with_metadata(path)
    family, layout = detect(tensors)
    info = _describe(family, meta)
    if prediction_type is not None and prediction_type != info["prediction_type"]:
        info["prediction_type"] = prediction_type
        if family == "sd-v2" and not (meta.get("unet_config") or {}).get("sample_size"):
            info["default_size"] = 768 if prediction_type == "v_prediction" else 512
    weights = map_weights(tensors, layout, family, consume=True)
    del tensors
    return ConvertedCheckpoint(
        weights, info["family"], info["prediction_type"], info["default_size"], layout
    )


#: File names of the converted networks, the ``--weights DIR`` layout.
FILENAMES = {
    "text_encoder": "kcv_encoder.h5",
    "diffusion_model": "kcv_diffusion_model.h5",
    "decoder": "kcv_decoder.h5",
}


def _family_of_weights(weights) -> str:
    family = getattr(weights, "family", None)
    if family is not None:
        return family
    try:
        width = np.shape(weights["text_encoder"][0])[1]
    except (KeyError, IndexError, TypeError):
        return "sd-v1"
    return {768: "sd-v1", 1024: "sd-v2"}.get(width, "sd-v1")


def save_converted(converted, folder) -> Path:
    """Write converted weights (a :class:`ConvertedCheckpoint`, or the plain dictionary
    of weight lists) as keras_cv's h5 files into ``folder``, atomically: the files are
    written in a sibling temporary folder that is then renamed into place.

    The networks built are those of the checkpoint's family (V2 ones for SD 2.x; a plain
    dictionary's family is read off its token embedding's width). The family, prediction
    type and default size are not written: record them from the ``ConvertedCheckpoint``.
    """
    import types

    from .families import family_of
    from .networks.h5 import save_legacy_weights

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise CheckpointError(f"{folder} already exists and is not empty")
    folder.parent.mkdir(parents=True, exist_ok=True)
    family = _family_of_weights(converted)
    spec = types.SimpleNamespace(name=f"converted {family}", family=family, seed=0)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for role, filename in FILENAMES.items():
            model = family_of(spec).build(role, spec, 64, 64)
            try:
                model.set_weights(converted[role])
            except ValueError as error:
                raise CheckpointError(f"converted {role} weights do not fit: {error}") from error
            save_legacy_weights(model, staging / filename)
            del model
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder

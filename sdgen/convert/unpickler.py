"""Read a ``.ckpt`` (``torch.save``'s zip of a pickle plus raw storages) without torch.

A restricted unpickler rebuilds the tensors as NumPy arrays and refuses any other
callable the pickle asks for, so the file's code never runs.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import CheckpointError, NotACheckpointError

#: The NumPy dtype of each torch storage class a pickle may name.
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
    OPAQUE: ClassVar[set[tuple[str, str]]] = {
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


def read_torch_zip(path: Path) -> dict:
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

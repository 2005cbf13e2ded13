"""Textual-inversion embeddings: read their files, keep a folder of them, find their names.

An embedding is a few learned vectors in the text encoder's token-embedding space; a
prompt that names one gets those vectors in place of the name's tokens, one token slot per
vector. The files people share come in three layouts, all read here without torch and
without running any code from the file:

- AUTOMATIC1111's ``.pt``: a ``torch.save`` zip whose pickle is a dict with
  ``string_to_param: {"*": tensor[n, width]}`` beside ``string_to_token``, ``name``,
  ``step``, ``sd_checkpoint`` and ``sd_checkpoint_name``; read with the restricted
  unpickler of :mod:`sdgen.convert.unpickler`, which refuses any callable a state dict
  does not need;
- ``.safetensors`` with ``emb_params [n, width]``, or SDXL's ``clip_l [n, 768]`` and
  ``clip_g [n, 1280]``;
- diffusers' ``learned_embeds.bin`` / ``.safetensors``: ``{token: tensor[width] or [n, width]}``
  (also the shape of older ``.pt`` files holding ``emb_params`` alone).

A prompt names an embedding by its file's stem, as A1111 does (a whole word, any case), or
as ``embedding:NAME``, as ComfyUI does. :class:`EmbeddingLibrary` holds a folder of them
(subfolders too, as A1111 scans them) and finds those names in prompt text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..paths import data_dir
from .folders import adapter_files

#: The file name endings of embedding files, as A1111 and ComfyUI look for them.
SUFFIXES = (".pt", ".bin", ".safetensors")
#: Embeddings are kilobytes (75 SDXL vectors are 0.6 MB); a bigger file is a checkpoint
#: or a LoRA put in the wrong folder, and is not read whole just to be refused.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Known text-encoder widths, for the hint in a width mismatch.
_FAMILY_BY_WIDTH = {768: "SD 1.x", 1024: "SD 2.x"}
#: What ends a name: the characters of a word on either side make it part of that word.
_WORD = r"[\w-]"
#: What an ``embedding:`` name may hold when it names no file (for the error message).
_TAGGED_WORD = r"[^\s,()\[\]{}<>|:\\]+"


class EmbeddingError(UsageError):
    """An embedding file cannot be used: unreadable, unsafe, not an embedding, of the
    wrong width, or a prompt names one that is not there."""


@dataclass(frozen=True, eq=False)
class Embedding:
    """One textual-inversion embedding, read.

    ``name`` is the file's stem, as prompts use it; ``vectors`` is ``(n, width)`` float32
    (read-only), one row per token slot; ``sha256`` is the hex digest of the file's bytes.
    """

    name: str
    path: Path
    vectors: np.ndarray
    sha256: str

    @property
    def width(self) -> int:
        """The width of each vector: the text encoder's token-embedding width."""
        return int(self.vectors.shape[1])

    @property
    def shorthash(self) -> str:
        """What A1111 writes in its infotext (``TI hashes: "name: SHORTHASH"``): the first
        12 hex digits of the file's sha256 (``Embedding.set_hash`` in A1111's
        ``modules/textual_inversion/textual_inversion.py``)."""
        return self.sha256[:12]


def read_embedding(path: Path, width: int | None = None) -> Embedding:
    """Read the embedding file at ``path``.

    ``width``: the text encoder's token-embedding width (768 for SD 1.x, 1024 for SD 2.x);
    when given, vectors of another width are refused, and of an SDXL file's ``clip_l`` and
    ``clip_g`` the one of that width is taken. Without it an SDXL file gives ``clip_l``.
    float16 and bfloat16 vectors come back as float32; a single vector as ``(1, width)``.

    Raises :class:`EmbeddingError`, naming the file and the reason, for a file that cannot
    be read, is not an embedding, has the wrong width, or whose pickle asks for code.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise EmbeddingError(
                f"embedding {path} is {size / 2**20:.0f} MiB, too large for a "
                "textual-inversion embedding (a checkpoint or LoRA in the embeddings folder?)"
            )
        data = path.read_bytes()
    except OSError as error:
        raise EmbeddingError(
            f"could not read embedding {path}: {error.strerror or error}"
        ) from error
    if not data:
        raise EmbeddingError(f"embedding {path} is an empty file")
    contents = _read_contents(path, data)
    vectors = _vectors(contents, path, width)
    return Embedding(
        name=path.stem, path=path, vectors=vectors, sha256=hashlib.sha256(data).hexdigest()
    )


def _read_contents(path: Path, data: bytes) -> dict:
    """The file's top-level dictionary: a torch zip (known by its magic number, whatever
    the suffix) through the restricted unpickler, else a safetensors file."""
    from ..convert.errors import CheckpointError
    from ..convert.readers import _read_safetensors
    from ..convert.unpickler import read_torch_zip

    is_zip = data[:4] == b"PK\x03\x04"
    header = int.from_bytes(data[:8], "little")
    looks_safetensors = len(data) > 8 and header <= len(data) - 8 and data[8:9] == b"{"
    if not (is_zip or looks_safetensors or path.suffix.lower() == ".safetensors"):
        reason = "neither a torch.save zip archive nor a safetensors file"
        if data[:2] == b"\x80\x02":  # a bare pickle: torch's pre-1.6 legacy format
            reason += " (it may be PyTorch's legacy format; re-save it as .safetensors)"
        raise EmbeddingError(f"could not read embedding {path}: {reason}")
    try:
        contents = read_torch_zip(path) if is_zip else _read_safetensors(path)
    except CheckpointError as error:
        raise EmbeddingError(_naming(path, str(error))) from error
    if not isinstance(contents, dict):
        raise EmbeddingError(f"embedding {path} does not hold a dictionary of tensors")
    return contents


def _naming(path: Path, message: str) -> str:
    """A reader's message as an embedding's (the readers name the file already)."""
    if str(path) in message:
        return f"embedding {path.stem}: {message}"
    return f"embedding {path}: {message}"


def _vectors(contents: dict, path: Path, width: int | None) -> np.ndarray:
    """The ``(n, width)`` float32 vectors of a file's dictionary, whichever layout it has."""
    if "string_to_param" in contents:  # A1111 (and the original textual-inversion code)
        params = contents["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise EmbeddingError(f"embedding {path} has an empty or malformed string_to_param")
        if len(params) != 1:
            raise EmbeddingError(
                f"embedding {path} holds {len(params)} terms; an embedding file holds one"
            )
        found = next(iter(params.values()))
    elif "clip_l" in contents or "clip_g" in contents:  # SDXL: one per text encoder
        found = _sdxl_half(contents, path, width)
    elif "emb_params" in contents:
        found = contents["emb_params"]
    else:  # diffusers' learned_embeds: {placeholder token: vectors}
        arrays = [key for key, value in contents.items() if isinstance(value, np.ndarray)]
        if not arrays:
            raise EmbeddingError(
                f"{path} is not a textual-inversion embedding: it has no string_to_param, "
                "emb_params, clip_l/clip_g or token tensor"
            )
        if len(arrays) != 1:
            shown = ", ".join(str(key) for key in arrays[:3]) + (", ..." if len(arrays) > 3 else "")
            raise EmbeddingError(
                f"{path} is not a textual-inversion embedding: it holds {len(arrays)} "
                f"tensors ({shown}), where an embedding holds one"
            )
        found = contents[arrays[0]]
    vectors = _as_vectors(found, path)
    if width is not None and vectors.shape[1] != width:
        raise EmbeddingError(_width_message(path, vectors.shape[1], width))
    return vectors


def _sdxl_half(contents: dict, path: Path, width: int | None) -> object:
    halves = {key: contents[key] for key in ("clip_l", "clip_g") if key in contents}
    widths = {
        key: value.shape[-1]
        for key, value in halves.items()
        if isinstance(value, np.ndarray) and value.ndim
    }
    if width is None:
        return next(iter(halves.values()))
    for key, found in widths.items():
        if found == width:
            return halves[key]
    shown = ", ".join(
        f"{key} {widths[key]} wide" if key in widths else f"{key} malformed" for key in halves
    )
    raise EmbeddingError(
        f"embedding {path} is an SDXL embedding ({shown}), but this model's text encoder is "
        f"{width} wide"
    )


def _as_vectors(found: object, path: Path) -> np.ndarray:
    if not isinstance(found, np.ndarray):
        raise EmbeddingError(f"embedding {path} holds {type(found).__name__}, not a tensor")
    if found.ndim == 1:
        found = found[None, :]
    if found.ndim != 2 or found.shape[0] < 1 or found.shape[1] < 1:
        raise EmbeddingError(
            f"embedding {path} has a tensor of shape {tuple(found.shape)}, not (vectors, width)"
        )
    if found.dtype.name == "bfloat16":
        # what safetensors gives once ml_dtypes is imported (TensorFlow imports it);
        # without it the reader itself widens bfloat16 to float32
        found = found.astype(np.float32)
    if not np.issubdtype(found.dtype, np.floating):
        raise EmbeddingError(f"embedding {path} holds {found.dtype} values, not floating point")
    vectors = np.array(found, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise EmbeddingError(f"embedding {path} holds NaN or infinite values")
    vectors.setflags(write=False)  # cached and shared between prompts
    return vectors


def _width_message(path: Path, found: int, expected: int) -> str:
    message = (
        f"embedding {path} has vectors {found} wide, but this model's text encoder is "
        f"{expected} wide"
    )
    if found in _FAMILY_BY_WIDTH and expected in _FAMILY_BY_WIDTH:
        message += (
            f" (an {_FAMILY_BY_WIDTH[found]} embedding on an {_FAMILY_BY_WIDTH[expected]} model?)"
        )
    return message


def default_embeddings_dir() -> Path:
    """``$SDGEN_HOME/embeddings``, else ``$XDG_DATA_HOME/sdgen/embeddings``, else
    ``~/.local/share/sdgen/embeddings`` (beside the model store's ``models``)."""
    return data_dir("embeddings")


@dataclass(frozen=True)
class EmbeddingMatch:
    """A name found in prompt text: ``text[start:end]`` (an ``embedding:`` prefix and a file
    extension included) stands for the library's embedding ``name``."""

    start: int
    end: int
    name: str


class EmbeddingLibrary:
    """The embeddings of one folder, by name.

    ``folder`` (default :func:`default_embeddings_dir`) is scanned once, on first use, with
    its subfolders; a missing folder is an empty library. Names are file stems; hidden
    files and folders (``.name``) and empty files are skipped, as the latter are by A1111.
    Files are read only by :meth:`load` and :meth:`describe`.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else default_embeddings_dir()
        self._loaded: dict[tuple[str, int | None], Embedding] = {}

    @cached_property
    def _paths(self) -> dict[str, Path]:
        """Each name (by its lowercase) -> its file; on a clash the first in sorted order of
        the paths below the folder wins."""
        files = adapter_files(self.folder, SUFFIXES, skip_empty=True)
        files.sort(key=lambda file: file.relative_to(self.folder).parts)
        paths: dict[str, Path] = {}
        for file in files:
            paths.setdefault(file.stem.lower(), file)
        return paths

    def names(self) -> list[str]:
        """The embeddings' names (file stems), sorted case-insensitively."""
        return sorted((path.stem for path in self._paths.values()), key=lambda n: (n.lower(), n))

    def path(self, name: str) -> Path | None:
        """The file of embedding ``name`` (any case), or None."""
        return self._paths.get(name.lower())

    @cached_property
    def _pattern(self) -> re.Pattern:
        """One regex for every name: ``embedding:NAME[.ext]`` (ComfyUI), then an
        ``embedding:`` word that names nothing (an error), then a bare name as a whole word
        (A1111); longest names first, so the longest name at a position wins."""
        tagged = rf"(?<!{_WORD})embedding:"
        names = sorted(self.names(), key=lambda name: (-len(name), name))
        if not names:
            return re.compile(rf"{tagged}(?P<unknown>{_TAGGED_WORD})", re.IGNORECASE)
        alternatives = "|".join(re.escape(name) for name in names)
        extension = "|".join(re.escape(suffix[1:]) for suffix in SUFFIXES)
        return re.compile(
            rf"{tagged}(?:(?P<tagged>{alternatives})(?:\.(?:{extension}))?"
            rf"(?!{_WORD}|\.{_WORD})|(?P<unknown>{_TAGGED_WORD}))"
            rf"|(?<!{_WORD})(?P<bare>{alternatives})(?!{_WORD})",
            re.IGNORECASE,
        )

    def find(self, text: str) -> list[EmbeddingMatch]:
        """The embedding names in ``text``, left to right, not overlapping.

        Two forms: ComfyUI's ``embedding:NAME`` (NAME may carry its file extension), and
        A1111's bare NAME as a whole word, in any case (the characters either side are not
        letters, digits, ``_`` or ``-``). Raises :class:`EmbeddingError` for an
        ``embedding:`` name that is not in the library.
        """
        if not self._paths and "embedding:" not in text.lower():
            return []
        matches = []
        for match in self._pattern.finditer(text):
            if match.group("unknown") is not None:
                raise EmbeddingError(self._unknown(match.group("unknown").rstrip(".;!?")))
            found = match.group("tagged") or match.group("bare")
            matches.append(EmbeddingMatch(match.start(), match.end(), self._canonical(found)))
        return matches

    def _canonical(self, found: str) -> str:
        """The library's spelling of a name matched in any case."""
        if found.lower() in self._paths:
            return self._paths[found.lower()].stem
        return next((n for n in self.names() if n.casefold() == found.casefold()), found)

    def _unknown(self, name: str) -> str:
        message = f"no embedding named {name!r} in {self.folder}; "
        names = self.names()
        if not names:
            missing = "" if self.folder.is_dir() else " (it does not exist)"
            return message + f"the folder has none{missing}"
        shown = ", ".join(names[:20])
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        return message + f"found: {shown}{more}"

    def load(self, name: str, width: int | None = None) -> Embedding:
        """Embedding ``name`` (any case), read once per ``(name, width)`` and kept.

        Raises :class:`EmbeddingError` for a name not in the library or a file that
        :func:`read_embedding` refuses.
        """
        path = self.path(name)
        if path is None:
            raise EmbeddingError(self._unknown(name))
        key = (path.stem, width)
        if key not in self._loaded:
            self._loaded[key] = read_embedding(path, width)
        return self._loaded[key]

    def describe(self) -> list[dict]:
        """For ``sdgen models``: per name, ``name``, ``path``, ``vectors`` (n), ``width``,
        ``sha256`` and ``error``; a file that cannot be used has its message in ``error`` and
        None in the other fields. Reads every file; never raises for one of them."""
        rows = []
        for name in self.names():
            path = self.path(name)
            row = {"name": name, "path": str(path), "vectors": None, "width": None}
            row.update(sha256=None, error=None)
            try:
                embedding = self.load(name)
            except EmbeddingError as error:
                row["error"] = str(error)
            else:
                row.update(
                    vectors=int(embedding.vectors.shape[0]),
                    width=embedding.width,
                    sha256=embedding.sha256,
                )
            rows.append(row)
        return rows

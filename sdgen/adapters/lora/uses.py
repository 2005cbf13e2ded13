"""The LoRAs of a job, found and read when the job is checked, before any model loads.

A job's LoRAs are its config's ``loras`` (``--lora``, a prompts file's ``loras`` key,
Python) and the ``<lora:...>`` tags of its positive prompt (see
:mod:`sdgen.text.lora_tags`), each name once with its weights added. Each is looked up
in the LoRA folder (or taken as a path) and read, so a missing file, a file that is not
a LoRA, one for another family or one with NaN fails the command (or its prompts-file
line) at once. What was found, ``LoraUse``, goes into the job for its records and its
resume identity: the file's sha256 and the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...text.lora_tags import LoraRequest, combined, lora_tags

#: Families whose LoRAs are told apart by their text encoder's width; another family
#: (the tiny test model) is checked only by the shapes when the deltas are made.
_KNOWN_FAMILIES = ("sd-v1", "sd-v2")


@dataclass(frozen=True)
class LoraUse:
    """One LoRA a job merges: its name as asked, its file and sha256, and the
    text-encoder and U-Net multipliers."""

    name: str
    file: str
    sha256: str
    te: float
    unet: float
    #: the hash A1111 writes in ``Lora hashes`` (see ``a1111_hash``)
    a1111_hash: str = ""

    @property
    def shorthash(self) -> str:
        """What A1111's ``Lora hashes`` names it by: 12 hex digits of ``a1111_hash``."""
        return (self.a1111_hash or self.sha256)[:12]

    def identity(self) -> dict:
        """What makes an image made with it the same work: name, sha256, weights."""
        return {"name": self.name, "sha256": self.sha256, "te": self.te, "unet": self.unet}

    def record(self) -> dict:
        """The manifest's record of it: its identity, its file and A1111's hash."""
        return {**self.identity(), "file": self.file, "a1111_hash": self.a1111_hash}


def requested(config) -> tuple[LoraRequest, ...]:
    """The LoRAs ``config`` asks for: its ``loras``, then its prompt's tags, each name
    once, weights added."""
    return combined((*config.loras, *lora_tags(config.prompt)))


def negative_tags(config) -> list[str]:
    """The names of the LoRA tags of ``config``'s negative prompt, which are ignored, as
    A1111 ignores them."""
    return [request.name for request in lora_tags(config.negative_prompt)]


def negative_warnings(jobs) -> list[str]:
    """One warning per negative prompt of ``jobs`` with LoRA tags, naming them."""
    warnings = {}
    for job in jobs:
        names = negative_tags(job.config)
        if names and job.config.negative_prompt not in warnings:
            where = f"line {job.line_number}: " if job.line_number is not None else ""
            warnings[job.config.negative_prompt] = (
                f"warning: {where}LoRA tags in the negative prompt are ignored, as in A1111: "
                + ", ".join(names)
            )
    return list(warnings.values())


def library(folder: Path | None):
    """The ``sdgen.adapters.lora.LoraLibrary`` of ``folder`` [``$SDGEN_HOME/loras``]."""
    from .library import LoraLibrary

    return LoraLibrary(folder)


class LoraFinder:
    """Finds and reads the LoRAs of jobs in one folder (``None``: the default,
    ``$SDGEN_HOME/loras``); the library is made on first use, so a run without LoRAs
    never imports it, and it reads each file once per modification."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._library = None
        self._fits: set[tuple[str, str]] = set()  # (sha256, family) checked
        self._a1111_hashes: dict[str, str] = {}  # by sha256: each file hashed once

    def load(self, name: str):
        """The ``LoraFile`` of ``name`` (a name in the folder, or a path); ``LoraError``
        when it is not found or cannot be used."""
        if self._library is None:
            self._library = library(self.folder)
        return self._library.load(name)

    def uses(self, config, family) -> tuple[LoraUse, ...]:
        """The ``LoraUse`` of each LoRA ``config`` asks for, checked against the model's
        ``family`` (a ``sdgen.families.Family``)."""
        uses = []
        for request in requested(config):
            lora = self.load(request.name)
            self.check_fits(lora, family)
            file = str(lora.path)
            uses.append(
                LoraUse(request.name, file, lora.sha256, request.te, request.unet, a1111_hash(file))
            )
        return tuple(uses)

    def check_fits(self, lora, family) -> None:
        """Refuse ``lora`` for ``family``'s model now, not when its image is made: by the
        family its file says (``check_family``), or, when it says none, by making its
        deltas (every module must name a weight of the model, of its shape)."""
        check_family(lora, family)
        if lora.family is not None or (lora.sha256, family.name) in self._fits:
            return
        from .deltas import lora_deltas

        lora_deltas([(lora, 1.0, 1.0)], family.name, family.widths)
        self._fits.add((lora.sha256, family.name))


def a1111_hash(path) -> str:
    """The sha256 A1111 names a LoRA by in ``Lora hashes``: for a ``.safetensors``
    file, that of the bytes after its header (the "addnet" hash of kohya's
    sd-webui-additional-networks, which A1111 uses for LoRAs), so editing the metadata
    keeps the hash; for other files, the whole file's."""
    import hashlib

    from ...convert.readers import safetensors_header_length

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if str(path).lower().endswith(".safetensors"):
            handle.seek(8 + safetensors_header_length(handle))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_loras(hashes: dict, folder: Path | None, config) -> list[str]:
    """For ``sdgen again``: a note for each LoRA of an infotext's ``Lora hashes``
    (``{name: shorthash}``) that the LoRA folder lacks, or holds as another file (its
    A1111 hash does not start so). A LoRA that ``config`` (the image's settings) asks
    for that is not there under its name but is under another (found by its hash)
    raises ``LoraError`` naming that file, rather than failing later with "not found"."""
    if not hashes:
        return []
    from .errors import LoraError

    found = library(folder)
    asked = {request.name for request in requested(config)}
    notes = []
    by_hash = None
    for name, digest in hashes.items():
        digest = digest.lower()
        try:
            path = found.resolve(name)
        except LoraError:
            path = None
        if path is not None:
            if digest and not a1111_hash(path).startswith(digest):
                notes.append(f"Lora hashes ({name}: {Path(path).name} is another file)")
            continue
        if by_hash is None:
            by_hash = _hashes_of(found)
        match = next((p for h, p in by_hash.items() if digest and h.startswith(digest)), None)
        if match is not None and name in asked:
            raise LoraError(
                f"the prompt asks for LoRA {name} (hash {digest}); {match} has that hash: "
                f"rename it to {name}{Path(match).suffix}, or edit the tag"
            )
        where = f"{match} has its hash" if match else f"not in {found.folder}"
        notes.append(f"Lora hashes ({name}: {where})")
    return notes


def _hashes_of(found) -> dict[str, Path]:
    """``{a1111 hash: path}`` of every LoRA in a ``LoraLibrary``."""
    hashes = {}
    for name in found.names():
        try:
            path = found.resolve(name)
        except Exception:  # a file that vanished or cannot be read is no match
            continue
        hashes[a1111_hash(path)] = Path(path)
    return hashes


def check_family(lora, family) -> None:
    """Refuse ``lora`` (a ``LoraFile``) when its file says it is for another family
    than the model's (or than the one the model's is a variant of: an SD 1.x LoRA fits
    ``sd-v1-inpainting``)."""
    from .errors import LoraError

    found = getattr(lora, "family", None)
    # an inpainting variant takes its base family's LoRAs (as A1111 applies them)
    base = family.base_name
    if base in _KNOWN_FAMILIES and found in _KNOWN_FAMILIES and found != base:
        raise LoraError(f"LoRA {lora.path} is for {found} models, not for this {family.name} model")


__all__ = [
    "LoraFinder",
    "LoraUse",
    "a1111_hash",
    "check_family",
    "missing_loras",
    "negative_tags",
    "negative_warnings",
    "requested",
]

"""Read a LoRA file into :class:`LoraFile`: its modules, what it is and what it is for.

Files are read without running code from them: ``.safetensors`` with :mod:`safetensors`,
``.pt``/``.ckpt``/``.bin`` only with sdgen's restricted unpickler
(:mod:`sdgen.convert.unpickler`). Every tensor must belong to a module sdgen knows
(:mod:`.keys`); anything else is refused with the file's name and the first keys that
matched nothing, as checkpoint conversion refuses left-over tensors.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LoraError
from .keys import DORA_PARTS, SDXL_KOHYA_PREFIXES, Part, Target, dotted_part, kohya_part

#: The file endings read, in order of preference when a name has several.
SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
#: Which parts make each algorithm's module, required and optional (``alpha`` aside).
_ALGORITHMS = {
    "lora": ({"down", "up"}, {"mid"}),
    "loha": ({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}, {"hada_t1", "hada_t2"}),
    "lokr": (
        set(),
        {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"},
    ),
}
#: Text-encoder widths, and the family each belongs to.
_FAMILY_BY_WIDTH = {768: "sd-v1", 1024: "sd-v2"}


@dataclass(frozen=True, eq=False)
class LoraModule:
    """The change one file makes to one weight.

    ``name``: the module as the file names it (kohya's ``lora_unet_…`` or a dotted
    diffusers path); ``target``: the weight it changes; ``algorithm``: ``"lora"``
    (incl. LoCon and PEFT), ``"loha"`` or ``"lokr"``; ``tensors``: its parts by role
    (``down``, ``up``, ``mid``, ``hada_w1_a``, ...), float32, in torch's layout;
    ``alpha``: the file's alpha (None: none given); ``rslora``: PEFT's rank-stabilised
    scale ``alpha/sqrt(r)``; ``dotted``: named the diffusers/PEFT way.
    """

    name: str
    target: Target
    algorithm: str
    tensors: dict[str, np.ndarray]
    alpha: float | None = None
    rslora: bool = False
    dotted: bool = False

    @property
    def rank(self) -> int | None:
        """The rank: LoRA's ``down`` rows, LoHa's ``w1_b`` rows, LoKr's factorisation
        rank (None when LoKr's factors are full matrices)."""
        t = self.tensors
        if self.algorithm == "lora":
            return int(t["down"].shape[0])
        if self.algorithm == "loha":
            return int(t["hada_w1_b"].shape[0])
        rank = None
        for part in ("lokr_w1_b", "lokr_w2_b"):  # as A1111's network_lokr: w2's wins
            if part in t:
                rank = int(t[part].shape[0])
        return rank

    @property
    def kind(self) -> str:
        """The module's format: ``lora``, ``locon`` (a convolution kernel wider than 1x1,
        or a CP ``mid``), ``peft``, ``loha`` or ``lokr``."""
        if self.algorithm != "lora":
            return self.algorithm
        if self.dotted:
            return "peft"
        down = self.tensors["down"]
        wide = down.ndim == 4 and down.shape[2:] != (1, 1)
        return "locon" if "mid" in self.tensors or wide else "lora"


@dataclass(frozen=True, eq=False)
class LoraFile:
    """One LoRA file, read and checked.

    ``name``: the file's stem (what ``<lora:NAME:…>`` names); ``sha256``: hex digest of
    the file's bytes; ``format``: ``"lora"``, ``"locon"``, ``"loha"``, ``"lokr"``,
    ``"peft"`` or ``"mixed"``; ``family``: ``"sd-v1"``, ``"sd-v2"`` or None (neither the
    metadata nor the shapes say); ``rank``: ``ss_network_dim``, else the commonest
    module rank; ``metadata``: the safetensors ``__metadata__``; ``modules``: the
    changes, one per weight.
    """

    name: str
    path: Path
    sha256: str
    format: str
    family: str | None
    rank: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    modules: tuple[LoraModule, ...] = ()

    @property
    def shorthash(self) -> str:
        """A1111's short hash of a network (``Lora hashes: "name: SHORTHASH"``): the first
        12 hex digits of the file's sha256."""
        return self.sha256[:12]


def read_lora(path) -> LoraFile:
    """Read and check the LoRA file at ``path`` (see the module docstring).

    Raises :class:`LoraError`, naming the file, for a missing or unreadable file, an
    unsafe pickle, NaN or infinite values, an SDXL (or other family's) LoRA, DoRA, a
    file that is no LoRA, keys that match no module, and incomplete modules.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"LoRA {path} does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise LoraError(f"LoRA {path} is not a {', '.join(SUFFIXES)} file")
    tensors, metadata = _read_tensors(path)
    _refuse_other_families(path, tensors, metadata)
    modules = _modules(path, tensors, metadata)
    kinds = {module.kind for module in modules}
    if kinds <= {"lora", "locon"}:
        file_format = "locon" if "locon" in kinds else "lora"
    else:
        file_format = kinds.pop() if len(kinds) == 1 else "mixed"
    return LoraFile(
        name=path.stem,
        path=path,
        sha256=_sha256(path),
        format=file_format,
        family=_family(path, modules, metadata),
        rank=_rank(modules, metadata),
        metadata=metadata,
        modules=tuple(modules),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's tensors (float ones as float32) and its safetensors metadata."""
    from ...convert.errors import CheckpointError
    from ...convert.readers import _read_safetensors
    from ...convert.unpickler import read_torch_zip

    metadata: dict[str, str] = {}
    try:
        if path.suffix.lower() == ".safetensors":
            metadata, keys = _safetensors_header(path)
            _refuse_other_families(path, dict.fromkeys(keys), metadata)
            if keys and not any(_names_a_module(key) for key in keys):
                # a checkpoint in the LoRA folder: refused from its header, not read whole
                shown = ", ".join(sorted(keys)[:3])
                raise LoraError(
                    f"{path} is not a LoRA for SD 1.x/2.x: no key names a LoRA module ({shown}"
                    f"{' and more' if len(keys) > 3 else ''})"
                )
            loaded = _read_safetensors(path)
        else:
            loaded = read_torch_zip(path)
    except CheckpointError as error:
        message = str(error)
        raise LoraError(message if str(path) in message else f"LoRA {path}: {message}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise LoraError(f"LoRA {path} does not hold a dictionary of tensors")
    tensors = {}
    for key, value in loaded.items():
        if not isinstance(value, np.ndarray):
            continue
        if value.dtype.name == "bfloat16" or np.issubdtype(value.dtype, np.floating):
            value = np.asarray(value, dtype=np.float32)
            if not np.isfinite(value).all():
                raise LoraError(f"LoRA {path} holds NaN or infinite values (in {key})")
        tensors[str(key)] = value
    if not tensors:
        raise LoraError(f"{path} is not a LoRA: it holds no tensors")
    return tensors, metadata


def _names_a_module(key: str) -> bool:
    if key.startswith(("lora_unet_", "lora_te_")):
        return kohya_part(key) is not None
    return dotted_part(key) is not None


def _safetensors_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """A safetensors file's ``__metadata__`` and tensor names, from its header alone
    (``CheckpointError`` when it has none)."""
    from ...convert.readers import safetensors_header

    header, _ = safetensors_header(path)
    found = header.get("__metadata__")
    metadata = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return metadata, [str(key) for key in header if key != "__metadata__"]


def _refuse_other_families(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    base = metadata.get("ss_base_model_version", "").lower()
    sdxl = [
        k for k in tensors if k.startswith(SDXL_KOHYA_PREFIXES) or ".text_encoder_2." in f".{k}"
    ]
    if base.startswith("sdxl") or sdxl:
        raise LoraError(f"LoRA {path} is an SDXL LoRA; sdgen runs SD 1.x and 2.x models")
    if base and not base.startswith(("sd_v1", "sd_v2")):
        raise LoraError(
            f"LoRA {path} is for another model family (ss_base_model_version {base}); "
            "sdgen runs SD 1.x and 2.x models"
        )
    dora = [k for k in tensors if k.rsplit(".", 1)[-1] in DORA_PARTS]
    if dora:
        raise LoraError(
            f"LoRA {path} is a DoRA ({dora[0]}): weight-decomposed LoRAs are not supported"
        )


def _modules(path: Path, tensors: dict, metadata: dict[str, str]) -> list[LoraModule]:
    """Group the keys into modules; refuse keys that match none and incomplete modules."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    targets: dict[str, tuple[Target, bool]] = {}
    unmatched = []
    for key, value in tensors.items():
        part: Part | None
        dotted = not key.startswith(("lora_unet_", "lora_te_"))
        part = dotted_part(key) if dotted else kohya_part(key)
        if part is None:
            unmatched.append(key)
            continue
        if part.part in parts.setdefault(part.module, {}):
            raise LoraError(f"LoRA {path} holds {part.part} of {part.module} twice")
        parts[part.module][part.part] = value
        targets[part.module] = (part.target, dotted)
    if unmatched:
        shown = ", ".join(sorted(unmatched)[:3])
        more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
        if not parts:
            raise LoraError(
                f"{path} is not a LoRA for SD 1.x/2.x: no key names a LoRA module ({shown}{more})"
            )
        raise LoraError(f"LoRA {path} has keys that match no SD 1.x/2.x module: {shown}{more}")
    peft = _peft_config(metadata)
    return [
        _module(path, name, targets[name][0], found, targets[name][1], peft)
        for name, found in parts.items()
    ]


def _module(path, name, target, found, dotted, peft) -> LoraModule:
    alpha_tensor = found.pop("alpha", None)
    algorithm = "lora"
    if any(p.startswith("hada_") for p in found):
        algorithm = "loha"
    elif any(p.startswith("lokr_") for p in found):
        algorithm = "lokr"
    required, optional = _ALGORITHMS[algorithm]
    extra = sorted(set(found) - required - optional)
    missing = sorted(required - set(found))
    if extra or missing:
        what = f"lacks {', '.join(missing)}" if missing else f"mixes {', '.join(extra)} in"
        raise LoraError(f"LoRA {path}: module {name} {what} its {algorithm} parts")
    _check_shapes(path, name, algorithm, found)
    alpha = None
    if alpha_tensor is not None:
        if np.size(alpha_tensor) != 1:
            raise LoraError(f"LoRA {path}: alpha of {name} is not a single number")
        alpha = float(np.asarray(alpha_tensor).reshape(()))
    rslora = False
    if dotted and alpha is None and peft:
        component = "unet" if target.role == "diffusion_model" else "text_encoder"
        config = peft.get(component, {})
        alpha = _pattern_alpha(name, config)
        rslora = bool(config.get("use_rslora"))
    return LoraModule(name, target, algorithm, found, alpha, rslora, dotted)


def _check_shapes(path, name, algorithm, t) -> None:
    def bad(what):
        raise LoraError(f"LoRA {path}: module {name} has {what}")

    if algorithm == "lora":
        down, up = t["down"], t["up"]
        if down.ndim not in (2, 4) or up.ndim != down.ndim:
            bad(f"lora_down {down.shape} and lora_up {up.shape} of different kinds")
        inner = t["mid"].shape[0] if "mid" in t else down.shape[0]
        if up.shape[1] != inner or (up.ndim == 4 and up.shape[2:] != (1, 1)):
            bad(f"lora_up {up.shape} that does not fit lora_down {down.shape}")
        if "mid" in t and (t["mid"].ndim != 4 or t["mid"].shape[1] != down.shape[0]):
            bad(f"lora_mid {t['mid'].shape} that does not fit lora_down {down.shape}")
    elif algorithm == "loha" and ("hada_t1" in t) != ("hada_t2" in t):
        bad("only one of hada_t1 and hada_t2")
    elif algorithm == "lokr":
        for n in ("1", "2"):
            whole, halves = f"lokr_w{n}" in t, (f"lokr_w{n}_a" in t, f"lokr_w{n}_b" in t)
            if whole == any(halves) or (any(halves) and not all(halves)):
                bad(f"not exactly one of lokr_w{n} and lokr_w{n}_a/_b")
        if "lokr_t2" in t and "lokr_w2_a" not in t:
            bad("lokr_t2 without lokr_w2_a/_b")


def _peft_config(metadata: dict[str, str]) -> dict[str, dict]:
    """diffusers' ``lora_adapter_metadata`` (each PEFT config, keys prefixed ``unet.`` or
    ``text_encoder.``), by component; {} when absent or unreadable."""
    try:
        flat = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except ValueError:
        return {}
    configs: dict[str, dict] = {}
    if isinstance(flat, dict):
        for key, value in flat.items():
            component, dot, name = str(key).partition(".")
            if dot:
                configs.setdefault(component, {})[name] = value
    return configs


def _pattern_alpha(name: str, config: dict) -> float | None:
    """PEFT's alpha of module ``name``: an ``alpha_pattern`` entry whose key ends the
    module's path, else ``lora_alpha``; None when the config gives neither."""
    path = name.split(".", 1)[1] if name.startswith(("unet.", "text_encoder.")) else name
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if path == pattern or path.endswith("." + pattern):
            return float(alpha)
    alpha = config.get("lora_alpha")
    return None if alpha is None else float(alpha)


def _family(path: Path, modules: list[LoraModule], metadata: dict[str, str]) -> str | None:
    """What the shapes say (the cross-attention's context width, the text encoder's width
    or its layers beyond SD 1.x's 12), else what kohya's metadata says."""
    votes = set()
    for module in modules:
        if module.algorithm == "lokr":
            continue
        wide = module.tensors["down" if module.algorithm == "lora" else "hada_w1_b"].shape[1]
        key = module.target.key
        if module.target.role == "text_encoder":
            if ".layers." in key and int(key.split(".layers.")[1].split(".")[0]) >= 12:
                votes.add("sd-v2")
            if key.endswith(("_proj.weight", "fc1.weight")) and wide in _FAMILY_BY_WIDTH:
                votes.add(_FAMILY_BY_WIDTH[wide])
        elif key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) and wide in _FAMILY_BY_WIDTH:
            votes.add(_FAMILY_BY_WIDTH[wide])
    if len(votes) == 1:
        return votes.pop()
    if len(votes) > 1:
        raise LoraError(f"LoRA {path} mixes SD 1.x and SD 2.x shapes")
    base = metadata.get("ss_base_model_version", "").lower()
    if base.startswith("sd_v1"):
        return "sd-v1"
    if base.startswith("sd_v2"):
        return "sd-v2"
    v2 = metadata.get("ss_v2", "").lower()
    return {"true": "sd-v2", "false": "sd-v1"}.get(v2)


def _rank(modules: list[LoraModule], metadata: dict[str, str]) -> int | None:
    try:
        return int(metadata["ss_network_dim"])
    except (KeyError, ValueError):
        pass
    ranks = Counter(module.rank for module in modules if module.rank is not None)
    return ranks.most_common(1)[0][0] if ranks else None

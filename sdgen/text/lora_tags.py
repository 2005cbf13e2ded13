"""LoRA requests: ``LoraRequest``, A1111's ``<lora:...>`` prompt tags and ``--lora`` values.

A1111 (``modules/extra_networks.py``, see ``../shared/PROMPTS.md``) finds extra-network
tags with the pattern ``<(\\w+):([^>]+)>`` and splits their arguments on ``:``. For a
LoRA the first positional argument is the name, the second the text-encoder multiplier
(default 1.0, or ``te=``), the third the U-Net multiplier (default: the text-encoder
one, or ``unet=``). So ``<lora:style>`` is 1/1, ``<lora:style:0.8>`` 0.8/0.8,
``<lora:style:0.5:1>`` 0.5/1 and ``<lora:style:te=0.5:unet=1>`` the same. ``lyco`` (the
old LyCORIS extension's tag) means the same here. Other tags are left in the text.

The tags are removed from the text before it is encoded; the positive prompt's are
used, the negative prompt's are ignored (as A1111 does), and the recorded prompt keeps
them. ``dyn=`` (A1111's dynamic rank) is refused rather than ignored: it would change
the image. The same LoRA asked for twice (a tag and ``--lora``, or two tags) has its
weights added, which is what merging it twice does (A1111 applies each tag in turn).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import UsageError

#: A1111's extra-network tag; group 1 the kind, group 2 the arguments.
TAG = re.compile(r"<(\w+):([^>]+)>")
#: The tag kinds that are LoRAs.
LORA_KINDS = ("lora", "lyco")


class LoraRequestError(UsageError):
    """A LoRA request that cannot be read: no name, a weight that is not a number, an
    argument sdgen does not support."""


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA asked for: ``name`` (a file name in the LoRA folder, without its
    extension, or a path) and its text-encoder and U-Net multipliers [1.0 each]."""

    name: str
    te: float = 1.0
    unet: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise LoraRequestError("a LoRA needs a name, e.g. <lora:style:0.8>")
        object.__setattr__(self, "name", self.name.strip())
        for field_name in ("te", "unet"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LoraRequestError(f"LoRA {self.name}: {field_name} weight must be a number")
            if not math.isfinite(value):
                raise LoraRequestError(f"LoRA {self.name}: {field_name} weight must be finite")
            object.__setattr__(self, field_name, float(value))

    @property
    def text(self) -> str:
        """How ``--lora`` (and a tag's arguments) would write it: ``name``,
        ``name:0.8`` or ``name:0.5:1``."""
        if self.te == self.unet:
            return self.name if self.te == 1.0 else f"{self.name}:{_number(self.te)}"
        return f"{self.name}:{_number(self.te)}:{_number(self.unet)}"


def _number(value: float) -> str:
    return f"{value:g}"


def _weight(text: str, what: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LoraRequestError(
            f"LoRA {name}: the {what} weight {text.strip()!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise LoraRequestError(f"LoRA {name}: the {what} weight {text.strip()!r} is not finite")
    return value


def parse_arguments(arguments: str) -> LoraRequest:
    """The ``LoraRequest`` of a tag's arguments (``style:0.8``, ``style:te=0.5:unet=1``),
    by A1111's rules (see the module docstring); ``LoraRequestError`` otherwise."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in arguments.split(":"):
        key, equals, value = part.partition("=")
        if equals and key.strip().isidentifier():
            named[key.strip()] = value
        else:
            positional.append(part)
    if not positional or not positional[0].strip():
        raise LoraRequestError(f"LoRA {arguments!r} has no name; write <lora:NAME:WEIGHT>")
    name = positional[0].strip()
    if len(positional) > 3:
        raise LoraRequestError(
            f"LoRA {name}: too many weights in {arguments!r}; at most TE and U-Net weights"
        )
    unknown = sorted(set(named) - {"te", "unet"})
    if unknown:
        raise LoraRequestError(
            f"LoRA {name}: sdgen does not support {', '.join(k + '=' for k in unknown)}; "
            "use te= and unet="
        )
    te = named.get("te", positional[1] if len(positional) > 1 else None)
    te_weight = 1.0 if te is None else _weight(te, "text-encoder", name)
    unet = named.get("unet", positional[2] if len(positional) > 2 else None)
    unet_weight = te_weight if unet is None else _weight(unet, "U-Net", name)
    return LoraRequest(name, te_weight, unet_weight)


def lora_tags(text: str) -> list[LoraRequest]:
    """The LoRAs the ``<lora:...>`` tags of ``text`` ask for, in order."""
    return [
        parse_arguments(match.group(2))
        for match in TAG.finditer(text)
        if match.group(1).lower() in LORA_KINDS
    ]


def strip_lora_tags(text: str) -> str:
    """``text`` without its LoRA tags, what the text encoder sees (A1111 removes them
    and leaves the text around them as it was)."""
    return TAG.sub(
        lambda match: "" if match.group(1).lower() in LORA_KINDS else match.group(0), text
    )


def parse_lora_option(value: str) -> LoraRequest:
    """A ``--lora NAME_OR_PATH[:WEIGHT[:UNET_WEIGHT]]`` value (``te=``/``unet=`` work
    too, as in a tag). A value that is an existing file's path is that path at 1.0,
    colons and all."""
    from pathlib import Path

    if not isinstance(value, str):
        raise LoraRequestError(f"a LoRA must be given as NAME[:WEIGHT], got {value!r}")
    if ":" in value and Path(value).expanduser().is_file():
        return LoraRequest(value)
    return parse_arguments(value)


def lora_requests(value) -> tuple[LoraRequest, ...]:
    """``value`` as LoRA requests: a ``LoraRequest``, a ``--lora`` string, a mapping
    (``{"name": ..., "weight": w}`` or with ``te``/``unet``), or a list of these (the
    forms a prompts file's JSON ``loras`` key and Python take)."""
    if value is None:
        return ()
    if isinstance(value, LoraRequest | str | dict):
        value = [value]
    if not isinstance(value, list | tuple):
        raise LoraRequestError(f"loras must be a list of NAME[:WEIGHT], got {value!r}")
    requests = []
    for item in value:
        if isinstance(item, LoraRequest):
            requests.append(item)
        elif isinstance(item, str):
            requests.append(parse_lora_option(item))
        elif isinstance(item, dict):
            requests.append(_from_mapping(item))
        else:
            raise LoraRequestError(f"a LoRA must be NAME[:WEIGHT] or an object, got {item!r}")
    return tuple(requests)


def _from_mapping(item: dict) -> LoraRequest:
    unknown = sorted(set(item) - {"name", "weight", "te", "unet"})
    if unknown or "name" not in item:
        raise LoraRequestError(
            f"a LoRA object has keys name and weight (or te and unet), got {sorted(item)}"
        )
    name = item["name"]
    weight = item.get("weight", 1.0)
    te = item.get("te", weight)
    return LoraRequest(name, te, item.get("unet", te))


def combined(requests) -> tuple[LoraRequest, ...]:
    """``requests`` with each name once, in the order first asked, its weights added
    (merging a LoRA twice adds its delta twice)."""
    merged: dict[str, LoraRequest] = {}
    for request in requests:
        if request.name in merged:
            before = merged[request.name]
            merged[request.name] = LoraRequest(
                request.name, before.te + request.te, before.unet + request.unet
            )
        else:
            merged[request.name] = request
    return tuple(merged.values())


__all__ = [
    "LoraRequest",
    "LoraRequestError",
    "combined",
    "lora_requests",
    "lora_tags",
    "parse_arguments",
    "parse_lora_option",
    "strip_lora_tags",
]

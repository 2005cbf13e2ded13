"""One weight of a weight table (:class:`Param`) and the walk that lists a network's
weights in keras' order (see :mod:`.tables`)."""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["Param"]

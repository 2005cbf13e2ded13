"""Where each Keras weight lives in a converted OpenVINO network, and weight deltas
merged there in memory, so a LoRA switch on ``--runtime openvino`` costs a recompile of
the touched networks, not a fresh Keras build and ``convert_model``.

OpenVINO's TensorFlow frontend freezes every variable into a ``Constant`` node, but not
always in the Keras layout: measured with OpenVINO 2026.4 on the tiny and SD networks,
a dense kernel ``(in, out)`` is stored transposed ``(out, in)`` (the transpose folded
into the constant), a convolution kernel ``(h, w, in, out)`` as ``(out, in, h, w)``,
biases and norm scales reshaped (``(1, C)``, ``(1, C, 1, 1)``, ``(1, 1, 1, G, C/G)``),
and the CLIP query bias multiplied by the head scale (``q_proj(x) * scale``, folded
into the bias). So each weight is found after conversion by its values: a constant that
holds the Keras array after one of those transposes, as is or times one scalar. The
result, a ``WeightMap``, is written beside the ``.xml`` as ``<stem>.weights.json``.

Weights with the same values as another (a random model's norm scales of ones and
shifts of zeros) would be ambiguous, so ``distinct_values`` gives them distinct values
for the conversion only, and the converted constants get the true values back
(``patched_model``) before the file is saved.

A weight the graph uses but that is found nowhere (folded into something else) is
recorded as ``unplaced``: a delta on it raises ``WeightDeltaError`` rather than being
merged wrongly. A weight the graph never uses (the last CLIP layer under clip skip 2) is
in neither list, and a delta on it changes nothing, as in TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SdgenError, UsageError

FORMAT = 1
SUFFIX = ".weights.json"


class ConversionError(SdgenError):
    """A network could not be converted to OpenVINO's format."""


class WeightDeltaError(UsageError):
    """A weight delta cannot be merged: an unknown weight, a wrong shape, or a weight
    that OpenVINO folded into another constant (a usage error, as the TensorFlow
    runtime's ``LoraError`` for the same checks: exit status 2, one line)."""


@dataclass(frozen=True)
class Placement:
    """One converted constant holding a Keras weight.

    name: the ``Constant`` node's friendly name (unique in the file).
    axes: the transpose from the Keras layout to the constant's (None: the same order,
        at most reshaped).
    scale: the factor OpenVINO folded into the constant (1.0 for almost every weight).
    """

    name: str
    axes: tuple[int, ...] | None = None
    scale: float = 1.0

    def layout(self, array: np.ndarray, shape) -> np.ndarray:
        """``array`` (Keras layout) as this constant stores it, unscaled, in ``shape``."""
        moved = array.transpose(self.axes) if self.axes is not None else array
        return np.ascontiguousarray(moved, np.float32).reshape(tuple(shape))


@dataclass(frozen=True)
class WeightMap:
    """Where a converted network keeps each weight of its Keras network.

    shapes: every Keras weight's shape, by position in ``model.weights``.
    placements: position -> the constants holding that weight (usually one).
    unplaced: positions the graph uses but whose constants could not be found.
    """

    shapes: tuple[tuple[int, ...], ...]
    placements: dict[int, tuple[Placement, ...]]
    unplaced: frozenset[int] = frozenset()

    def check(self, role: str, deltas: dict[int, np.ndarray]) -> None:
        """Raise ``WeightDeltaError`` unless every delta can be merged here."""
        for position, delta in deltas.items():
            if not 0 <= position < len(self.shapes):
                raise WeightDeltaError(
                    f"the {role} has {len(self.shapes)} weights, no weight {position}"
                )
            if tuple(delta.shape) != self.shapes[position]:
                raise WeightDeltaError(
                    f"a delta of shape {tuple(delta.shape)} for the {role}'s weight "
                    f"{position}, of shape {self.shapes[position]}"
                )
            if position in self.unplaced:
                raise WeightDeltaError(
                    f"OpenVINO folded the {role}'s weight {position} into another constant: "
                    "a delta on it cannot be merged (use --runtime tensorflow)"
                )

    def save(self, path: Path) -> None:
        placements = {
            str(position): [[p.name, list(p.axes) if p.axes else None, p.scale] for p in found]
            for position, found in sorted(self.placements.items())
        }
        record = {
            "format": FORMAT,
            "shapes": [list(shape) for shape in self.shapes],
            "placements": placements,
            "unplaced": sorted(self.unplaced),
        }
        path.write_text(json.dumps(record, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> WeightMap:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise WeightDeltaError(f"{path}: not a weight map of format {FORMAT}")
        placements = {
            int(position): tuple(
                Placement(name, tuple(axes) if axes else None, float(scale))
                for name, axes, scale in found
            )
            for position, found in record["placements"].items()
        }
        shapes = tuple(tuple(shape) for shape in record["shapes"])
        return cls(shapes, placements, frozenset(record["unplaced"]))


def sidecar(xml: Path) -> Path:
    """The weight map written beside the converted file ``xml``."""
    return Path(xml).with_suffix(SUFFIX)


def distinct_values(variables, seed: int = 0) -> dict[int, np.ndarray]:
    """Give every Keras variable whose values another one shares, or whose elements are
    all equal, distinct random values, so that its converted constant can be told apart;
    returns the true values by position, to be put back (``patched_model``) after the
    conversion and into the variables (``restore``)."""
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for position, variable in enumerate(variables):
        array = np.asarray(variable)
        flat = array.ravel()
        groups[(array.shape, array.dtype.str, flat[:8].tobytes(), flat[-8:].tobytes())].append(
            (position, array)
        )
    true = {}
    for members in groups.values():
        for position, array in members:
            flat = array.ravel()
            plain = flat.size > 1 and bool(np.all(flat == flat[0]))
            shared = any(
                other != position and np.array_equal(array, values) for other, values in members
            )
            if array.dtype == np.float32 and (plain or shared):
                true[position] = array
    for position, array in true.items():
        noise = rng.standard_normal(array.shape).astype(np.float32)
        variables[position].assign(array + np.float32(0.01) * noise)
    return true


def restore(variables, true: dict[int, np.ndarray]) -> None:
    for position, array in true.items():
        variables[position].assign(array)


def _constants(model):
    return [op for op in model.get_ops() if op.get_type_name() == "Constant"]


def _layouts(array: np.ndarray):
    """The transposes OpenVINO's frontend was seen to fold into a weight's constant."""
    yield None
    if array.ndim == 2:
        yield (1, 0)
    if array.ndim == 4:
        yield (3, 2, 0, 1)


def _key(flat: np.ndarray):
    return flat.size, flat[:8].tobytes(), flat[-8:].tobytes()


def _scale_of(data: np.ndarray, moved: np.ndarray) -> float | None:
    """The scalar ``k`` with ``data == k * moved`` up to float32 rounding, or None."""
    norm = float(np.dot(moved, moved))
    if norm == 0.0:
        return None
    k = float(np.dot(data.astype(np.float64), moved)) / norm
    if k == 0.0 or not np.allclose(data, k * moved, rtol=1e-5, atol=1e-7 * np.abs(data).max()):
        return None
    return k


def _placements(array: np.ndarray, exact, by_size) -> list[Placement]:
    """The constants holding ``array`` in one of the frontend's layouts: as is, or
    (only when none does) times one scalar, as the CLIP query bias is."""
    placements = []
    for axes in _layouts(array):
        moved = np.ascontiguousarray(array.transpose(axes) if axes else array).ravel()
        for constant in exact.get(_key(moved), ()):
            if np.array_equal(constant.get_data().ravel(), moved):
                placements.append(Placement(constant.get_friendly_name(), axes))
    if placements:
        return placements
    for axes in _layouts(array):
        moved = np.ascontiguousarray(array.transpose(axes) if axes else array).ravel()
        for constant in by_size.get(moved.size, ()):
            k = _scale_of(constant.get_data().ravel(), moved)
            if k is not None:
                placements.append(Placement(constant.get_friendly_name(), axes, k))
    return placements


def locate(model, variables, used: set[int]) -> WeightMap:
    """The ``WeightMap`` of a converted ``model`` (an ``openvino.Model``) whose
    frontend saw ``variables`` (the Keras network's ``weights``, in order) with their
    present values; ``used``: the positions the traced graph reads."""
    constants = [c for c in _constants(model) if c.get_element_type().get_type_name() == "f32"]
    names = defaultdict(int)
    for constant in constants:
        names[constant.get_friendly_name()] += 1
    exact, by_size = defaultdict(list), defaultdict(list)
    for constant in constants:
        if names[constant.get_friendly_name()] > 1:
            continue  # not a name to find it by again
        flat = constant.get_data().ravel()
        exact[_key(flat)].append(constant)
        by_size[flat.size].append(constant)
    found: dict[int, list[Placement]] = {}
    claims = defaultdict(set)
    shapes = []
    for position, variable in enumerate(variables):
        array = np.asarray(variable)
        shapes.append(tuple(int(n) for n in array.shape))
        if position not in used or array.dtype != np.float32:
            continue
        placements = _placements(array, exact, by_size)
        found[position] = placements
        for placement in placements:
            claims[placement.name].add(position)
    # a constant two weights claim belongs to neither for sure
    unplaced = {
        position
        for position, placements in found.items()
        if not placements or any(len(claims[p.name]) > 1 for p in placements)
    }
    placed = {p: tuple(found[p]) for p in sorted(found) if p not in unplaced}
    return WeightMap(tuple(shapes), placed, frozenset(unplaced))


def patched_model(model, weight_map: WeightMap, values: dict[int, np.ndarray], add: bool):
    """``model`` with the constants of the weights in ``values`` replaced: by the base
    plus the value (``add``, a delta in the Keras layout) or by the value itself (the
    true values after ``distinct_values``). Modifies and returns ``model``."""
    import openvino as ov

    by_name = {op.get_friendly_name(): op for op in _constants(model)}
    for position, value in values.items():
        for placement in weight_map.placements.get(position, ()):
            old = by_name[placement.name]
            base = old.get_data()
            moved = placement.layout(np.asarray(value, np.float32), base.shape)
            if placement.scale != 1.0:
                moved = moved * np.float32(placement.scale)
            new = ov.op.Constant(base + moved if add else moved)
            new.set_friendly_name(placement.name)
            old.output(0).replace(new.output(0))
    return model


def concrete_function(role: str, network):
    """``network`` traced for the batches the runtime calls it with: any number of rows
    for the text encoder, one row for the others (see the module docstring)."""
    import tensorflow as tf

    batch = None if role.startswith("text_") else 1
    signature = [tf.TensorSpec((batch, *t.shape[1:]), t.dtype) for t in network.inputs]
    if len(signature) == 1:
        function = tf.function(lambda x: network(x, training=False))
    else:
        function = tf.function(lambda *xs: network(list(xs), training=False))
    return function.get_concrete_function(*signature)


def convert_in(
    core, target: Path, role: str, network, variables, distinct: bool
) -> WeightMap | None:
    """Convert ``network`` (traced as ``role``) into the file ``target`` and return
    its ``WeightMap`` (an empty one when ``variables`` is empty: the decoder); None
    if ``distinct`` values were asked for and one of them was folded into a constant
    that the true values cannot be put back into (the caller converts again without).

    OpenVINO's constants share the Keras variables' memory until the model is
    saved, so the true values go back into the variables only after that."""
    import openvino as ov

    true = distinct_values(variables) if distinct else {}
    try:
        function = concrete_function(role, network)
        try:
            converted = ov.convert_model(function)
        except Exception as error:  # OpenVINO's frontend errors have no common base
            raise ConversionError(f"could not convert the {role} to OpenVINO: {error}") from error
        first = target.parent / "first" / target.name
        first.parent.mkdir()
        ov.save_model(converted, str(first), compress_to_fp16=False)
        del converted
        if not variables:
            os.replace(first, target)
            os.replace(first.with_suffix(".bin"), target.with_suffix(".bin"))
            return WeightMap((), {})
        ids = {id(variable) for variable in function.variables}
        used = {i for i, v in enumerate(variables) if id(getattr(v, "value", v)) in ids}
        model = core.read_model(str(first))
        weight_map = locate(model, variables, used or set(range(len(variables))))
    finally:
        restore(variables, true)
    if any(position in weight_map.unplaced for position in true):
        shutil.rmtree(first.parent)
        return None
    if not true:  # as converted: no value to put back (trained weights are distinct)
        del model
        os.replace(first.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(first, target)
        first.parent.rmdir()
        return weight_map
    model = patched_model(model, weight_map, true, add=False)
    ov.save_model(model, str(target), compress_to_fp16=False)
    del model
    shutil.rmtree(first.parent)
    return weight_map


__all__ = [
    "ConversionError",
    "Placement",
    "WeightDeltaError",
    "WeightMap",
    "concrete_function",
    "convert_in",
    "distinct_values",
    "locate",
    "patched_model",
    "restore",
    "sidecar",
]

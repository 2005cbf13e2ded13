"""Put weight changes into built Keras networks, and take them out again bit for bit.

Used by the TensorFlow runtime (``TensorFlowBackend.set_weight_deltas``); it needs only
the variables' ``numpy()`` and ``assign()``, so it imports nothing itself.
"""

from __future__ import annotations

import numpy as np

from .errors import LoraError


def apply_deltas_to_keras(
    networks: dict, deltas: dict[tuple[str, int], np.ndarray], pristine: dict
) -> None:
    """Make ``networks[role].weights[position]`` equal its original value plus
    ``deltas[(role, position)]``, for every key of ``deltas``, and equal its original
    value for every other weight touched by an earlier call.

    ``pristine`` is the caller's record, kept between calls: ``{(role, position): the
    weight's value before any change}``, of exactly the weights changed now. A weight
    given back is assigned its pristine copy (bit for bit) and forgotten; each changed
    weight is assigned ``pristine + delta`` in its own dtype, so the same deltas always
    give the same bits. ``variable.assign`` changes the variables compiled
    ``tf.function`` steps read, so nothing is rebuilt or retraced.
    """
    variables = {}
    for role, position in deltas:
        if role not in networks:
            raise LoraError(f"no network {role!r} to change (have {', '.join(networks)})")
        weights = networks[role].weights
        if not 0 <= position < len(weights):
            raise LoraError(f"{role} has no weight {position}")
        variable = weights[position]
        if tuple(variable.shape) != tuple(np.shape(deltas[role, position])):
            raise LoraError(
                f"a change of shape {np.shape(deltas[role, position])} does not fit {role} "
                f"weight {position} of shape {tuple(variable.shape)}"
            )
        variables[role, position] = variable
    for place in [place for place in pristine if place not in deltas]:
        role, position = place
        networks[role].weights[position].assign(pristine.pop(place))
    for place, variable in variables.items():
        if place not in pristine:
            pristine[place] = np.array(variable.numpy(), copy=True)
        base = pristine[place]
        variable.assign((base + np.asarray(deltas[place], dtype=base.dtype)).astype(base.dtype))

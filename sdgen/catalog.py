"""Find a model by name among the built-in ones and those imported into the store.

Lookup depends on its sources (:mod:`sdgen.registry`, :mod:`sdgen.store`) and never the
other way round.
"""

from __future__ import annotations

from .errors import ConfigError
from .registry import model_specs
from .spec import ModelSpec
from .store import imported_spec, imported_specs


def get_model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``, built in or imported; raises ``ConfigError`` listing
    the known names."""
    specs = model_specs()
    if name in specs:
        return specs[name]
    spec = imported_spec(name)
    if spec is None:
        known = [*specs, *imported_specs()]
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(known)} "
            "(import more with `sdgen import CHECKPOINT --name NAME`)"
        )
    return spec


def model_hash(name: str) -> str | None:
    """AUTOMATIC1111's "Model hash" of model ``name`` (see ``ModelSpec.model_hash``), or
    None: a model without one, or not known here."""
    try:
        return get_model_spec(name).model_hash
    except ConfigError:
        return None

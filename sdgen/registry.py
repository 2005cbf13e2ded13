"""The models sdgen knows by name, read from ``sdgen/data/models.toml``.

This module is plain data and must stay free of TensorFlow so that the CLI can list
models and validate ``--model`` without importing it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ConfigError

#: The networks a text-to-image model is made of, in loading order.
ROLES = ("text_encoder", "diffusion_model", "decoder")


@dataclass(frozen=True)
class WeightFile:
    """One published weights file: where it comes from and what it must hash to."""

    role: str
    filename: str
    url: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its network family, default size and weight files.

    ``files`` is empty for a model whose weights are generated (``tiny``).
    """

    name: str
    family: str
    default_size: int
    description: str
    files: tuple[WeightFile, ...] = ()
    license: str | None = None
    seed: int = 0
    prediction_type: str = "epsilon"
    #: A local folder holding the weight files (an imported model), instead of URLs.
    weights_dir: Path | None = None

    def file_for(self, role: str) -> WeightFile | None:
        return next((f for f in self.files if f.role == role), None)


@cache
def model_specs() -> dict[str, ModelSpec]:
    """All known models, by name, in the order ``models.toml`` lists them."""
    text = (Path(__file__).parent / "data" / "models.toml").read_text("utf-8")
    specs = {}
    for name, table in tomllib.loads(text)["models"].items():
        files = tuple(
            WeightFile(role=role, **entry) for role, entry in table.get("files", {}).items()
        )
        specs[name] = ModelSpec(
            name=name,
            family=table["family"],
            default_size=table["default_size"],
            description=table["description"],
            files=files,
            license=table.get("license"),
            seed=table.get("seed", 0),
            prediction_type=table.get("prediction_type", "epsilon"),
        )
    return specs


def get_model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``, built in or imported; raises ``ConfigError`` listing
    the known names."""
    specs = model_specs()
    if name in specs:
        return specs[name]
    from .store import imported_spec, imported_specs

    spec = imported_spec(name)
    if spec is None:
        known = [*specs, *imported_specs()]
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(known)} "
            "(import more with `sdgen import CHECKPOINT --name NAME`)"
        )
    return spec

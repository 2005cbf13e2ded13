"""The built-in models, read from ``sdgen/data/models.toml``.

Plain data, free of TensorFlow, so that the CLI can list models and validate ``--model``
without importing it. Imported models live in :mod:`sdgen.store`; :mod:`sdgen.catalog`
looks a name up in both.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from .spec import IMAGE_ROLES, ModelSpec, WeightFile

#: The catalog of built-in models.
CATALOG = Path(__file__).parent / "data" / "models.toml"


@cache
def model_specs() -> dict[str, ModelSpec]:
    """All known models, by name, in the order ``models.toml`` lists them."""
    specs = {}
    for name, table in tomllib.loads(CATALOG.read_text("utf-8"))["models"].items():
        published = [
            WeightFile(role=role, **entry) for role, entry in table.get("files", {}).items()
        ]
        # the VAE encoder is listed with the others, but fetched only for image tasks
        files = tuple(w for w in published if w.role not in IMAGE_ROLES)
        image_files = tuple(w for w in published if w.role in IMAGE_ROLES)
        checkpoint = table.get("checkpoint")
        specs[name] = ModelSpec(
            name=name,
            family=table["family"],
            default_size=table["default_size"],
            description=table["description"],
            files=files,
            image_files=image_files,
            license=table.get("license"),
            seed=table.get("seed", 0),
            prediction_type=table.get("prediction_type", "epsilon"),
            checkpoint=checkpoint and WeightFile(role="checkpoint", **checkpoint),
        )
    return specs

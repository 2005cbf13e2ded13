"""Reference tests compare sdgen with diffusers/transformers on PyTorch (CPU).

torch and diffusers are test-only dependencies (the ``reference`` extra). Without them
these tests are skipped, unless ``SDGEN_REQUIRE_REFERENCE=1`` (set by scripts/test.sh and
so by CI), where a missing reference library is an error rather than a silent skip.
"""

from __future__ import annotations

import importlib
import os

import pytest


def require(module: str):
    if os.environ.get("SDGEN_REQUIRE_REFERENCE") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reference/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.reference)

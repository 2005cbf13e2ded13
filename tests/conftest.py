"""Shared fixtures: a hermetic home, cache and output folder for every test, a helper
that runs the real CLI entry point in-process, and one tiny pipeline per session.

Building the tiny model's Keras networks and tracing their compiled steps takes seconds,
and most tests run the CLI several times; so within one test process, ``load_pipeline``
builds the tiny model once per (size, device options) on the TensorFlow runtime and hands
the same loaded pipeline to every later caller. A test that is about loading itself takes
the ``fresh_load`` marker, and other runtimes, weight folders and models always load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from sdgen.cli import main

# Keep TensorFlow quiet in the test log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY = ["--model", "tiny", "--width", "128", "--height", "128", "--steps", "2"]
#: The same at 64 px, for batches of many images.
FAST = ["--model", "tiny", "--width", "64", "--height", "64", "--steps", "2"]


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No test reads or writes the real home, cache or working folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SDGEN_CACHE", str(tmp_path / "sdgen-cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("SDGEN_HOME", str(tmp_path / "sdgen-home"))
    monkeypatch.delenv("SDGEN_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("SDGEN_RUNTIME", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


#: What a lane runs: plain ``pytest`` the fast suite; scripts/test.sh both lanes.
LANES = {
    "fast": lambda item: (
        not (item.get_closest_marker("slow") or item.get_closest_marker("full_size"))
    ),
    "light": lambda item: item.get_closest_marker("full_size") is None,
    "heavy": lambda item: item.get_closest_marker("full_size") is not None,
    "all": lambda item: True,
}


def _lane(config) -> str:
    """``$SDGEN_TEST_LANE``; without it, the fast suite, unless ``-m`` chooses."""
    lane = os.environ.get("SDGEN_TEST_LANE")
    if lane is None:
        return "all" if config.getoption("markexpr") else "fast"
    if lane not in LANES:
        raise pytest.UsageError(f"SDGEN_TEST_LANE={lane!r}: choose one of {', '.join(LANES)}")
    return lane


def pytest_report_header(config):
    lane = _lane(config)
    if lane == "fast":
        return "lane: fast (slow and full_size tests deselected; scripts/test.sh runs every test)"
    return f"lane: {lane}"


def pytest_collection_modifyitems(config, items):
    """Plain ``pytest`` runs the fast suite: no test marked ``slow`` or ``full_size``.
    ``SDGEN_TEST_LANE=light`` runs every test not marked ``full_size``, ``heavy`` only
    those (scripts/test.sh runs the two lanes side by side), ``all`` everything; other
    -m and -k selections still apply."""
    keep_item = LANES[_lane(config)]
    keep, drop = [], []
    for item in items:
        (keep if keep_item(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_TINY_PIPELINES: dict[tuple, object] = {}


@pytest.fixture(autouse=True)
def reuse_tiny_pipelines(request, monkeypatch):
    """Memoise ``load_pipeline("tiny", ...)`` on the TensorFlow runtime for this process
    (see the module docstring); ``@pytest.mark.fresh_load`` turns it off for a test."""
    if request.node.get_closest_marker("fresh_load"):
        return
    import sdgen.pipeline

    real = sdgen.pipeline.load_pipeline

    def load_pipeline(model="sd-v1.4", **options):
        plain = (
            model == "tiny"
            and options.get("weights_dir") is None
            and options.get("runtime", "tensorflow") == "tensorflow"
            and not options.get("xla")
            and not options.get("mixed_precision")
        )
        if not plain:
            return real(model, **options)
        key = (options.get("width"), options.get("height"))
        if key not in _TINY_PIPELINES:
            _TINY_PIPELINES[key] = real(model, **options)
        else:  # what a real load sets process-wide, and later size changes build under
            import keras

            from sdgen.adapters.textual_inversion import EmbeddingLibrary

            keras.mixed_precision.set_global_policy("float32")
            # the embeddings folder of this load (by default under this test's home)
            _TINY_PIPELINES[key].embeddings = EmbeddingLibrary(options.get("embeddings_dir"))
            from sdgen.adapters.lora.uses import LoraFinder

            # and its LoRA folder; and no LoRA an earlier test merged is left merged
            pipeline = _TINY_PIPELINES[key]
            pipeline.loras = LoraFinder(options.get("lora_dir"))
            if pipeline._merged != ():
                pipeline.backend.set_weight_deltas({})
                pipeline._merged = ()
        return _TINY_PIPELINES[key]

    monkeypatch.setattr(sdgen.pipeline, "load_pipeline", load_pipeline)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def server(tmp_path):
    """A local HTTP server of ``tmp_path/served`` (see ``local_server``)."""
    from local_server import Server

    folder = tmp_path / "served"
    folder.mkdir()
    srv = Server(folder)
    yield srv
    srv.close()


@pytest.fixture
def run_cli():
    """Run ``sdgen ARGS`` through the real entry point (``main``), capturing its streams."""

    def run(*args: str) -> CliResult:
        runner = CliRunner()
        with runner.isolation() as (stdout, stderr, _):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())

    return run


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A tiny pipeline of its own, never the one ``reuse_tiny_pipelines`` hands out."""
    from sdgen.pipeline import load_pipeline

    return load_pipeline("tiny", width=128, height=128)


@pytest.fixture
def chromium() -> Path:
    from browser import CHROMIUM

    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)"
        if os.environ.get("SDGEN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"SDGEN_REQUIRE_CHROMIUM=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


#: The tiny model's text encoder width (an SD 1.x embedding is 768 wide).
TINY_WIDTH = 64
#: An A1111-style prompt of well over 75 tokens, weighted and nested.
LONG_PROMPT = (
    "(masterpiece:1.2), best quality, ultra detailed, (photorealistic:1.4), a red fox "
    "sitting in a snowy birch forest at dawn, ((soft golden light)), mist between the "
    "trees, [blurry background], shallow depth of field, 85mm lens, film grain, "
    "highly detailed fur, catchlights in the eyes, frost on the whiskers, (snowflakes:0.8), "
    "muted colour palette, cinematic composition, rule of thirds, award winning "
    "photograph, national geographic, sharp focus, volumetric fog, BREAK a wooden cabin "
    "in the distance, smoke from the chimney, warm window light, pine trees, footprints "
    "in the snow, (crisp winter morning:1.1), dramatic sky, high dynamic range"
)


def write_embedding(folder, name, rows, width=TINY_WIDTH, seed=0):
    """A safetensors embedding file (A1111's ``emb_params``) of ``rows`` vectors."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    path = folder / f"{name}.safetensors"
    save_file({"emb_params": vectors}, str(path))
    return path


class RandomPixelsExecutor:
    """Stands in for a real executor in runner tests: each requested image as random
    pixels, one by one, without any network."""

    load_seconds: ClassVar[dict] = {}

    def run(self, work, callback=None):
        import numpy as np

        from sdgen.pipeline import GeneratedImage

        rng = np.random.default_rng(0)
        for job, ks in work:
            for k in ks:
                pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                yield job, GeneratedImage(k, job.config.seed + k, pixels)


def one_line_error(result, *parts):
    """Assert that a CLI ``result`` failed with exit 2 and one ``Error: `` line holding
    every one of ``parts``."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def only_line(text: str) -> str:
    """The single non-empty line of ``text``; fails if there are more."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def png_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def pixels(path: Path):
    """The RGB pixels of the image at ``path``, (height, width, 3) uint8."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_index_converts_as_map_weights(tensors: dict, weights: dict, index: dict) -> None:
    """The name index against a whole conversion: every tensor of a checkpoint that is
    not ignored is in ``index``; together they reach each keras weight of ``weights``
    (``map_weights``' result) exactly once; and each tensor looked up and converted
    alone is the array the whole conversion put at that place."""
    import numpy as np

    from sdgen.convert import is_ignored

    used = [key for key in tensors if not is_ignored(key)]
    assert [key for key in used if key not in index] == []
    reached = sorted((slot.role, slot.position) for key in used for slot in index[key])
    assert reached == sorted(
        (role, i) for role, arrays in weights.items() for i in range(len(arrays))
    )
    for key in used:
        for slot in index[key]:
            assert slot.source == key
            np.testing.assert_array_equal(
                slot.to_keras(tensors[key]), weights[slot.role][slot.position], err_msg=key
            )


def _to_torch(value, kind: str):
    """A keras weight in the layout a PyTorch checkpoint stores it (``to_keras`` undone)."""
    if kind == "dense" and value.ndim == 2:
        return value.T
    if kind == "conv" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value


def tiny_checkpoint(path, encoder: bool = True) -> tuple[dict, int]:
    """The tiny model's weights as an SD 1.x single-file (LDM names) safetensors file:
    its tensors, and how many keras weights its networks hold; with ``encoder`` False,
    without the VAE encoder (as some checkpoints are)."""
    import numpy as np
    from safetensors.numpy import save_file

    from sdgen.catalog import get_model_spec
    from sdgen.convert import name_index
    from sdgen.families import family_of

    spec = get_model_spec("tiny")
    family = family_of(spec)
    roles = ("text_encoder", "diffusion_model", "decoder") + (("encoder",) if encoder else ())
    weights = {
        role: [np.asarray(w) for w in family.build(role, spec, 64, 64).weights] for role in roles
    }
    tensors = {}
    for key, slots in name_index("ldm", "tiny").items():
        (slot,) = slots  # CLIP names: one keras weight per tensor
        if slot.role not in weights:
            continue
        tensors[key] = np.ascontiguousarray(
            _to_torch(weights[slot.role][slot.position], slot.param.kind)
        )
    save_file(tensors, str(path))
    return tensors, sum(len(arrays) for arrays in weights.values())

"""Missing weights, as a new user without network meets them: one error that names every
missing file and every folder sdgen looked in, and says the ways out.

Hermetic: the published URLs are replaced by ``$SDGEN_WEIGHTS_MIRROR`` pointing at a
127.0.0.1 port where nothing listens, and every cache lies in the test's folder.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from conftest import FAST, png_files
from local_server import Server
from test_weights import FILENAMES, SIZES, closed_port_url, model_spec

from sdgen.batch.executors import LoadOptions, LocalExecutor
from sdgen.batch.work import Job, JobFailure
from sdgen.config import GenerationConfig
from sdgen.errors import ModelError, UsageError, WeightsError
from sdgen.output.manifest import read_manifest
from sdgen.weights import cache_dir, keras_cache_dirs, resolve_weights

SD14_FILES = ("kcv_encoder.h5", "kcv_diffusion_model.h5", "kcv_decoder.h5")


@pytest.fixture
def no_network(monkeypatch):
    """Every download goes to a closed local port."""
    mirror = closed_port_url().rstrip("/")
    monkeypatch.setenv("SDGEN_WEIGHTS_MIRROR", mirror)
    return mirror


@pytest.fixture
def served(tmp_path):
    """A local server publishing three random files, and the spec naming them."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = Server(folder)
    contents = {role: os.urandom(size) for role, size in SIZES.items()}
    files = [
        replace(server.serve(FILENAMES[role], data), role=role) for role, data in contents.items()
    ]
    yield server, model_spec(*files), contents
    server.close()


def errors_of(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("Error")]


def assert_names_everything(line: str) -> None:
    """The missing-weights message of sd-v1.4: every file, every folder, every way out."""
    for name in SD14_FILES:
        assert name in line, line
    for folder in [cache_dir() / "weights" / "sd-v1.4", *keras_cache_dirs()]:
        assert str(folder) in line, line
    for way_out in ("--weights DIR", "$SDGEN_WEIGHTS_MIRROR", "--model tiny"):
        assert way_out in line, line


def test_the_first_readme_command_without_network(run_cli, hermetic, no_network):
    result = run_cli("a cat", "--steps", "2")  # the default model, sd-v1.4
    assert result.exit_code == 1, result.stderr
    [line] = errors_of(result.stderr)
    assert line.startswith("Error: weights files "), line  # no "image 0:" in front
    assert_names_everything(line)
    assert "could not download " + no_network in line
    assert "loading sd-v1.4" not in result.stderr  # refused before any network is built
    assert not png_files(hermetic / "outputs")


def test_a_prompts_file_fails_once_not_once_per_line(run_cli, hermetic, no_network):
    (hermetic / "p.txt").write_text("a cat\na dog\n--prompt 'a horse' --steps 3\n")
    result = run_cli("--prompts-file", "p.txt", "--steps", "2")
    assert result.exit_code == 1, result.stderr
    [line] = errors_of(result.stderr)
    assert line.startswith("Error: weights files "), line
    assert_names_everything(line)
    assert not png_files(hermetic / "outputs")


def test_offline_names_every_missing_file(run_cli, hermetic):
    result = run_cli("a cat", "--offline")
    assert result.exit_code == 1, result.stderr
    [line] = errors_of(result.stderr)
    assert_names_everything(line)
    assert "--offline is set" in line


def test_a_model_that_cannot_load_fails_once_for_all_its_lines(run_cli, hermetic):
    (hermetic / "p.txt").write_text(
        'tiny one\n{"prompt": "real one", "model": "sd-v1.4"}\n'
        'tiny two\n{"prompt": "real two", "model": "sd-v1.4"}\n'
    )
    result = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "1", "--offline")
    assert result.exit_code == 3, result.stderr  # some images made, some failed
    [line] = errors_of(result.stderr)
    assert line.startswith("Error: images 1, 3: weights files "), line
    assert "done 2, skipped 0, failed 2" in result.stderr
    assert [r["line"] for r in read_manifest(hermetic / "outputs")] == [1, 3]


def test_weights_folder_that_does_not_exist(run_cli, hermetic):
    result = run_cli("a cat", *FAST, "--weights", str(hermetic / "nonexistent"))
    assert result.exit_code == 2, result.stderr
    [line] = errors_of(result.stderr)
    assert line == f"Error: --weights {hermetic / 'nonexistent'}: the folder does not exist"
    assert "loading" not in result.stderr
    assert not (hermetic / "outputs").exists() or not png_files(hermetic / "outputs")
    with pytest.raises(UsageError, match="does not exist"):
        resolve_weights(model_spec(), weights_dir=hermetic / "nonexistent")


def test_weights_folder_lacking_files_names_them_all(hermetic):
    folder = hermetic / "mine"
    folder.mkdir()
    (folder / "kcv_decoder.h5").write_bytes(b"x")
    with pytest.raises(WeightsError) as info:
        resolve_weights(model_spec(), weights_dir=folder)
    message = str(info.value)
    assert "kcv_encoder.h5, kcv_diffusion_model.h5 are not in" in message
    assert "kcv_decoder.h5" not in message


def test_a_failed_download_names_the_files_still_missing(hermetic, served):
    """The first file downloads; the second is gone from the server: the error names it
    and the one after it, which was not tried, and keeps the first in the cache."""
    server, spec, contents = served
    files = {w.role: w for w in spec.files}
    (server.folder / files["diffusion_model"].filename).unlink()
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec)
    message = str(info.value)
    assert files["text_encoder"].filename not in message
    for role in ("diffusion_model", "decoder"):
        assert files[role].filename in message
    tried = ("text_encoder", "diffusion_model")
    assert server.requests == ["/" + files[role].filename for role in tried]
    cached = cache_dir() / "weights" / spec.name / files["text_encoder"].filename
    assert cached.read_bytes() == contents["text_encoder"]


def test_every_missing_file_is_named_offline(hermetic, served):
    server, spec, _ = served
    # one file already cached: only the other two are missing
    text_encoder = next(w for w in spec.files if w.role == "text_encoder")
    resolve_weights(model_spec(text_encoder))
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, offline=True)
    message = str(info.value)
    assert message.startswith("weights files ")
    assert text_encoder.filename not in message
    for weight in spec.files:
        if weight is not text_encoder:
            assert weight.filename in message
    # published under one folder: that folder is where to download them from
    assert f"download them from {server.base}/)" in message
    assert len(server.requests) == 1


def test_a_model_that_failed_to_load_is_not_loaded_again():
    calls = []

    def loader(model, **_options):
        calls.append(model)
        raise ModelError("the networks cannot be built")

    executor = LocalExecutor(LoadOptions(), loader=loader)
    jobs = [Job(GenerationConfig(prompt=p, steps=1, seed=1), "tiny") for p in ("a", "b")]
    results = [result for _, result in executor.run([(job, [0]) for job in jobs])]
    assert calls == ["tiny"]
    assert results == [JobFailure([0], "the networks cannot be built")] * 2


def test_an_unknown_runtime_is_refused_before_weights_are_looked_for(hermetic, monkeypatch):
    from sdgen import weights
    from sdgen.service import GenerateRequest, start_generation

    def refuse(*args, **kwargs):
        raise AssertionError("weights were resolved for a runtime that does not exist")

    monkeypatch.setattr(weights, "resolve_weights", refuse)
    request = GenerateRequest(prompt="a cat", load=LoadOptions(runtime="onnx"))
    with pytest.raises(UsageError, match="unknown runtime 'onnx'"):
        start_generation(request)

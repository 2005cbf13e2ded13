"""The weights download path of sdgen.weights, hermetic: a local HTTP server, caches in tmp.

Nothing here reaches the network or the user's real caches: every test runs with
SDGEN_CACHE, KERAS_HOME and HOME inside ``tmp_path`` and files served from 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from local_server import sha256

from sdgen.errors import ChecksumError, WeightsError
from sdgen.spec import ModelSpec, WeightFile
from sdgen.weights import cache_dir, resolve_file, resolve_weights

MODEL = "test-model"
# three files, one larger than the 1 MiB download chunk so progress is reported in steps
SIZES = {"text_encoder": 2_500_000, "diffusion_model": 4096, "decoder": 123}
FILENAMES = {
    "text_encoder": "enc.h5",
    "diffusion_model": "unet.h5",
    "decoder": "dec.h5",
}


def closed_port_url(path: str = "") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def model_spec(*files: WeightFile) -> ModelSpec:
    return ModelSpec(
        name=MODEL, family="tiny", default_size=128, description="test", files=tuple(files)
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Point every cache sdgen and Keras use into tmp_path; no mirror."""
    paths = {
        "SDGEN_CACHE": tmp_path / "cache",
        "KERAS_HOME": tmp_path / "keras",
        "HOME": tmp_path / "home",
    }
    for name, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.delenv("SDGEN_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return paths


@pytest.fixture
def published(server):
    """Three random files on the server and the spec that publishes them."""
    contents = {role: os.urandom(size) for role, size in SIZES.items()}
    files = []
    for role, data in contents.items():
        weight = server.serve(FILENAMES[role], data)
        files.append(WeightFile(role, weight.filename, weight.url, weight.sha256))
    return model_spec(*files), contents


def model_cache() -> Path:
    return cache_dir() / "weights" / MODEL


# -- downloads ------------------------------------------------------------------------------


def test_download_fills_the_cache_and_reports_progress(env, server, published):
    spec, contents = published
    calls = []
    paths = resolve_weights(spec, progress=lambda *args: calls.append(args))

    assert cache_dir() == env["SDGEN_CACHE"]
    assert set(paths) == set(SIZES)
    for role, path in paths.items():
        assert path == model_cache() / FILENAMES[role]
        assert path.read_bytes() == contents[role]
        reports = [(done, total) for name, done, total in calls if name == FILENAMES[role]]
        assert reports, f"no progress for {role}"
        done = [d for d, _ in reports]
        assert done == sorted(set(done)), "byte counts must strictly increase"
        assert done[-1] == SIZES[role]
        assert {total for _, total in reports} == {SIZES[role]}
    big = [c for c in calls if c[0] == FILENAMES["text_encoder"]]
    assert len(big) >= 3  # 2.5 MB in 1 MiB chunks
    assert sorted(server.requests) == sorted(f"/{name}" for name in FILENAMES.values())
    assert not list(env["SDGEN_CACHE"].rglob("*.part"))
    assert files_under(model_cache()) == sorted(paths.values())


def test_second_call_uses_the_cache_without_downloading(env, server, published):
    spec, contents = published
    first = resolve_weights(spec)
    requests = len(server.requests)
    calls = []
    second = resolve_weights(spec, progress=lambda *args: calls.append(args))
    assert second == first
    assert len(server.requests) == requests
    assert calls == []
    # also offline, and with the server gone
    server.close()
    assert resolve_weights(spec, offline=True) == first
    for role, path in second.items():
        assert path.read_bytes() == contents[role]


def test_wrong_sha256_is_refused_and_not_cached(env, server):
    served = server.serve("model.h5", os.urandom(5000))
    expected = sha256(b"the bytes the spec promises")
    weight = WeightFile("text_encoder", "model.h5", served.url, expected)
    with pytest.raises(ChecksumError) as info:
        resolve_weights(model_spec(weight))
    message = str(info.value)
    assert "sha256" in message
    assert expected in message
    assert files_under(env["SDGEN_CACHE"]) == []


def test_offline_with_nothing_cached_names_the_file_and_the_folders(env, server, published):
    spec, _ = published
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, offline=True)
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert FILENAMES["text_encoder"] in message
    assert str(model_cache()) in message
    assert str(env["KERAS_HOME"] / "datasets") in message
    assert str(env["HOME"] / ".keras" / "datasets") in message
    assert "--weights" in message
    assert server.requests == []


def test_unreachable_server(env):
    weight = WeightFile("text_encoder", "model.h5", closed_port_url("model.h5"), sha256(b"x"))
    with pytest.raises(WeightsError) as info:
        resolve_weights(model_spec(weight))
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert "model.h5" in message
    assert "--weights" in message
    assert files_under(env["SDGEN_CACHE"]) == []


def test_missing_file_on_the_server(env, server):
    weight = WeightFile("text_encoder", "model.h5", server.url("model.h5"), sha256(b"x"))
    with pytest.raises(WeightsError) as info:
        resolve_weights(model_spec(weight))
    assert "model.h5" in str(info.value)
    assert "--weights" in str(info.value)
    assert files_under(env["SDGEN_CACHE"]) == []


def test_truncated_download_is_not_cached(env, server):
    data = os.urandom(3000)
    server.serve("model.h5", data)
    weight = WeightFile("text_encoder", "model.h5", server.url("truncated/model.h5"), sha256(data))
    with pytest.raises(WeightsError) as info:
        resolve_weights(model_spec(weight))
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert "model.h5" in message
    assert "--weights" in message
    assert server.requests == ["/truncated/model.h5"]
    assert files_under(env["SDGEN_CACHE"]) == []


def test_mirror_replaces_the_published_url(env, server, monkeypatch):
    data = os.urandom(2000)
    server.serve("model.h5", data)
    weight = WeightFile("text_encoder", "model.h5", closed_port_url("model.h5"), sha256(data))
    monkeypatch.setenv("SDGEN_WEIGHTS_MIRROR", server.base + "/")
    paths = resolve_weights(model_spec(weight))
    assert paths["text_encoder"] == model_cache() / "model.h5"
    assert paths["text_encoder"].read_bytes() == data
    assert server.requests == ["/model.h5"]


# -- caches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keras_dir", ["KERAS_HOME", "HOME"])
def test_keras_cache_is_reused(env, server, keras_dir):
    data = os.urandom(1000)
    weight = WeightFile("text_encoder", "model.h5", server.url("model.h5"), sha256(data))
    folder = env[keras_dir] / ("datasets" if keras_dir == "KERAS_HOME" else ".keras/datasets")
    folder.mkdir(parents=True)
    (folder / "model.h5").write_bytes(data)
    for offline in (True, False):
        paths = resolve_weights(model_spec(weight), offline=offline)
        assert paths == {"text_encoder": folder / "model.h5"}
    assert server.requests == []
    assert not model_cache().exists()


@pytest.mark.parametrize("offline", [True, False])
def test_corrupt_file_in_the_keras_cache_is_refused(env, server, offline):
    data = os.urandom(1000)
    server.serve("model.h5", data)
    weight = WeightFile("text_encoder", "model.h5", server.url("model.h5"), sha256(data))
    folder = env["KERAS_HOME"] / "datasets"
    folder.mkdir()
    (folder / "model.h5").write_bytes(b"not the published file")
    with pytest.raises(ChecksumError) as info:
        resolve_weights(model_spec(weight), offline=offline)
    assert str(folder / "model.h5") in str(info.value)
    assert "sha256" in str(info.value)


def test_cached_file_changed_after_verification_is_refused(env, server):
    data = os.urandom(1000)
    weight = server.serve("model.h5", data)
    path = resolve_file(model_spec(weight), weight)
    corrupted = bytes([data[0] ^ 0xFF]) + data[1:]  # same size
    path.write_bytes(corrupted)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ChecksumError):
        resolve_file(model_spec(weight), weight, offline=True)


def test_weights_dir_missing_file(env, server, published, tmp_path):
    spec, _ = published
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, weights_dir=folder)
    message = str(info.value)
    assert FILENAMES["text_encoder"] in message
    assert str(folder) in message
    assert server.requests == []


def test_weights_dir_files_are_taken_as_they_are(env, server, published, tmp_path):
    spec, _ = published
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in FILENAMES.values():
        (folder / name).write_bytes(b"the user's own file, not the published one")
    paths = resolve_weights(spec, weights_dir=folder, offline=True)
    assert paths == {role: folder / name for role, name in FILENAMES.items()}
    assert server.requests == []
    assert files_under(env["SDGEN_CACHE"]) == []


def test_weights_dir_for_a_model_without_files_uses_keras_cv_names(env, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    assert resolve_weights(model_spec()) == {}
    with pytest.raises(WeightsError, match=r"kcv_encoder\.h5"):
        resolve_weights(model_spec(), weights_dir=folder)
    for name in ("kcv_encoder.h5", "kcv_diffusion_model.h5", "kcv_decoder.h5"):
        (folder / name).write_bytes(b"x")
    paths = resolve_weights(model_spec(), weights_dir=folder)
    assert paths["diffusion_model"] == folder / "kcv_diffusion_model.h5"


# -- the CLI --------------------------------------------------------------------------------


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDGEN_WEIGHTS_MIRROR",)}
    for name, sub in (("SDGEN_CACHE", "cache"), ("KERAS_HOME", "keras"), ("HOME", "home")):
        env[name] = str(tmp_path / sub)
    env.pop("XDG_CACHE_HOME", None)
    env.update(extra)
    return env


def _run_cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdgen", "a cat", "--model", "sd-v1.4", *args],
        env=_cli_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(stderr: str) -> str:
    """The one ``Error:`` line; only sdgen's progress notices may come before it."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert lines and lines[-1].startswith("Error:"), stderr
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]]
    assert all(
        line == lines[-1] or line.startswith(("loading ", "downloading ")) for line in lines
    ), stderr
    return lines[-1]


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_offline_without_weights(env, tmp_path, quiet):
    result = _run_cli(
        tmp_path, "--offline", "--outdir", str(tmp_path / "out"), *(["--quiet"] if quiet else [])
    )
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr)
    if quiet:
        assert result.stderr.strip() == line
    assert "kcv_encoder.h5" in line
    assert "--weights" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_refuses_a_mirror_file_with_the_wrong_sha256(env, tmp_path, server, quiet):
    server.serve("kcv_encoder.h5", os.urandom(4096))
    result = _run_cli(
        tmp_path,
        "--outdir",
        str(tmp_path / "out"),
        *(["--quiet"] if quiet else []),
        SDGEN_WEIGHTS_MIRROR=server.base,
    )
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr)
    if quiet:
        assert result.stderr.strip() == line
    assert "sha256" in line
    assert server.requests == ["/kcv_encoder.h5"]
    cached = [p.name for p in files_under(tmp_path / "cache")]
    assert not any("kcv_encoder.h5" in name for name in cached), cached

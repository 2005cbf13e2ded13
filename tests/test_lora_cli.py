"""LoRAs from the command line, prompt tags, prompts files and Python: the real CLI on the
tiny model, with small random kohya-format LoRAs written here with the tiny model's own
key names (``sdgen.convert.name_index``), so each merge really changes its weights.

What is checked: a LoRA changes the image; weight 0 is no LoRA; a tag and ``--lora``
give the same image; the lines of a prompts file that switch LoRAs each get the image
they get alone (a line without one after a line with one too); the infotext's ``Lora
hashes`` and the manifest's records; the resume identity; and every bad input of issue
13 gets exit status 2, one line, and no file.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

from sdgen.output.info import read_parameters
from sdgen.output.manifest import read_manifest
from sdgen.output.png import read_infotext

SEED = ["--seed", "7"]


def _targets(count_te=2, count_unet=6):
    """Some of the tiny model's linear weights, as (kohya module name, torch shape)."""
    from sdgen.convert import name_index

    index = name_index("diffusers", "tiny")
    te, unet = [], []
    for key, slots in sorted(index.items()):
        shape = slots[0].param.shape
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        torch_shape = (shape[1], shape[0])  # keras Dense kernels are (in, out)
        stem = key[: -len(".weight")]
        if stem.startswith("text_encoder.") and ("q_proj" in stem or "v_proj" in stem):
            te.append(("lora_te_" + stem[len("text_encoder.") :].replace(".", "_"), torch_shape))
        elif stem.startswith("unet.") and ("to_q" in stem or "to_v" in stem):
            unet.append(("lora_unet_" + stem[len("unet.") :].replace(".", "_"), torch_shape))
    return te[:count_te] + unet[:count_unet]


def write_lora(path, seed=0, rank=4, scale=0.5, nan=False):
    """A random kohya LoRA (``lora_down``/``lora_up``/``alpha``) for the tiny model."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (out_dim, in_dim) in _targets():
        tensors[f"{name}.lora_down.weight"] = (scale * rng.standard_normal((rank, in_dim))).astype(
            np.float32
        )
        tensors[f"{name}.lora_up.weight"] = (scale * rng.standard_normal((out_dim, rank))).astype(
            np.float32
        )
        tensors[f"{name}.alpha"] = np.array(rank, np.float32)
    if nan:
        first = next(iter(tensors))
        tensors[first][0, 0] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


@pytest.fixture
def loras(tmp_path):
    """``$SDGEN_HOME/loras`` (the default folder) with ``style`` and ``other``."""
    folder = tmp_path / "sdgen-home" / "loras"
    write_lora(folder / "style.safetensors", seed=1)
    write_lora(folder / "other.safetensors", seed=2)
    return folder


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def made(run_cli, out, *args):
    result = run_cli(*args, *FAST, *SEED, "--out", out)
    assert result.exit_code == 0, result.stderr
    return pixels(out)


def test_a_lora_changes_the_image_weight_0_is_none_and_a_tag_is_the_flag(run_cli, loras, hermetic):
    from sdgen.adapters.lora.uses import a1111_hash

    plain = made(run_cli, "plain.png", "a castle")
    flag = made(run_cli, "flag.png", "a castle", "--lora", "style:0.8")
    tag = made(run_cli, "tag.png", "a castle <lora:style:0.8>")
    zero = made(run_cli, "zero.png", "a castle", "--lora", "style:0")
    back = made(run_cli, "back.png", "a castle")  # restored after the merges
    assert np.abs(flag - plain).mean() > 1, "the LoRA changed nothing"
    assert np.array_equal(tag, flag)
    assert np.array_equal(zero, plain) and np.array_equal(back, plain)
    named = made(run_cli, "named.png", "a castle <lora:style:te=0.8:unet=0.8>")
    assert np.array_equal(named, flag)
    te_only = made(run_cli, "te.png", "a castle <lora:style:0.8:0>")
    assert not np.array_equal(te_only, plain) and not np.array_equal(te_only, flag)

    info = read_parameters(hermetic / "tag.png")
    assert info.prompt == "a castle <lora:style:0.8>"  # the tag stays in the record
    shorthash = a1111_hash(loras / "style.safetensors")[:12]
    assert f'Lora hashes: "style: {shorthash}"' in read_infotext(hermetic / "tag.png")
    records = [json.loads(line) for line in (hermetic / "manifest.jsonl").read_text().splitlines()]
    record = next(r for r in records if r["file"] == "flag.png")
    import hashlib

    sha256 = hashlib.sha256((loras / "style.safetensors").read_bytes()).hexdigest()
    assert record["loras"] == [{"name": "style", "sha256": sha256, "te": 0.8, "unet": 0.8}]
    assert record["lora_files"]["style"]["file"] == str(loras / "style.safetensors")
    plain_record = next(r for r in records if r["file"] == "plain.png")
    assert "loras" not in plain_record
    assert "Lora hashes" not in read_infotext(hermetic / "plain.png")
    again = run_cli("again", "tag.png", "--out", "again.png")  # finds style by its tag
    assert again.exit_code == 0 and "ignored" not in again.stderr, again.stderr
    assert np.array_equal(pixels("again.png"), tag)
    assert 'Lora options: "style:0.8"' in read_infotext(hermetic / "flag.png")
    again = run_cli("again", "flag.png", "--out", "again-flag.png")  # --lora: from the infotext
    assert again.exit_code == 0 and "ignored" not in again.stderr, again.stderr
    assert np.array_equal(pixels("again-flag.png"), flag)
    (loras / "style.safetensors").rename(loras / "renamed.safetensors")
    moved = run_cli("again", "tag.png", "--out", "moved.png")
    assert moved.exit_code == 2, moved.stderr
    assert "renamed.safetensors has that hash" in moved.stderr


def test_prompts_file_lines_that_switch_loras_each_get_their_own_image(run_cli, loras, hermetic):
    lines = [
        "a castle <lora:style:0.8>",
        '{"prompt": "a castle", "loras": ["other:0.5"]}',
        "a castle",
        "--prompt a castle --lora style:0.8 other:0.5",
        '{"prompt": "a castle", "lora": {"name": "style", "weight": 0.8}}',
    ]
    (hermetic / "prompts.txt").write_text("\n".join(lines) + "\n")
    result = run_cli("--prompts-file", "prompts.txt", *FAST, *SEED, "--outdir", "batch")
    assert result.exit_code == 0, result.stderr
    records = read_manifest(hermetic / "batch")
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    images = [pixels(hermetic / "batch" / r["file"]) for r in records]
    alone = [
        made(run_cli, "1.png", "a castle", "--lora", "style:0.8"),
        made(run_cli, "2.png", "a castle", "--lora", "other:0.5"),
        made(run_cli, "3.png", "a castle"),
        made(run_cli, "4.png", "a castle", "--lora", "style:0.8", "--lora", "other:0.5"),
    ]
    for line, (image, expected) in enumerate(zip(images, [*alone, alone[0]], strict=True), start=1):
        assert np.array_equal(image, expected), f"line {line}"
    assert len({image.tobytes() for image in alone}) == 4


def test_the_resume_identity_holds_the_lora_file_and_weights(run_cli, loras, hermetic):
    args = ["a castle <lora:style:0.8>", *FAST, *SEED]
    assert run_cli(*args).exit_code == 0
    assert "skipped 1" in run_cli(*args).stderr
    reweighted = run_cli("a castle <lora:style:0.8>", "--lora", "style:0.1", *FAST, *SEED)
    assert reweighted.exit_code == 0 and "[1/1] " in reweighted.stderr, reweighted.stderr
    write_lora(loras / "style.safetensors", seed=9)  # the same name, another file
    changed = run_cli(*args)
    assert changed.exit_code == 0 and "[1/1] " in changed.stderr, changed.stderr
    assert "skipped 1" in run_cli(*args).stderr


def test_python_api_and_models_list(loras, run_cli, hermetic):
    from sdgen import GenerationConfig
    from sdgen.pipeline import load_pipeline

    pipeline = load_pipeline("tiny", width=64, height=64, lora_dir=loras)
    base = GenerationConfig(prompt="a castle", steps=2, width=64, height=64, seed=7)
    plain = pipeline.generate(base)[0].pixels
    from dataclasses import replace

    merged = pipeline.generate(replace(base, loras=("style:0.8",)))[0].pixels
    tagged = pipeline.generate(replace(base, prompt="a castle <lora:style:0.8>"))[0].pixels
    assert not np.array_equal(plain, merged) and np.array_equal(merged, tagged)
    assert np.array_equal(pipeline.generate(base)[0].pixels, plain)

    listed = run_cli("models", "--json")
    assert listed.exit_code == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["loras_folder"] == str(loras)
    rows = {row["name"]: row for row in data["loras"]}
    assert rows["style"]["rank"] == 4 and rows["style"]["error"] is None
    assert "style" in run_cli("models").stdout


def _pickle_lora(path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps({"lora_unet_x.lora_down.weight": Evil()}))
    return path


@pytest.mark.parametrize(
    ("setup", "args", "fragment"),
    [
        (None, ["--lora", "nosuch"], "no LoRA named 'nosuch'"),
        (None, ["--lora", "style:abc"], "'abc' is not a number"),
        (None, ["<lora:style:x>"], "'x' is not a number"),
        (lambda f: write_lora(f / "broken.safetensors", nan=True), ["--lora", "broken"], "NaN"),
        (lambda f: _pickle_lora(f / "evil.pt"), ["--lora", "evil"], "evil.pt"),
        (lambda f: _wide_lora(f / "wide.safetensors"), ["--lora", "wide"], "wide.safetensors"),
        (lambda f: _not_a_lora(f / "plain.safetensors"), ["--lora", "plain"], "plain.safetensors"),
    ],
    ids=["missing", "weight", "tag-weight", "nan", "pickle", "other-size", "not-a-lora"],
)
def test_bad_loras_are_one_line_exit_2_and_no_file(run_cli, loras, hermetic, setup, args, fragment):
    if setup is not None:
        setup(loras)
    prompt = [a for a in args if a.startswith("<")]
    flags = [a for a in args if not a.startswith("<")]
    result = run_cli(f"a castle {' '.join(prompt)}".strip(), *flags, *FAST, *SEED)
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "pwned" not in result.stdout
    assert not list(hermetic.rglob("*.png"))


def test_a_bad_lora_fails_only_its_line(run_cli, loras, hermetic):
    (hermetic / "prompts.txt").write_text("a castle <lora:nosuch>\na castle <lora:style>\n")
    result = run_cli("--prompts-file", "prompts.txt", *FAST, *SEED)
    assert result.exit_code == 3, result.stderr
    assert "line 1: no LoRA named 'nosuch'" in result.stderr
    assert len(list((hermetic / "outputs").glob("*.png"))) == 1


def test_negative_prompt_tags_are_ignored_with_a_warning(run_cli, loras):
    plain = made(run_cli, "plain.png", "a castle", "--negative-prompt", "blurry")
    result = run_cli(
        "a castle", "--negative-prompt", "blurry <lora:style:1>", *FAST, *SEED, "--out", "neg.png"
    )
    assert result.exit_code == 0, result.stderr
    assert "LoRA tags in the negative prompt are ignored" in result.stderr
    assert np.array_equal(pixels("neg.png"), plain)


def _wide_lora(path):
    """A LoRA for a wider model (SD 1.x's 320-wide first level): the wrong shapes."""
    from safetensors.numpy import save_file

    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {
            f"{name}.lora_down.weight": np.ones((4, 320), np.float32),
            f"{name}.lora_up.weight": np.ones((320, 4), np.float32),
        },
        str(path),
    )
    return path


def _not_a_lora(path):
    from safetensors.numpy import save_file

    save_file({"model.diffusion_model.weird": np.ones((2, 2), np.float32)}, str(path))
    return path


def test_a_lora_sweep_gives_each_cell_its_lora(run_cli, loras, hermetic):
    result = run_cli("a castle", "--sweep", "lora=style:0.8,none", *FAST, *SEED)
    assert result.exit_code == 0, result.stderr
    records = [r for r in read_manifest(hermetic / "outputs") if "sweep" in r]
    images = {r.get("loras", [{}])[0].get("te"): r for r in records}
    assert set(images) == {0.8, None}
    flag = made(run_cli, "flag.png", "a castle", "--lora", "style:0.8")
    plain = made(run_cli, "plain.png", "a castle")
    assert np.array_equal(pixels(hermetic / "outputs" / images[0.8]["file"]), flag)
    assert np.array_equal(pixels(hermetic / "outputs" / images[None]["file"]), plain)


@pytest.mark.slow  # converts the tiny model to OpenVINO: about two minutes
def test_openvino_merges_the_same_loras(run_cli, loras, hermetic):
    from sdgen.runtimes.openvino import OpenVinoBackend

    if not hasattr(OpenVinoBackend, "set_weight_deltas"):
        pytest.skip("the OpenVINO backend cannot merge LoRAs yet")
    pytest.importorskip("openvino")
    lines = ["a castle <lora:style:0.8>", "a castle", '{"prompt": "a castle", "lora": "other"}']
    (hermetic / "prompts.txt").write_text("\n".join(lines) + "\n")
    ov = ["--runtime", "openvino", *FAST, *SEED]
    result = run_cli("--prompts-file", "prompts.txt", *ov, "--outdir", "ov")
    assert result.exit_code == 0, result.stderr
    images = [pixels(hermetic / "ov" / r["file"]) for r in read_manifest(hermetic / "ov")]
    expected = [
        made(run_cli, "1.png", "a castle", "--lora", "style:0.8"),
        made(run_cli, "2.png", "a castle"),
        made(run_cli, "3.png", "a castle", "--lora", "other"),
    ]
    for line, (image, tensorflow) in enumerate(zip(images, expected, strict=True), start=1):
        assert np.abs(image - tensorflow).max() <= 2, f"line {line}"
    assert np.abs(images[0] - images[1]).mean() > 1


def test_a_preset_names_loras_and_help_shows_the_options(run_cli, loras, hermetic):
    (hermetic / "styled.toml").write_text(f'loras = ["style:0.8"]\nlora_dir = "{loras}"\n')
    preset = made(run_cli, "preset.png", "a castle", "--config", "styled.toml")
    assert np.array_equal(preset, made(run_cli, "flag.png", "a castle", "--lora", "style:0.8"))
    shown = run_cli("generate", "--help").stdout
    assert "--lora NAME_OR_PATH[:WEIGHT]" in shown and "--lora-dir" in shown

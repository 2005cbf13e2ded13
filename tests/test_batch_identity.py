"""Request identity: resuming over manifests written before a field existed, and
refusing to resume when a contributor's meaning changed."""

from __future__ import annotations

import json

from conftest import FAST, png_files

from sdgen.batch import identity
from sdgen.output.manifest import read_manifest
from sdgen.output.png import read_infotext

#: The keys of a manifest line as sdgen 0.1.0 wrote them, before identity contributors.
TODAYS_KEYS = {
    "prompt",
    "negative_prompt",
    "steps",
    "sampler",
    "sampler_label",
    "guidance_scale",
    "seed",
    "width",
    "height",
    "model",
    "version",
    "file",
    "sha256",
    "index",
    "line",
    "batch_size",
    "seconds",
    "load_seconds",
    "created",
}


#: The fields the text stage (emphasis, clip skip, embeddings) and the folder-wide
#: numbering added after 0.1.0.
TEXT_KEYS = ("prompt_syntax", "emphasis", "clip_skip", "embeddings", "number", "run_images")
#: the noise fields (``--rng``, variation seeds) came after 0.1.0 too
TEXT_KEYS += ("rng", "subseed", "subseed_strength", "seed_resize_from")


def _as_written_today(folder):
    """Rewrite the folder's manifest as sdgen 0.1.0 wrote it: without the text fields."""
    manifest = folder / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:
        for key in TEXT_KEYS:
            del record[key]
        assert set(record) == TODAYS_KEYS
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def test_a_manifest_in_todays_format_still_resumes(run_cli, hermetic):
    (hermetic / "p.txt").write_text("a cat\n--prompt a dog --n_iter 2\n")
    args = ["--prompts-file", "p.txt", *FAST]
    first = run_cli(*args)  # random seeds: a resume must find them in the manifest
    assert first.exit_code == 0, first.stderr
    outputs = hermetic / "outputs"
    made = {p.name: p.read_bytes() for p in png_files(outputs)}
    _as_written_today(outputs)
    manifest = outputs / "manifest.jsonl"  # killed before its last image
    lines = manifest.read_text().splitlines()
    (outputs / json.loads(lines[-1])["file"]).unlink()
    manifest.write_text("".join(line + "\n" for line in lines[:-1]))
    again = run_cli(*args)
    assert again.exit_code == 0, again.stderr
    assert "done 1, skipped 2, failed 0" in again.stderr
    assert {p.name: p.read_bytes() for p in png_files(outputs)} == made
    # matched by the manifest itself, not recovered from the PNGs' infotext
    assert len(manifest.read_text().splitlines()) == 3


def test_a_weighted_prompt_made_before_the_syntax_is_new_work_not_a_resume(run_cli, hermetic):
    """0.1.0 read ``(cat:1.2)`` as plain text; today it is a weight, so an image that
    version made is not what these settings make: refused, then remade on request."""
    args = ["a (cat:1.2)", *FAST, "--seed", "5"]
    assert run_cli(*args, "--emphasis", "off").exit_code == 0  # what 0.1.0 made
    _as_written_today(hermetic / "outputs")
    assert "skipped 1" in run_cli(*args, "--emphasis", "off").stderr
    remade = run_cli(*args)  # not what these settings make: new work, the old file kept
    assert remade.exit_code == 0 and "[1/1] " in remade.stderr, remade.stderr
    assert read_manifest(hermetic / "outputs")[-1]["prompt_syntax"] == "a1111-original"
    assert "skipped 1" in run_cli(*args).stderr  # and that resumes in turn
    # another emphasis mode is other work again; the infotext says which, as A1111's does
    assert run_cli(*args, "--emphasis", "no-norm").exit_code == 0
    paths = png_files(hermetic / "outputs")
    assert len(paths) == 3 and "Emphasis: No norm" in read_infotext(paths[-1])


def test_a_plain_prompt_made_before_the_syntax_still_resumes(run_cli, hermetic):
    """Without brackets the syntax changes nothing, so 0.1.0's image is today's work."""
    args = ["a cat, on a chair", *FAST, "--seed", "5"]
    assert run_cli(*args).exit_code == 0
    _as_written_today(hermetic / "outputs")
    assert "skipped 1" in run_cli(*args).stderr
    changed = run_cli(*args, "--clip-skip", "2")  # clip skip is identity
    assert changed.exit_code == 0 and "[1/1] " in changed.stderr, changed.stderr
    assert "Clip skip: 2" in read_infotext(png_files(hermetic / "outputs")[-1])


def test_a_new_contributor_keeps_old_records_resuming_at_its_legacy_value(
    run_cli, hermetic, monkeypatch
):
    args = ["a cat", *FAST, "--seed", "2"]
    assert run_cli(*args).exit_code == 0
    monkeypatch.setattr(identity, "CONTRIBUTORS", list(identity.CONTRIBUTORS))
    adapters = {"value": []}
    identity.register(
        identity.Contributor(
            "adapters",
            lambda image: {"adapters": adapters["value"]},
            identity=("adapters",),
            legacy={"adapters": []},
            infotext=lambda fields: (
                {"Lora": " ".join(fields["adapters"])} if fields.get("adapters") else {}
            ),
        )
    )
    assert "adapters" in identity.identity_keys()
    assert "skipped 1" in run_cli(*args).stderr  # no adapters: what the old image had
    adapters["value"] = ["style"]
    changed = run_cli(*args)
    assert changed.exit_code == 0, changed.stderr
    assert "already made" not in changed.stderr and "[1/1] " in changed.stderr
    assert read_manifest(hermetic / "outputs")[-1]["adapters"] == ["style"]
    assert "Lora: style" in read_infotext(png_files(hermetic / "outputs")[-1])

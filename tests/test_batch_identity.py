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


def _as_written_today(folder):
    """Rewrite the folder's manifest as today's code wrote it: no prompt_syntax field."""
    manifest = folder / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert all(record["prompt_syntax"] == "plain" for record in records)
    for record in records:
        del record["prompt_syntax"]
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
    again = run_cli(*args)
    assert again.exit_code == 0, again.stderr
    assert "done 0, skipped 3, failed 0" in again.stderr
    assert {p.name: p.read_bytes() for p in png_files(outputs)} == made
    # matched by the manifest itself, not recovered from the PNGs' infotext
    assert len((outputs / "manifest.jsonl").read_text().splitlines()) == 3


def test_a_changed_prompt_syntax_is_new_work_not_a_resume(run_cli, hermetic, monkeypatch):
    args = ["a (cat:1.2)", *FAST, "--seed", "5"]
    assert run_cli(*args).exit_code == 0
    _as_written_today(hermetic / "outputs")
    monkeypatch.setattr(identity, "PROMPT_SYNTAX", "weighted")
    refused = run_cli(*args)  # the file is not what these settings would make
    assert refused.exit_code == 2 and "already exists" in refused.stderr
    remade = run_cli(*args, "--overwrite")
    assert remade.exit_code == 0, remade.stderr
    [path] = png_files(hermetic / "outputs")
    assert "Prompt syntax: weighted" in read_infotext(path)
    assert read_manifest(hermetic / "outputs")[-1]["prompt_syntax"] == "weighted"
    assert "skipped 1" in run_cli(*args).stderr  # and that resumes in turn


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
    changed = run_cli(*args, "--overwrite")
    assert changed.exit_code == 0, changed.stderr
    assert "already made" not in changed.stderr and "[1/1] " in changed.stderr
    assert read_manifest(hermetic / "outputs")[-1]["adapters"] == ["style"]
    assert "Lora: style" in read_infotext(png_files(hermetic / "outputs")[0])

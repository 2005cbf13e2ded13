"""Two shard processes writing into one folder at the same time: a manifest each, merged
on read, every PNG once, a contact sheet showing both shards' images, and a resume."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import FAST, pixels, png_files

from sdgen.output.manifest import read_manifest
from sdgen.output.png import parse_infotext, read_infotext


def test_two_concurrent_shards_share_one_folder(hermetic, run_cli):
    lines = [f"shard prompt {n}" for n in range(5)] + ["--prompt last one --n_iter 2"]
    (hermetic / "p.txt").write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "sdgen", "--prompts-file", "p.txt", *FAST, "--seed", "3"]
    processes = [
        subprocess.Popen(
            [*command, "--shard", shard],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in ("1/2", "2/2")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    outputs = hermetic / "outputs"
    manifests = sorted(p.name for p in outputs.glob("manifest*.jsonl"))
    assert manifests == ["manifest.shard-1-of-2.jsonl", "manifest.shard-2-of-2.jsonl"]
    shard_one = (outputs / manifests[0]).read_text().splitlines()
    assert len(shard_one) == 4 and all('"index": ' in line for line in shard_one)
    records = read_manifest(outputs)
    assert sorted(r["index"] for r in records) == list(range(7))
    for record in records:
        shard = 1 if record["index"] % 2 == 0 else 2
        assert (outputs / f"manifest.shard-{shard}-of-2.jsonl").read_text().count(
            f'"file": "{record["file"]}"'
        ) == 1
    pngs = png_files(outputs)
    assert sorted(p.name for p in pngs) == sorted(r["file"] for r in records)
    for record in records:
        path = outputs / record["file"]
        assert parse_infotext(read_infotext(path))["Seed"] == str(record["seed"])
        assert pixels(path).shape == (64, 64, 3)
    page = (outputs / "index.html").read_text("utf-8")
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(r["file"] for r in records)
    assert not [p for p in outputs.iterdir() if p.name.startswith(".")]  # no temporaries

    resumed = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "3")
    assert resumed.exit_code == 0, resumed.stderr
    assert "done 0, skipped 7, failed 0" in resumed.stderr
    again = run_cli("--prompts-file", "p.txt", *FAST, "--seed", "3", "--shard", "2/2")
    assert "done 0, skipped 3, failed 0" in again.stderr
    assert not (outputs / "manifest.jsonl").exists()  # a resume with nothing to do adds none

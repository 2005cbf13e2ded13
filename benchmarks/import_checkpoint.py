"""Time and peak memory of `sdgen import` on a full-size fp32 SD 1.5 checkpoint.

Builds a diffusers folder with SD 1.5's architecture and random fp32 weights (about 4 GB:
the size of an fp32 checkpoint), then runs `sdgen import` on it in a fresh process under
`/usr/bin/time -v` and prints wall time, peak RSS and peak RSS / checkpoint size.
Needs the reference extra (torch, diffusers, transformers).

    python benchmarks/import_checkpoint.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def build_folder(folder: Path) -> None:
    import torch
    from reference import sd_architectures as architectures

    torch.manual_seed(0)
    with torch.no_grad():
        architectures.text_encoder("sd15").save_pretrained(folder / "text_encoder")
        architectures.unet("sd15").save_pretrained(folder / "unet")
        architectures.vae().save_pretrained(folder / "vae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the checkpoint here and keep it")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="sdgen-import-bench-"))
    folder = args.keep or scratch / "sd15-fp32"
    if not (folder / "unet").exists():
        build_folder(folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    env = {**os.environ, "SDGEN_HOME": str(scratch / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "sdgen",
        "import",
        str(folder),
        "--name",
        "bench",
        "--quiet",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr)[
        1
    ]
    print(f"checkpoint: {size / 1e9:.2f} GB fp32 diffusers folder (SD 1.5 architecture)")
    print(
        f"sdgen import: wall {wall}, peak RSS {peak_kb / 1e6:.2f} GB, "
        f"{peak_kb * 1e3 / size:.2f}x the checkpoint"
    )
    subprocess.run(["rm", "-rf", str(scratch)], check=False)


if __name__ == "__main__":
    main()

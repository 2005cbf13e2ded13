"""End to end: sdgen against keras_cv's ``text_to_image`` and diffusers' pipeline.

All three run the same random full-size SD 1.5 weights (fp32), at the same size, steps,
guidance (7.5) and batch (1), one fresh child process per row, one row at a time:

- the weights: diffusers' SD 1.5 architecture with random weights (``torch.manual_seed(0)``,
  see ``import_checkpoint.build_folder``) saved as a diffusers folder, then
  ``sdgen import FOLDER --name bench`` into ``SDGEN_HOME=BENCH_DIR``; keras_cv loads the
  keras_cv-layout .h5 files of that store entry and diffusers the folder itself. Both
  are built once into ``BENCH_DIR`` ($SDGEN_BENCH_DIR, else ~/.cache/sdgen-bench) and
  reused (about 4 GB for the folder, 4 GB for the store and 4 GB per size for OpenVINO's
  converted models in ``BENCH_DIR/cache``; the import peaks near 10 GB).
- sdgen: ``load_pipeline("bench", runtime=...)`` then ``Pipeline.generate`` (DDIM at
  ``--steps``, and DPM++ 2M Karras at ``--dpm-steps``, which reaches DDIM's quality in far
  fewer steps), for the TensorFlow runtime and, where ``openvino`` imports and
  ``load_pipeline`` takes ``runtime=``, the OpenVINO one.
- keras_cv: ``StableDiffusion(jit_compile=False).text_to_image`` (DDIM), its networks
  built with keras_cv's own classes and given the store's .h5 files, and sdgen's bundled
  tokenizer (nothing is downloaded).
- diffusers: ``StableDiffusionPipeline`` with ``DDIMScheduler`` in SD 1.5's configuration,
  no safety checker, a ``CLIPTokenizer`` written from sdgen's bundled BPE file (checked to
  give the same ids as sdgen's tokenizer), ``torch.set_num_threads(os.cpu_count())``.

What is measured, the same way for every system:

- s/image: wall time of one whole call (prompt encoding, denoising, decoding) for the
  last of ``--images`` images made one after another in the child; with 2 or more it is
  warm (tracing, graph building and allocation were paid by the first image).
- s/step: time between the first and the last step of that image divided by
  ``steps - 1``; each interval is one whole step (U-Net calls with guidance plus the
  sampler update). Steps end at sdgen's step callback, diffusers' ``callback_on_step_end``
  and, for keras_cv, which has no callback, at the return of the second (conditional)
  ``predict_on_batch`` U-Net call of each step. n/a with 1 step.
- cold start: wall time from the parent's ``Popen`` to the end of the first step of the
  first image, as the child reports it (``time.time()``): interpreter start, imports,
  weight loading, prompt encoding and the first (traced) step. For the OpenVINO runtime
  an untimed warm-up child runs first, so its cold start is a start from the converted,
  cached models.
- peak RSS: the child's maximum resident set size (``os.wait4``), each row on its own.

    python benchmarks/end_to_end.py --size 256 512 --steps 50 --dpm-steps 20 \
        [--systems sdgen-tf,sdgen-ov,keras_cv,diffusers] [--images 2]

Ratios are sdgen's s/image divided by the other system's (below 1: sdgen is faster); the
DPM++ rows are divided by the other systems' ``--steps`` DDIM rows. A row that fails (out
of memory, a missing feature) is printed with its error; the others still run. The table
at the end is Markdown, for the README. This is a benchmark, not a test: machines are
noisy, so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench"
FOLDER = "sd15-fp32"  # the diffusers folder inside the bench dir
TOKENIZER = "tokenizer"  # the transformers CLIPTokenizer files inside the bench dir
PROMPT = "photograph of an astronaut riding a horse"
GUIDANCE = 7.5
DPM = "dpmpp-2m-karras"
SYSTEMS = ("sdgen-tf", "sdgen-ov", "keras_cv", "diffusers")
RESULT = "RESULT "
TOKENIZER_CHECKS = (
    PROMPT,
    "A lighthouse on a cliff at dusk, 35mm, f/1.8 -- highly detailed!",
    "naïve café: ümlauts & emoji 🐎 (x2) [[brackets]] it's we'll",
)


# -- the shared weights ----------------------------------------------------------------------


def bench_dir(value: str | None) -> Path:
    if value:
        return Path(value).expanduser()
    if os.environ.get("SDGEN_BENCH_DIR"):
        return Path(os.environ["SDGEN_BENCH_DIR"]).expanduser()
    return Path.home() / ".cache" / "sdgen-bench"


def child_env(bench: Path) -> dict:
    return {
        **os.environ,
        "SDGEN_HOME": str(bench),
        "SDGEN_CACHE": str(bench / "cache"),  # OpenVINO's converted models, kept apart
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def prepare(bench: Path) -> None:
    """Build the diffusers folder, import it into sdgen's store and write the tokenizer
    files, each only if it is missing; then check the tokenizer in a child."""
    bench.mkdir(parents=True, exist_ok=True)
    folder = bench / FOLDER
    if not (folder / "unet").is_dir():
        say(f"building random SD 1.5 weights (fp32) into {folder} ...")
        began = time.perf_counter()
        partial = bench / f"{FOLDER}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        run_checked([sys.executable, __file__, "--build-folder", str(partial)], bench)
        os.replace(partial, folder)
        say(f"  built in {time.perf_counter() - began:.0f} s")
    if not (bench / "models" / MODEL / "model.json").is_file():
        say(f"importing it into sdgen's store ({bench / 'models' / MODEL}) ...")
        began = time.perf_counter()
        command = [sys.executable, "-m", "sdgen", "import", str(folder), "--name", MODEL]
        run_checked([*command, "--quiet"], bench)
        say(f"  imported in {time.perf_counter() - began:.0f} s")
    if not (bench / TOKENIZER / "tokenizer_config.json").is_file():
        write_tokenizer(bench / TOKENIZER)
    run_checked([sys.executable, __file__, "--check-tokenizer", str(bench)], bench)


def run_checked(command: list[str], bench: Path) -> None:
    result = subprocess.run(command, env=child_env(bench), cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout}{result.stderr}")


def build_folder(target: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(ROOT / "tests"))
    from import_checkpoint import build_folder as build

    build(target)


def write_tokenizer(target: Path) -> None:
    """transformers' CLIPTokenizer files from sdgen's bundled BPE file: the vocabulary
    is sdgen's tokenizer's (49408 ids) and the merges are the file's lines after its
    header, in rank order."""
    from sdgen.text.tokenizer import VOCABULARY_PATH, ClipTokenizer

    vocab = ClipTokenizer().ids
    with gzip.open(VOCABULARY_PATH, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    assert len(vocab) == 49408, len(vocab)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (partial / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (partial / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def check_tokenizer(bench: Path) -> None:
    from transformers import CLIPTokenizer

    from sdgen.text.tokenizer import load_tokenizer

    theirs = CLIPTokenizer.from_pretrained(str(bench / TOKENIZER), local_files_only=True)
    ours = load_tokenizer()
    assert theirs.model_max_length == 77, theirs.model_max_length
    for text in TOKENIZER_CHECKS:
        expected, got = ours.encode(text), theirs(text).input_ids
        if expected != got:
            sys.exit(f"tokenizers disagree on {text!r}:\nsdgen     {expected}\ndiffusers {got}")


# -- children ------------------------------------------------------------------------------


class Clock:
    """perf_counter for durations, converted to wall-clock time for the cold start."""

    def __init__(self):
        self.offset = time.time() - time.perf_counter()
        self.first_step = None  # wall-clock time at the end of the first step

    def stamp(self, stamps: list[float]) -> None:
        now = time.perf_counter()
        stamps.append(now)
        if self.first_step is None:
            self.first_step = now + self.offset


def run_child(spec: dict) -> dict:
    clock = Clock()
    runner = {"sdgen": child_sdgen, "keras_cv": child_keras_cv, "diffusers": child_diffusers}
    image_seconds, stamps = runner[spec["system"]](spec, clock)
    steps = spec["steps"]
    if len(stamps) != steps:
        raise RuntimeError(f"saw {len(stamps)} step ends in the last image, expected {steps}")
    return {
        "status": "ok",
        "image_seconds": image_seconds,
        "step_seconds": (stamps[-1] - stamps[0]) / (steps - 1) if steps > 1 else None,
        "first_step_time": clock.first_step,
    }


class Skip(Exception):
    """The row cannot run here (a missing feature), which is not a failure."""


def child_sdgen(spec: dict, clock: Clock):
    import inspect

    from sdgen.config import GenerationConfig
    from sdgen.pipeline import load_pipeline

    size, runtime = spec["size"], spec["runtime"]
    kwargs = {}
    if "runtime" in inspect.signature(load_pipeline).parameters:
        kwargs["runtime"] = runtime
    elif runtime != "tensorflow":
        raise Skip("load_pipeline() takes no runtime= yet")
    if runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        raise Skip("openvino is not installed")
    pipe = load_pipeline(MODEL, width=size, height=size, offline=True, **kwargs)
    image_seconds, stamps = [], []
    for index in range(spec["images"]):
        stamps = []
        config = GenerationConfig(
            prompt=spec["prompt"],
            steps=spec["steps"],
            sampler=spec["sampler"],
            seed=index,
            width=size,
            height=size,
            guidance_scale=GUIDANCE,
        )
        began = time.perf_counter()
        images = pipe.generate(config, callback=lambda *_, s=stamps: clock.stamp(s))
        image_seconds.append(time.perf_counter() - began)
        assert images[0].pixels.shape == (size, size, 3)
    return image_seconds, stamps


def child_keras_cv(spec: dict, clock: Clock):
    from keras_cv.models import StableDiffusion
    from keras_cv.models.stable_diffusion import Decoder, DiffusionModel, TextEncoder

    from sdgen.catalog import get_model_spec
    from sdgen.networks.h5 import load_weights
    from sdgen.text.tokenizer import load_tokenizer
    from sdgen.weights import resolve_weights

    size = spec["size"]
    paths = resolve_weights(get_model_spec(MODEL), offline=True)
    model = StableDiffusion(img_height=size, img_width=size, jit_compile=False)
    assert (model.img_height, model.img_width) == (size, size), "keras_cv rounded the size"
    # what the text_encoder / diffusion_model / decoder properties build, without the
    # download of keras_cv's published weights they would start
    model._text_encoder = TextEncoder(77, download_weights=False)
    model._diffusion_model = DiffusionModel(size, size, 77, download_weights=False)
    model._decoder = Decoder(size, size, download_weights=False)
    load_weights(model.text_encoder, paths["text_encoder"])
    load_weights(model.diffusion_model, paths["diffusion_model"])
    load_weights(model.decoder, paths["decoder"])
    model._tokenizer = load_tokenizer()

    # keras_cv has no step callback: a step ends when its second (conditional) U-Net
    # call returns; the guidance and DDIM update that follow are a few array operations
    unet = model.diffusion_model
    predict = unet.predict_on_batch
    calls = [0]
    stamps = []

    def timed_predict(inputs):
        output = predict(inputs)
        calls[0] += 1
        if calls[0] % 2 == 0:
            clock.stamp(stamps)
        return output

    unet.predict_on_batch = timed_predict
    image_seconds = []
    for index in range(spec["images"]):
        stamps.clear()
        began = time.perf_counter()
        images = model.text_to_image(
            spec["prompt"],
            num_steps=spec["steps"],
            unconditional_guidance_scale=GUIDANCE,
            batch_size=1,
            seed=index,
        )
        image_seconds.append(time.perf_counter() - began)
        assert images.shape == (1, size, size, 3)
    return image_seconds, list(stamps)


def child_diffusers(spec: dict, clock: Clock):
    import torch

    torch.set_num_threads(os.cpu_count())
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    size = spec["size"]
    bench = Path(spec["bench"])
    folder = bench / FOLDER
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(str(bench / TOKENIZER), local_files_only=True),
        unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    stamps = []

    def on_step_end(pipeline, step, timestep, tensors):
        clock.stamp(stamps)
        return tensors

    image_seconds = []
    with torch.inference_mode():
        for index in range(spec["images"]):
            stamps.clear()
            began = time.perf_counter()
            images = pipe(
                spec["prompt"],
                height=size,
                width=size,
                num_inference_steps=spec["steps"],
                guidance_scale=GUIDANCE,
                num_images_per_prompt=1,
                generator=torch.Generator("cpu").manual_seed(index),
                output_type="np",
                callback_on_step_end=on_step_end,
            ).images
            image_seconds.append(time.perf_counter() - began)
            assert images.shape == (1, size, size, 3)
    return image_seconds, list(stamps)


def child_main(spec: dict) -> None:
    """Run one row; progress bars and logs go to stderr, the one RESULT line to stdout."""
    stdout = sys.stdout
    sys.stdout = sys.stderr
    sys.path.insert(0, str(ROOT))
    try:
        result = run_child(spec)
    except Skip as reason:
        result = {"status": "skipped", "error": str(reason)}
    except BaseException as error:
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(error).__name__}: {error}"}
    stdout.write(RESULT + json.dumps(result) + "\n")
    stdout.flush()


# -- the parent -----------------------------------------------------------------------------


@dataclass
class Row:
    size: int
    system: str  # sdgen, keras_cv, diffusers
    label: str
    sampler: str
    steps: int
    runtime: str = "tensorflow"
    warm_up: bool = False
    result: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "ok"

    @property
    def image_seconds(self) -> float | None:
        return self.result["image_seconds"][-1] if self.ok else None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_row(row: Row, args, bench: Path) -> dict:
    """Run ``row`` in a fresh child; returns its result with cold start and peak RSS."""
    spec = {
        "system": row.system,
        "runtime": row.runtime,
        "sampler": row.sampler,
        "steps": row.steps,
        "size": row.size,
        "images": 1 if row.warm_up else args.images,
        "prompt": args.prompt,
        "bench": str(bench),
    }
    logs = bench / "logs"
    logs.mkdir(exist_ok=True)
    name = f"{row.size}-{row.system}-{row.runtime}-{row.sampler}{'-warmup' if row.warm_up else ''}"
    log_path = logs / f"{name}.log"
    with tempfile.TemporaryFile("w+") as out, open(log_path, "w") as err:
        started = time.time()
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=out,
            stderr=err,
            env=child_env(bench),
            cwd=ROOT,
        )
        status, usage, deadline = None, None, time.monotonic() + args.timeout
        while status is None:
            pid, wait_status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                status, usage = wait_status, rusage
            elif time.monotonic() > deadline:
                os.kill(process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                return {"status": "error", "error": f"timed out after {args.timeout} s"}
            else:
                time.sleep(0.2)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith(RESULT)]
    peak_gb = usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    if lines:
        result = json.loads(lines[-1][len(RESULT) :])
    else:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if code == -signal.SIGKILL:
            why += " (out of memory?)"
        result = {"status": "error", "error": f"{why}; {tail[0][:200]} (log: {log_path})"}
    result["peak_rss_gb"] = peak_gb
    if result.get("first_step_time") is not None:
        result["cold_start"] = result["first_step_time"] - started
    if result["status"] == "error":
        say(f"  failed: {result['error']} (log: {log_path})")
    return result


def plan(args) -> list[Row]:
    rows = []
    for size in args.size:
        if "keras_cv" in args.systems:
            rows.append(Row(size, "keras_cv", "keras_cv text_to_image", "ddim", args.steps))
        if "diffusers" in args.systems:
            rows.append(
                Row(size, "diffusers", "diffusers StableDiffusionPipeline", "ddim", args.steps)
            )
        for key, runtime, name in (
            ("sdgen-tf", "tensorflow", "sdgen, TensorFlow"),
            ("sdgen-ov", "openvino", "sdgen, OpenVINO"),
        ):
            if key not in args.systems:
                continue
            if runtime == "openvino":
                rows.append(Row(size, "sdgen", name, "ddim", 1, runtime, warm_up=True))
            rows.append(Row(size, "sdgen", name, "ddim", args.steps, runtime))
            rows.append(Row(size, "sdgen", name, DPM, args.dpm_steps, runtime))
    return rows


def describe_machine() -> str:
    from machine import cpu_model

    cpu = cpu_model()
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for label, names in (
        ("TensorFlow", ("tensorflow", "tensorflow-cpu")),
        ("Keras", ("keras",)),
        ("keras_cv", ("keras-cv",)),
        ("OpenVINO", ("openvino",)),
        ("torch", ("torch",)),
        ("diffusers", ("diffusers",)),
    ):
        for name in names:
            try:
                versions.append(f"{label} {importlib.metadata.version(name)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            versions.append(f"{label} not installed")
    return f"{cpu}, {cores} cores{memory}, Python {platform.python_version()}; " + ", ".join(
        versions
    )


def sampler_label(row: Row) -> str:
    name = {"ddim": "DDIM", DPM: "DPM++ 2M Karras"}.get(row.sampler, row.sampler)
    return f"{name}, {row.steps}"


def number(value, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[Row], args) -> list[str]:
    warm = f"image {args.images} of {args.images}" + (", warm" if args.images > 1 else ", cold")
    lines = [
        f"| size | system | sampler, steps | s/image ({warm}) | s/step | cold start to "
        "first step (s) | peak RSS (GB) | / keras_cv | / diffusers |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.warm_up:
            continue
        cells = [f"{row.size}x{row.size}", row.label, sampler_label(row)]
        if not row.ok:
            status = row.result.get("status", "error")
            error = row.result.get("error", "?").replace("|", "\\|")
            rss = row.result.get("peak_rss_gb")
            cells += [f"{status}: {error}", "", "", "" if rss is None else f"{rss:.2f}", "", ""]
        else:
            r = row.result
            cells += [
                number(row.image_seconds),
                number(r.get("step_seconds")),
                number(r.get("cold_start"), 1),
                number(r["peak_rss_gb"]),
            ]
            for other in ("keras_cv", "diffusers"):
                cells.append(ratio(row, rows, other))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio(row: Row, rows: list[Row], other: str) -> str:
    if row.system != "sdgen":
        return ""
    reference = next(
        (r for r in rows if r.system == other and r.size == row.size and r.sampler == "ddim"),
        None,
    )
    if reference is None or not reference.ok:
        return ""
    return f"{row.image_seconds / reference.image_seconds:.2f}"


def main() -> None:  # noqa: C901 (one branch per benchmark option)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[512], help="width = height")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps, every system")
    parser.add_argument("--dpm-steps", type=int, default=20, help=f"{DPM} steps (sdgen)")
    parser.add_argument("--images", type=int, default=2, help="images per child; last timed")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        help=f"comma-separated, from {','.join(SYSTEMS)} [all]",
    )
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--bench-dir", help="[$SDGEN_BENCH_DIR or ~/.cache/sdgen-bench]")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per child")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--build-folder", help=argparse.SUPPRESS)
    parser.add_argument("--check-tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(json.loads(args.child))
    if args.build_folder:
        return build_folder(Path(args.build_folder))
    if args.check_tokenizer:
        sys.path.insert(0, str(ROOT))
        return check_tokenizer(Path(args.check_tokenizer))

    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.steps < 1 or args.dpm_steps < 1 or args.images < 1:
        parser.error("--steps, --dpm-steps and --images must be at least 1")
    for size in args.size:
        # keras_cv rounds sizes to multiples of 128 without saying so
        if size < 128 or size % 128:
            parser.error(f"--size {size}: use a multiple of 128 (keras_cv's U-Net needs it)")

    bench = bench_dir(args.bench_dir)
    machine = describe_machine()
    say(f"machine: {machine}")
    say(f"bench dir: {bench}")
    prepare(bench)
    rows = plan(args)
    openvino_missing = importlib.util.find_spec("openvino") is None
    for number_, row in enumerate(rows, 1):
        what = f"{row.size}px {row.label}, {sampler_label(row)} steps"
        if row.runtime == "openvino":
            warm_up = next(r for r in rows if r.warm_up and r.size == row.size)
            if openvino_missing:
                row.result = {"status": "skipped", "error": "openvino is not installed"}
            elif not row.warm_up and warm_up.result.get("status") != "ok":
                row.result = {
                    "status": "skipped",
                    "error": f"the warm-up run failed: {warm_up.result.get('error')}",
                }
            if row.result:
                status, error = row.result["status"], row.result["error"]
                say(f"[{number_}/{len(rows)}] {what}: {status}: {error}")
                continue
        if row.warm_up:
            say(f"[{number_}/{len(rows)}] {what}: warm-up, converts and caches, not timed ...")
        else:
            say(f"[{number_}/{len(rows)}] {what}, {args.images} image(s) ...")
        row.result = run_row(row, args, bench)
        if row.ok:
            say(
                f"  {number(row.image_seconds)} s/image, "
                f"{number(row.result.get('step_seconds'))} s/step, "
                f"cold start {number(row.result.get('cold_start'), 1)} s, "
                f"peak RSS {row.result['peak_rss_gb']:.2f} GB"
            )

    print()
    print(
        f"End to end, SD 1.5 architecture with random fp32 weights, guidance {GUIDANCE}, "
        f"batch 1, prompt {args.prompt!r}."
    )
    print(f"Machine: {machine}.")
    print()
    for line in table(rows, args):
        print(line)
    print()
    print(
        f"s/image: the whole call for image {args.images} of {args.images} in one process "
        "(prompt, denoising, decoding)"
        + ("; warm." if args.images > 1 else "; with --images 1 it includes tracing: cold.")
    )
    print("s/step: first to last step end of that image / (steps - 1).")
    print(
        "Cold start: process start to the end of the first denoising step (keras_cv: return "
        "of step 1's conditional U-Net call); imports, weight loading and tracing included."
    )
    if any(r.runtime == "openvino" and r.ok for r in rows):
        print(
            "sdgen, OpenVINO: an untimed warm-up run converted and cached the models first, "
            "so its cold start is a start from that cache."
        )
    print(
        "/ keras_cv, / diffusers: sdgen's s/image divided by that system's at "
        f"{args.steps} DDIM steps (below 1: sdgen is faster); the DPM++ rows make "
        "an image of DDIM's quality in fewer steps."
    )
    print("Peak RSS: the child process's maximum resident set size (os.wait4).")


if __name__ == "__main__":
    main()

"""Peak memory of generating at two image sizes: weights copied per size vs shared.

Each approach runs in a subprocess of its own: full-size SD v1 networks (placeholder
weights, nothing downloaded) built for the first size, one image of one step at each
size in turn, and the process's peak resident set (``getrusage``'s ``ru_maxrss``) after
each. "copies" is what the TensorFlow runtime did before: a new size built another
U-Net and decoder and copied the weights in with ``set_weights(get_weights())``.
"shared" is what it does now: the new size's networks call the same layer objects.

    python benchmarks/memory_sizes.py                  # 512x512 then 576x576
    python benchmarks/memory_sizes.py --sizes 256 320  # quicker, smaller figures

Needs about 12 GB free at full size and a few minutes on two cores; run nothing else
beside it. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

APPROACHES = ("copies", "shared")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _child(approach: str, sizes: list[int], steps: int) -> None:
    from sdgen.catalog import get_model_spec
    from sdgen.config import GenerationConfig
    from sdgen.families import family_of
    from sdgen.pipeline import DeviceSettings, Pipeline
    from sdgen.runtimes.signature import NetworkSignature
    from sdgen.runtimes.tensorflow import TensorFlowBackend
    from sdgen.text.tokenizer import load_tokenizer

    class CopyingBackend(TensorFlowBackend):
        """The runtime as it was: another size builds and fills its own networks."""

        def diffusion_model_at(self, signature):
            if signature not in self._unets:
                unet = family.build("diffusion_model", self.spec, signature.height, signature.width)
                unet.set_weights(self.diffusion_model.get_weights())
                self._unets[signature] = unet
            return self._unets[signature]

        def decoder_at(self, height, width):
            if (height, width) not in self._decoders:
                decoder = family.build("decoder", self.spec, height, width)
                decoder.set_weights(self.decoder.get_weights())
                self._decoders[(height, width)] = decoder
            return self._decoders[(height, width)]

    spec = get_model_spec("sd-v1.4")
    family = family_of(spec)
    began = time.perf_counter()
    first = NetworkSignature(sizes[0], sizes[0])
    networks = [  # placeholder (zero) weights: the builders never draw random ones
        family.build(role, spec, first.height, first.width)
        for role in ("text_encoder", "diffusion_model", "decoder")
    ]
    backend_class = CopyingBackend if approach == "copies" else TensorFlowBackend
    backend = backend_class(spec, *networks, DeviceSettings())
    pipeline = Pipeline.with_backend(spec, load_tokenizer(), backend, DeviceSettings())
    rows = [{"after": "build", "peak_rss": _peak_rss_bytes(), "seconds": 0.0}]
    for size in sizes:
        config = GenerationConfig("a lighthouse", steps=steps, width=size, height=size, seed=0)
        pipeline.generate(config)
        rows.append(
            {
                "after": f"{size}x{size}",
                "peak_rss": _peak_rss_bytes(),
                "seconds": time.perf_counter() - began,
            }
        )
    unets = {id(v) for u in backend._unets.values() for v in u.weights}
    rows.append({"after": "unet variables", "count": len(unets)})
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 576])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--approach", choices=APPROACHES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.approach:
        _child(args.approach, args.sizes, args.steps)
        return

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"SD v1 full size, sizes {' then '.join(f'{s}x{s}' for s in args.sizes)}, "
          f"{args.steps} step(s), TensorFlow runtime on the CPU")  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    results = {}
    for approach in APPROACHES:
        command = [sys.executable, __file__, "--approach", approach, "--steps", str(args.steps)]
        command += ["--sizes", *map(str, args.sizes)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(f"{approach} failed:\n{done.stderr[-3000:]}")
        results[approach] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{'peak RSS, GB':16}" + "".join(f"{a:>12}" for a in APPROACHES))
    for index, row in enumerate(results["copies"][:-1]):
        figures = "".join(f"{results[a][index]['peak_rss'] / 1e9:12.2f}" for a in APPROACHES)
        print(f"after {row['after']:10}{figures}")
    seconds = "".join(f"{results[a][-2]['seconds']:12.0f}" for a in APPROACHES)
    print(f"{'seconds':16}{seconds}")
    counts = "".join(f"{results[a][-1]['count']:12d}" for a in APPROACHES)
    print(f"{'U-Net variables':16}{counts}")


if __name__ == "__main__":
    main()

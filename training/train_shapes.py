"""Train ``--model shapes``: a latent diffusion model of coloured shapes, on 2 CPU cores.

    python training/train_shapes.py --out training/shapes-run      # about an hour

The networks are sdgen's own ``tiny`` layouts (SD 1.x's text encoder, U-Net and VAE
decoder at small widths), so the result is an ordinary SD 1.x-style model that every
sampler, runtime and feature of sdgen runs. Three stages, each from ``--seed``:

1. **Data.** Scenes of :mod:`sdgen.shapes.scenes` (a shape of a colour at a position on
   a plain background, minus the held-out colour and shape pairs) rendered at 64 px.
2. **VAE.** An encoder written here (SD's encoder shape at small widths: it is not part
   of the model) and sdgen's decoder, trained as SD's VAE is (reconstruction and a small
   KL term), then the latent scale folded into the decoder's first convolution so the
   latents the U-Net sees have unit variance, as SD's scaling gives.
3. **Diffusion.** The text encoder and U-Net together, on SD's noise schedule (scaled
   linear betas, 1000 steps, epsilon prediction), with 10% of prompts dropped to ""
   for classifier-free guidance, and an exponential moving average of the weights.

The result is written as an SD 1.x single file (LDM key names, float16 safetensors,
through the converter's own name index), the format users import, so ``sdgen import``
reads it and sdgen's model store converts it on first use. The run's figures go to
``OUT/report.json``.
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

import numpy as np

SIZE = 64
LATENT = SIZE // 8


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- data ------------------------------------------------------------------------------------


def render_set(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` renders of training scenes, as floats in [-1, 1], and their prompts."""
    from sdgen.shapes.scenes import render, training_scenes

    rng = np.random.default_rng(seed)
    scenes = training_scenes()
    images = np.empty((count, SIZE, SIZE, 3), np.float32)
    prompts = []
    for i in range(count):
        scene = scenes[rng.integers(len(scenes))]
        images[i] = render(scene, SIZE, rng).astype(np.float32) / 127.5 - 1.0
        prompts.append(scene.prompt)
    return images, prompts


# -- the VAE ---------------------------------------------------------------------------------


def build_encoder(widths):
    """SD's VAE encoder at ``widths`` (the decoder's, reversed): three 2x downsamplings
    to the latent grid, a middle block with attention, then mean and log-variance."""
    import keras

    from sdgen.networks import layers

    channels = list(reversed(widths.decoder))
    stack = [keras.layers.Input((SIZE, SIZE, 3)), layers.PaddedConv2D(channels[0], 3, padding=1)]
    for level, width in enumerate(channels):
        stack += [layers.ResnetBlock(width), layers.ResnetBlock(width)]
        if level < 3:
            stack.append(layers.PaddedConv2D(width, 3, strides=2, padding=1))
    mid = channels[-1]
    stack += [
        layers.ResnetBlock(mid),
        layers.AttentionBlock(mid),
        layers.ResnetBlock(mid),
        layers.group_norm(layers.SD_NORM_EPSILON),
        keras.layers.Activation("swish"),
        layers.PaddedConv2D(8, 3, padding=1),
        layers.PaddedConv2D(8, 1),
    ]
    return keras.Sequential(stack, name="encoder")


def train_vae(images, steps, batch, seed, kl_weight=1e-4):
    """The encoder and decoder, trained to reconstruct ``images``; returns both and the
    final figures."""
    import keras
    import tensorflow as tf

    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of

    spec = get_model_spec("tiny")
    family = family_of(spec)
    encoder = build_encoder(family.widths)
    decoder = family.build("decoder", spec, SIZE, SIZE)
    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    variables = encoder.trainable_variables + decoder.trainable_variables
    rng = np.random.default_rng(seed)

    @tf.function
    def step(x, noise):
        with tf.GradientTape() as tape:
            moments = encoder(x, training=True)
            mean, logvar = moments[..., :4], tf.clip_by_value(moments[..., 4:], -20.0, 10.0)
            z = mean + tf.exp(0.5 * logvar) * noise
            out = decoder(z, training=True)
            recon = tf.reduce_mean(tf.abs(out - x)) + tf.reduce_mean(tf.square(out - x))
            kl = 0.5 * tf.reduce_mean(tf.square(mean) + tf.exp(logvar) - 1.0 - logvar)
            loss = recon + kl_weight * kl
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return recon, kl

    began = time.perf_counter()
    for i in range(steps):
        index = rng.integers(0, len(images), batch)
        noise = rng.standard_normal((batch, LATENT, LATENT, 4)).astype(np.float32)
        recon, kl = step(images[index], noise)
        if i % 250 == 0 or i == steps - 1:
            log(f"vae step {i}/{steps}: recon {float(recon):.4f}, kl {float(kl):.3f}")
    return encoder, decoder, {"vae_seconds": time.perf_counter() - began}


def encode_all(encoder, images, batch=256) -> np.ndarray:
    chunks = range(0, len(images), batch)
    return np.concatenate([np.asarray(encoder(images[i : i + batch]))[..., :4] for i in chunks])


def fold_latent_scale(encoder, decoder, latents) -> float:
    """Scale the latents to unit standard deviation, as SD's 0.18215 does for its VAE:
    the encoder's mean output is multiplied by ``s`` and the decoder's first convolution
    (after its fixed 1/0.18215 rescaling) divided by it, so the pair decodes the same."""
    scale = float(1.0 / latents.std())
    head = encoder.layers[-1]  # the 1x1 convolution giving mean and log-variance
    kernel, bias = (np.asarray(w) for w in head.get_weights())
    kernel[..., :4] *= scale
    bias[:4] *= scale
    head.set_weights([kernel, bias])
    first = next(layer for layer in decoder.layers if layer.get_weights())
    kernel, bias = (np.asarray(w) for w in first.get_weights())
    first.set_weights([kernel / scale, bias])
    return scale


# -- the diffusion model ---------------------------------------------------------------------


def token_rows(prompts: list[str], pad: int) -> np.ndarray:
    """(N, 77) token ids as sdgen's pipeline makes them for a plain prompt: start, the
    prompt's tokens, end, then ``pad`` (the family's pad token)."""
    from sdgen.text.tokenizer import MAX_PROMPT_LENGTH, load_tokenizer

    tokenizer = load_tokenizer()
    rows = np.full((len(prompts), MAX_PROMPT_LENGTH), pad, np.int32)
    cache = {}
    for i, prompt in enumerate(prompts):
        if prompt not in cache:
            cache[prompt] = tokenizer.encode(prompt)[:MAX_PROMPT_LENGTH]
        rows[i, : len(cache[prompt])] = cache[prompt]
    return rows


def train_diffusion(latents, prompts, steps, batch, seed, dropout=0.1, ema_decay=0.999):
    """The text encoder and U-Net, trained together to predict the noise; returns the
    EMA weights' networks and figures."""
    import keras
    import tensorflow as tf

    from sdgen.catalog import get_model_spec
    from sdgen.families import family_of
    from sdgen.pipeline.stages import timestep_embedding
    from sdgen.samplers.schedule import sd_alphas_cumprod

    spec = get_model_spec("tiny")
    family = family_of(spec)
    text = family.build("text_encoder", spec, SIZE, SIZE)
    unet = family.build("diffusion_model", spec, SIZE, SIZE)
    last = unet.layers[-1]  # start by predicting zero noise: a common, stabler start
    last.set_weights([np.zeros_like(w) for w in last.get_weights()])
    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.CosineDecay(
        5e-4, steps, alpha=0.1, warmup_target=None, warmup_steps=0
    )
    optimizer = keras.optimizers.Adam(schedule)
    variables = text.trainable_variables + unet.trainable_variables
    ema = [tf.Variable(v, trainable=False) for v in variables]
    tokens = token_rows(prompts, family.pad_token)
    empty = token_rows([""], family.pad_token)[0]
    positions = tf.constant(np.tile(np.arange(tokens.shape[1], dtype=np.int32), (batch, 1)))
    alphas = sd_alphas_cumprod().astype(np.float32)
    dim = family.timestep_embedding_dim
    embeddings = np.stack([timestep_embedding(t, dim) for t in range(1000)])
    rng = np.random.default_rng(seed)

    @tf.function
    def step(x0, noise, t_emb, a, ids):
        with tf.GradientTape() as tape:
            context = text([ids, positions], training=True)
            noisy = tf.sqrt(a) * x0 + tf.sqrt(1.0 - a) * noise
            predicted = unet([noisy, t_emb, context], training=True)
            loss = tf.reduce_mean(tf.square(predicted - noise))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        for average, value in zip(ema, variables, strict=True):
            average.assign(ema_decay * average + (1.0 - ema_decay) * value)
        return loss

    began, losses = time.perf_counter(), []
    for i in range(steps):
        index = rng.integers(0, len(latents), batch)
        t = rng.integers(0, 1000, batch)
        ids = tokens[index].copy()
        ids[rng.random(batch) < dropout] = empty
        noise = rng.standard_normal((batch, LATENT, LATENT, 4)).astype(np.float32)
        a = alphas[t].reshape(-1, 1, 1, 1)
        losses.append(float(step(latents[index], noise, embeddings[t], a, ids)))
        if i % 500 == 0 or i == steps - 1:
            log(f"diffusion step {i}/{steps}: loss {np.mean(losses[-500:]):.4f}")
    for variable, average in zip(variables, ema, strict=True):
        variable.assign(average)
    figures = {
        "diffusion_seconds": time.perf_counter() - began,
        "final_loss": float(np.mean(losses[-1000:])),
    }
    return text, unet, figures


# -- the checkpoint --------------------------------------------------------------------------


def to_checkpoint_layout(value: np.ndarray, kind: str) -> np.ndarray:
    """A Keras weight in the layout a PyTorch checkpoint stores it."""
    if kind == "dense" and value.ndim == 2:
        return value.T
    if kind == "conv" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value


def write_checkpoint(networks: dict, path: Path) -> None:
    """The three networks as an SD 1.x single file: every tensor named as the converter's
    name index reads it back, stored as float16."""
    from safetensors.numpy import save_file

    from sdgen.convert import name_index

    weights = {role: [np.asarray(w) for w in net.weights] for role, net in networks.items()}
    tensors = {}
    for key, slots in name_index("ldm", "tiny").items():
        (slot,) = slots
        value = to_checkpoint_layout(weights[slot.role][slot.position], slot.param.kind)
        tensors[key] = np.ascontiguousarray(value.astype(np.float16))
    save_file(tensors, str(path), metadata={"format": "pt", "sdgen_model": "shapes"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the run's files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=12000, help="training renders")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20000, help="diffusion steps")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    began = time.perf_counter()
    log(f"rendering {args.images} images ...")
    images, prompts = render_set(args.images, args.seed)
    encoder, decoder, figures = train_vae(images, args.vae_steps, args.vae_batch, args.seed)
    latents = encode_all(encoder, images)
    figures["latent_scale"] = fold_latent_scale(encoder, decoder, latents)
    latents = encode_all(encoder, images)
    figures["latent_std"] = float(latents.std())
    log(f"latents scaled by {figures['latent_scale']:.4f}: std {figures['latent_std']:.3f}")
    text, unet, more = train_diffusion(latents, prompts, args.steps, args.batch, args.seed + 1)
    figures.update(more)
    path = args.out / "shapes.safetensors"
    write_checkpoint({"text_encoder": text, "diffusion_model": unet, "decoder": decoder}, path)
    encoder.save_weights(str(args.out / "shapes-vae-encoder.weights.h5"))
    from sdgen.weights import sha256_of

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "commit": commit,
        "cpu": cpu_name(),
        "seed": args.seed,
        "args": {k: str(v) for k, v in vars(args).items()},
        "total_seconds": time.perf_counter() - began,
        "checkpoint_sha256": sha256_of(path),
        "checkpoint_bytes": path.stat().st_size,
        **figures,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {path} ({report['checkpoint_bytes']} bytes), sha256 {report['checkpoint_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

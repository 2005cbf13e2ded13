"""How many images fit in memory at once: ``--batch-size auto`` on a GPU.

The estimate is simple on purpose and leans towards smaller batches. When the U-Net runs
out of memory anyway, the pipeline halves the batch and denoises the same images again
(``Pipeline.generate_iter``), so a guess that was too big costs one retry, not the run.
Measured on a CPU with TensorFlow in float32 (``/proc`` peak RSS around one U-Net call of
SD 1 at 512 px), a row took 0.67-0.79 GB where the estimate below says 1.68 GB; on a GPU
the allocator, cuDNN and XLA add their own share, which no GPU here has measured.

What it counts, per U-Net row (an image under classifier-free guidance is two rows):
``ATTENTION_TENSORS`` attention-score tensors of the first (largest) level, heads x N x N
for N latent pixels, and ``ACTIVATIONS_PER_LATENT_PIXEL`` activation elements per latent
pixel for the convolutions and the skip connections the up path keeps. The decoder is
run one image at a time, so its share is reserved once.
"""

from __future__ import annotations

import os
import shutil
import subprocess

#: The most images ``auto`` puts in one batch, so that a failure loses little work.
MAX_AUTO_BATCH = 16
#: Left free for the CUDA context, cuDNN workspaces and allocator fragmentation.
HEADROOM_BYTES = 1 << 30
ATTENTION_TENSORS = 3
ACTIVATIONS_PER_LATENT_PIXEL = 4000
#: The decoder's live activations per output pixel: 128-512 channels at full size.
DECODER_ELEMENTS_PER_PIXEL = 1024


def unet_row_bytes(family, height: int, width: int, element_bytes: int) -> int:
    """Activation memory of one U-Net row of ``family`` (a ``Family``) at ``height`` x
    ``width`` pixels; the attention scores of its first level dominate (SD 1.x: 8 heads,
    SD 2.x: 5 of 64 channels)."""
    pixels = (height // 8) * (width // 8)
    scores = ATTENTION_TENSORS * family.first_level_heads * pixels * pixels
    return element_bytes * (scores + ACTIVATIONS_PER_LATENT_PIXEL * pixels)


def decoder_bytes(height: int, width: int, element_bytes: int) -> int:
    """Activation memory of decoding one image."""
    return element_bytes * DECODER_ELEMENTS_PER_PIXEL * height * width


def fit_batch(free: int, reserved: int, per_image: int, cap: int = MAX_AUTO_BATCH) -> int:
    """How many images of ``per_image`` bytes fit in ``free`` less ``reserved``; at
    least 1 (a single image that does not fit fails with a clear out-of-memory error)."""
    room = free - reserved - HEADROOM_BYTES
    return max(1, min(cap, room // per_image))


def gpu_free_bytes(run=subprocess.run) -> int | None:
    """Free memory of the first visible GPU, asked of ``nvidia-smi`` before TensorFlow
    takes any; None where it cannot tell (no ``nvidia-smi``, or an answer it cannot read)."""
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible:
        command += ["-i", visible]
    try:
        answer = run(command, capture_output=True, text=True, timeout=10, check=True).stdout
        return int(answer.split()[0]) * (1 << 20)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


__all__ = ["MAX_AUTO_BATCH", "fit_batch", "gpu_free_bytes", "unet_row_bytes"]

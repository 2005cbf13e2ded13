"""Images that requests start from: init images and masks read, resized, blurred and
composited, as plain NumPy/Pillow operations with no network in them (importing this
package never imports TensorFlow).

- :mod:`~sdgen.images.source`: ``ImageInput``, an image given by path, array or PIL
  image, read once (EXIF orientation, transparency on white, 16-bit, bombs refused),
  with its sha256; ``mask_array`` reads a mask from it.
- :mod:`~sdgen.images.resize`: ``resize_image`` / ``resize_mask`` by A1111's three
  modes (``crop``, ``fit``, ``stretch``), ``resize_note`` saying what was done, and
  ``size_for_image``, the multiple of 64 an image's own size rounds to.
- :mod:`~sdgen.images.mask`: ``blur_mask`` (A1111's mask blur), ``latent_mask`` (the
  mask on the latent grid, as diffusers makes it), ``masked_region`` and ``crop``
  (A1111's "only masked"), ``is_empty``.
- :mod:`~sdgen.images.composite`: ``paste_back`` / ``paste_region``, the original laid
  back over an inpainted result, and ``overlay_mask``, the mask A1111 lays it with.
- :mod:`~sdgen.images.outpaint`: ``outpaint_canvas``, the padded canvas and its mask.
"""

from .composite import overlay_mask, paste_back, paste_region
from .mask import blur_mask, crop, is_empty, latent_mask, masked_region
from .outpaint import outpaint_canvas
from .resize import placement, resize_image, resize_mask, resize_note, size_for_image
from .source import ImageInput, ImageInputError, mask_array

__all__ = [
    "ImageInput",
    "ImageInputError",
    "blur_mask",
    "crop",
    "is_empty",
    "latent_mask",
    "mask_array",
    "masked_region",
    "outpaint_canvas",
    "overlay_mask",
    "paste_back",
    "paste_region",
    "placement",
    "resize_image",
    "resize_mask",
    "resize_note",
    "size_for_image",
]

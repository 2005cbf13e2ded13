"""Stable Diffusion's networks in Keras 3, independent of any particular model.

- ``layers``: the layer classes, weight for weight as keras_cv lays them out.
- ``layouts``: the text encoder, U-Net and VAE decoder built from them at any widths,
  context length and number of input channels.
- ``h5``: keras_cv's legacy HDF5 weight files.

Which widths a model has, and where its weights come from, is its family's business
(:mod:`sdgen.families`).
"""

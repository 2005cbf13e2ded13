"""Writing results to an output folder, each file whole or not at all.

- ``files``: atomic writes (temporary file, then link or rename into place), checks that
  a folder can be written, and file-name-safe slugs.
- ``png``: PNGs with AUTOMATIC1111 infotext, written and parsed back.
- ``manifest``: the JSON Lines manifest, one file per shard, merged on read.
- ``grid``: one picture tiling every image of a run.
- ``contact_sheet``: ``index.html``, thumbnails and parameters of every image, kept up to
  date as images are saved.
"""

"""Writing results to an output folder, each file whole or not at all.

- ``files``: atomic writes (temporary file, then link or rename into place) that leave
  the modes the umask asks for, checks that a folder can be written, and file-name-safe
  slugs.
- ``png``: AUTOMATIC1111 infotext, formatted and parsed back (and ``save_png``, which
  writes every format).
- ``formats``: PNG, JPEG and WebP files, the infotext where A1111 puts it in each.
- ``manifest``: the JSON Lines manifest, one file per shard, merged on read.
- ``grid``: one picture tiling every image of a run.
- ``contact_sheet``: ``index.html``, thumbnails and parameters of every image and links to
  the grids, kept up to date as images are saved.
"""

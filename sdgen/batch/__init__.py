"""Batches: from prompts-file lines to saved images, resumable and spread over shards.

- ``prompts_file``: read a prompts file (plain, AUTOMATIC1111 ``--tag`` or JSON lines).
- ``work``: the units as data: ``Job``, ``OutputOptions``, ``PlannedImage``, ``Plan``,
  ``Failure``.
- ``naming``: ``--name-template`` fields and each image's file name.
- ``checks``: what a job is refused for when it is read, and the embeddings and LoRAs
  its prompts use (a job's LoRAs are found and read by ``sdgen.adapters.lora.uses``).
- ``identity``: an image's manifest fields, resume identity and infotext, assembled from
  each feature's contribution.
- ``resume``: what an earlier run made: its seeds, finished files and lost lines.
- ``plan``: seeds, names and status of every image, before any model is loaded.
- ``run``: generate what is left, save each image, carry on past failures, the grid.
- ``executors``: where images are made (this process, Ray actors), and which loaded
  models are kept.
- ``progress``: the step progress bar or log lines on stderr.
"""

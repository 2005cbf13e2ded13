"""Adapters: files that change what a loaded model does without being a model.

- ``textual_inversion``: textual-inversion embeddings (A1111 ``.pt``, ``.safetensors``,
  diffusers ``learned_embeds``), their folder, and finding their names in a prompt.
- ``lora``: LoRA and LyCORIS files (kohya, LoCon, diffusers/PEFT, LoHa, LoKr), their
  folder, and the weight changes a set of them makes (merged by the runtimes).

Nothing here imports TensorFlow or torch.
"""

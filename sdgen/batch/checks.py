"""The checks a job gets when it is read, before any weights load: what its model's
text encoder cannot take, and the embeddings and LoRAs its prompts use (see
:func:`check_text`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..catalog import get_model_spec
from .work import Job


def check_text(job: Job, sources) -> Job:
    """``job`` with the embeddings and LoRAs its prompts use, after refusing, before any
    weights load, what its model's text encoder cannot take: an unknown model, a clip
    skip out of range, an embedding that cannot be read or is of another width, a LoRA
    that is missing or cannot be used. ``sources``: a ``TextSources``."""
    from ..families import family_of
    from ..networks.text_states import check_clip_skip
    from ..text.conditioning import TextOptions, prompt_chunks
    from ..text.tokenizer import load_tokenizer

    family = family_of(get_model_spec(job.model))
    config = job.config
    check_clip_skip(config.clip_skip, family.widths.text_layers)
    chunks = prompt_chunks(
        load_tokenizer(),
        config.negative_prompt,
        config.prompt,
        TextOptions(config.emphasis, config.clip_skip),
        sources.embeddings,
        family.widths.text,
    )
    used = {name: e.sha256 for part in chunks for name, e in part.embeddings.items()}
    loras = sources.loras.uses(config, family)
    return replace(job, embeddings=tuple(sorted(used.items())), loras=loras)


@dataclass(frozen=True)
class TextSources:
    """Where prompts find what they name: textual-inversion embeddings (an
    ``EmbeddingLibrary``) and LoRAs (a ``sdgen.adapters.lora.uses.LoraFinder``)."""

    embeddings: object
    loras: object


__all__ = ["TextSources", "check_text"]

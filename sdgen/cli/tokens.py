"""``sdgen tokens``: how CLIP sees a prompt, without loading a model or TensorFlow.

The prompt goes through the same text stage a generation uses (``sdgen.text.chunks``):
A1111's emphasis syntax, 75-token chunks with the comma backtrack and ``BREAK``, and
textual-inversion embeddings from the embeddings folder. What comes out is the count in
A1111's ``n/75`` form, each chunk's tokens with their weights, and the embeddings used.
Only the model's family record is read (its text encoder's width, which embeddings must
match, and its pad token), so this answers at once and works without weights.
"""

from __future__ import annotations

import json
import textwrap

import click

from ..adapters.textual_inversion import EmbeddingLibrary
from ..catalog import get_model_spec
from ..config import emphasis_mode
from ..families import family_of
from ..text.chunks import CHUNK_TOKENS, PromptChunks, chunk_prompt
from ..text.tokenizer import load_tokenizer
from .options import embeddings_option, emphasis_option

#: Width of the token lines of the human output.
_LINE_WIDTH = 100


@click.command("tokens")
@click.argument("prompt")
@click.option("--negative-prompt", help="Also show how this negative prompt is cut.")
@click.option(
    "--model",
    default="sd-v1.4",
    show_default=True,
    help="Whose text encoder: its width (which embeddings must match) and padding.",
)
@emphasis_option()
@embeddings_option("Folder of textual-inversion embeddings [$SDGEN_HOME/embeddings].")
@click.option("--json", "as_json", is_flag=True, help="Print the same as JSON.")
def tokens_command(prompt, negative_prompt, model, emphasis, embeddings_dir, as_json):
    """Show how CLIP sees PROMPT: the A1111 token count (n/75), each 75-token chunk with
    its tokens and their weights, and the embeddings used. Loads no model.

    \b
      sdgen tokens "(masterpiece:1.2), a castle at dusk BREAK fog"
      sdgen tokens "a cat" --negative-prompt "EasyNegative, blurry" --json
    """
    mode = emphasis_mode(emphasis)
    spec = get_model_spec(model)
    family = family_of(spec)
    library = EmbeddingLibrary(embeddings_dir)
    texts = [("prompt", prompt)]
    if negative_prompt is not None:
        texts.append(("negative prompt", negative_prompt))
    tokenizer = load_tokenizer()
    # every text is cut before anything is printed, so a bad embedding stops the command
    # with its one-line error and no half-written report
    reports = [
        prompt_report(
            tokenizer, text, chunk_prompt(tokenizer, text, mode, library, family.widths.text)
        )
        for _, text in texts
    ]
    if as_json:
        data = {"model": spec.name, "family": family.name, "emphasis": mode}
        data["pad_token"] = family.pad_token
        data["prompt"] = reports[0].pop("text")
        data.update(reports[0])
        if len(reports) > 1:
            data["negative_prompt"] = reports[1]
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"model {spec.name} ({family.name}, text encoder {family.widths.text} wide, padded "
        f"with token {family.pad_token}), emphasis {mode}"
    )
    for (what, _), report in zip(texts, reports, strict=True):
        click.echo()
        for line in render_report(what, report):
            click.echo(line)


def prompt_report(tokenizer, text: str, chunks: PromptChunks) -> dict:
    """``text`` cut into ``chunks``, as data: ``text``, ``token_count``, ``counted``
    (``n/75``), ``context_length`` (77 per chunk), ``chunks`` (each with ``first`` and
    ``last``, the 1-based numbers of the prompt's tokens it holds, ``padding``, and its
    ``tokens``: ``index``, ``id``, ``text``, ``weight``, ``embedding`` name or None and
    ``vector``, the embedding's vector a slot holds) and ``embeddings`` (``name``,
    ``vectors``, ``width``, ``sha256``, ``shorthash``, ``path``)."""
    rows, index = [], 0
    for chunk in chunks.chunks:
        tokens = []
        for slot in chunk:
            index += 1
            token = {"index": index, "id": slot.token, "weight": round(slot.weight, 6)}
            if slot.embedding is None:
                token.update(text=tokenizer.token_text(slot.token), embedding=None, vector=None)
            else:
                token.update(text=None, embedding=slot.embedding, vector=slot.vector + 1)
            tokens.append(token)
        first = index - len(chunk) + 1
        rows.append(
            {
                "first": first if chunk else None,
                "last": index if chunk else None,
                "padding": CHUNK_TOKENS - len(chunk),
                "tokens": tokens,
            }
        )
    embeddings = [
        {
            "name": name,
            "vectors": int(embedding.vectors.shape[0]),
            "width": embedding.width,
            "sha256": embedding.sha256,
            "shorthash": embedding.shorthash,
            "path": str(embedding.path),
        }
        for name, embedding in chunks.embeddings.items()
    ]
    return {
        "text": text,
        "token_count": chunks.token_count,
        "counted": chunks.counted,
        "context_length": chunks.context_length,
        "chunks": rows,
        "embeddings": embeddings,
    }


def render_report(what: str, report: dict) -> list[str]:
    """The lines ``sdgen tokens`` prints for one ``prompt_report``: the count, then each
    chunk with the range of token numbers it holds and its words, a weight other than 1
    after the word (``masterpiece(1.2)``), the tokens of a word split by BPE joined with
    ``|`` (``photo|realistic``), and each embedding as ``<NAME: n vectors>``."""
    count = len(report["chunks"])
    lines = [
        f"{what.capitalize()}: {report['counted']} tokens in {count} "
        f"chunk{'s' if count > 1 else ''} (a context of {report['context_length']})"
    ]
    for number, chunk in enumerate(report["chunks"], start=1):
        if chunk["tokens"]:
            span = (
                f"token {chunk['first']}"
                if chunk["first"] == chunk["last"]
                else f"tokens {chunk['first']}-{chunk['last']}"
            )
            held = len(chunk["tokens"])
            where = f"{span}, {held} of {CHUNK_TOKENS}" if chunk["padding"] else span
        else:
            where = "empty"
        lines.append(f"  Chunk {number} ({where}):")
        words = _words(chunk["tokens"])
        if words:
            lines.extend(
                textwrap.wrap(
                    " ".join(words),
                    _LINE_WIDTH,
                    initial_indent="    ",
                    subsequent_indent="    ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
    if report["embeddings"]:
        lines.append("  Embeddings:")
        for embedding in report["embeddings"]:
            vectors = embedding["vectors"]
            lines.append(
                f"    {embedding['name']}: {vectors} vector{'s' if vectors > 1 else ''}, "
                f"shorthash {embedding['shorthash']}, {embedding['path']}"
            )
    return lines


def _words(tokens: list[dict]) -> list[str]:
    """A chunk's tokens as words: a word ends at a token that ends one in CLIP's
    vocabulary (its text ends in a space); an embedding's slots make one word."""
    words: list[str] = []
    pieces: list[str] = []
    weight = 1.0
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token["embedding"] is not None:
            if pieces:  # a word cut short (it cannot be, but never lose tokens)
                words.append(_weighted("|".join(pieces), weight))
                pieces = []
            end = position
            while (
                end < len(tokens)
                and tokens[end]["embedding"] == token["embedding"]
                and tokens[end]["weight"] == token["weight"]
            ):
                end += 1
            vectors = end - position
            label = f"<{token['embedding']}: {vectors} vector{'s' if vectors > 1 else ''}>"
            words.append(_weighted(label, token["weight"]))
            position = end
            continue
        pieces.append(token["text"].rstrip(" "))
        weight = token["weight"]
        if token["text"].endswith(" ") or position + 1 == len(tokens):
            words.append(_weighted("|".join(pieces), weight))
            pieces = []
        position += 1
    return words


def _weighted(word: str, weight: float) -> str:
    """``word`` with its weight in brackets when it is not 1, rounded to 4 places."""
    if weight == 1.0:
        return word
    return f"{word}({round(weight, 4):g})"

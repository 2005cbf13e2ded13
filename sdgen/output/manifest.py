"""The JSON Lines manifest of an output folder: one record per image, one file per shard.

An unsharded run appends to ``manifest.jsonl``; shard K of N appends to
``manifest.shard-K-of-N.jsonl`` of its own, so concurrent shard processes never append to
one file (appends are not atomic across NFS clients). ``read_manifest`` merges them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OutputError

MANIFEST_NAME = "manifest.jsonl"


#: Manifests of shard runs: ``manifest.shard-K-of-N.jsonl``.
SHARD_MANIFEST_GLOB = "manifest.shard-*-of-*.jsonl"


def manifest_name(shard: tuple[int, int] = (1, 1)) -> str:
    """The manifest file a run of shard ``(K, N)`` appends to: ``manifest.jsonl`` when
    ``N`` is 1, else ``manifest.shard-K-of-N.jsonl``."""
    k, n = shard
    return MANIFEST_NAME if n == 1 else f"manifest.shard-{k}-of-{n}.jsonl"


def manifest_paths(folder: Path) -> list[Path]:
    """Every manifest file of ``folder`` that exists: ``manifest.jsonl`` first, then the
    shards' in name order."""
    folder = Path(folder)
    paths = [folder / MANIFEST_NAME] if (folder / MANIFEST_NAME).is_file() else []
    return paths + sorted(p for p in folder.glob(SHARD_MANIFEST_GLOB) if p.is_file())


def append_manifest(folder: Path, record: dict, shard: tuple[int, int] = (1, 1)) -> None:
    """Append ``record`` as one JSON line to the manifest of ``shard`` in ``folder``.

    The line goes out in a single ``write`` on a file opened for appending and is synced,
    so an interrupted run never leaves a torn line; each shard has a file of its own, so
    concurrent shards (on other machines too) never append to the same file. A new
    manifest gets ``0666`` less the umask, as every file sdgen writes.
    """
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    path = Path(folder) / manifest_name(shard)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a line torn by a crash, never extend it
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def read_manifest(folder: Path) -> list[dict]:
    """Every record of every manifest of ``folder`` (see ``manifest_paths``), oldest
    first by their ``created`` time (records of one file keep their order); empty if
    there is none.

    A line that is not a JSON object (a torn write from a machine that lost power) is
    skipped: its image is simply made again by a resumed run.
    """
    records = []
    for path in manifest_paths(folder):
        records += read_records(path, whole_lines_only=False)[0]
    # a stable sort: the order of one file is kept, and files interleave by time
    return sorted(records, key=lambda record: str(record.get("created") or ""))


def read_records(
    path: Path, offset: int = 0, whole_lines_only: bool = True
) -> tuple[list[dict], int]:
    """The records of manifest ``path`` from byte ``offset`` on, and the offset after the
    last line read. With ``whole_lines_only`` a last line without its newline (still
    being written by another process) is left for the next call."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1 if whole_lines_only else len(data)
    records = []
    for line in data[:end].decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end
